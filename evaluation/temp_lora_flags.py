"""The ``--temp-lora-*`` flags: one per `TempLoRAConfig` field, for the CLIs that set a fast rule over a model's own
(`experiments.evaluate`, `experiments.reopen_oracle`).

One table, so that a new field is one line here and every CLI names, parses, checks and records it alike (each CLI
used to keep its own copy of the flags and their range checks). A flag left out leaves the model's value: every
default is None, and `given_temp_lora` returns only the fields given. What fields go together (``replay`` needs
``write="events"`` ...) is `TempLoRAConfig`'s to check, on the model's config with the flags over it.
"""

from __future__ import annotations

import argparse
from typing import Any


def parse_timesteps(value: str) -> str | int:
    """``--temp-lora-timesteps``: 'sampler', 'uniform' or a number of DDIM passes (>= 1)."""
    if value in ("sampler", "uniform"):
        return value
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise argparse.ArgumentTypeError(f"expected sampler, uniform or a number of passes >= 1, got {value!r}")


def parse_names(value: str) -> tuple[str, ...]:
    """``--temp-lora-blocks`` / ``--temp-lora-targets``: names joined by '+', at least one."""
    names = tuple(name for name in value.split("+") if name)
    if not names:
        raise argparse.ArgumentTypeError(f"expected names joined by '+', e.g. up_blocks or to_q+to_k, got {value!r}")
    return names


FLAG = bool  # a switch: --temp-lora-X / --no-temp-lora-X

# field: (flag name after --temp-lora-, type or choices, the values it takes (">=" or ">" a bound) or None, help)
TEMP_LORA_FLAGS: dict[str, tuple[str, Any, tuple[str, float] | None, str]] = {
    "steps": ("steps", int, (">=", 0), "fast steps per chunk"),
    "lr": ("lr", float, (">", 0), "fast learning rate"),
    "objective": ("objective", ("conditional", "joint"), None, "fast learning objective"),
    "draws": ("draws", int, (">=", 1), "(t, noise) draws per fast step"),
    "timesteps": ("timesteps", parse_timesteps, None,
                  "where fast steps draw t: sampler (the model's passes), uniform (all training timesteps), or N: the "
                  "DDIM timesteps of N passes"),
    "rehearsal": ("rehearsal", int, (">=", 0),
                  "windows of the episode so far replayed in each fast step, so that later updates do not overwrite "
                  "what an earlier chunk stored"),
    "reverse": ("reverse", FLAG, None, "each fast step also learns the chunk played backwards"),
    "forward": ("forward", FLAG, None, "with --temp-lora-reverse: --no-temp-lora-forward learns the rows backwards "
                                       "alone"),
    "reverse_phases": ("reverse-phases", int, (">=", 0),
                       "with --temp-lora-reverse: also the windows ending 1..N frames before the chunk's end, "
                       "backwards (new frames - 1 covers every phase)"),
    "reuse_sampler_pass": ("reuse-pass", FLAG, None,
                           "the fast step is scored on the sampler's first denoising pass instead of a forward of "
                           "its own"),
    "update_every": ("update-every", int, (">=", 1),
                     "Θ learns every k-th chunk of an episode, the rest only remembered for later windows (the env's "
                     "cheaper memory)"),
    "blocks": ("blocks", parse_names, None, "UNet block prefixes joined by '+' where Θ lives, e.g. up_blocks.2"),
    "target_modules": ("targets", parse_names, None,
                       "layer names joined by '+' that Θ adapts, e.g. to_q+to_k+to_v+to_out.0+proj_in+proj_out+conv1+"
                       "conv2 (the resnets' 3x3 convolutions too)"),
    "rank": ("rank", int, (">=", 1), "Θ's rank (alpha stays the model's)"),
    "write": ("write", ("every", "events"), None,
              "which chunks Θ learns: every one, or only the windows around the chunks the gate takes"),
    "event_gate": ("event-gate", float, (">", 0), "with --temp-lora-write events: the gate's ratio to the mean change"),
    "event_top": ("event-top", int, (">=", 0),
                  "with --temp-lora-write events: K > 0 makes an event a chunk whose change ranks among the K "
                  "largest so far"),
    "event_slots": ("event-slots", int, (">=", 0),
                    "with --temp-lora-write events: S > 0 splits Θ's rank into S slots, event k written into slot k "
                    "mod S alone"),
    "event_change": ("event-change", ("mean", "pixels"), None,
                     "with --temp-lora-write events: what a chunk's change is, the mean pixel difference or the "
                     "share of pixels changed by more than 48 of 255"),
    "slots_alone": ("slots-alone", FLAG, None,
                    "with --temp-lora-event-slots: each write's forward applies its own slot alone"),
    "replay": ("replay", FLAG, None,
               "with --temp-lora-write events: after an event's windows, the earlier events' again"),
    "protect": ("protect", float, (">=", 0),
                "q < 1: Θ's A kept orthogonal to the input directions holding a share q of each layer's input energy "
                "on the ordinary chunks of --ordinary (0: none)"),
}
# The fields whose flag needs more than the config: protect's bases come from episodes the CLI names (--ordinary).
NEEDS_ORDINARY = ("protect",)


def flag_name(field: str) -> str:
    return "--temp-lora-" + TEMP_LORA_FLAGS[field][0]


def add_temp_lora_flags(parser: argparse.ArgumentParser, fields=tuple(TEMP_LORA_FLAGS), scope: str = "") -> None:
    """``--temp-lora-<name>`` for each of ``fields`` (default None: the model's value); ``scope`` ends each help."""
    for field in fields:
        name, kind, _, text = TEMP_LORA_FLAGS[field]
        help_ = f"{text} (TempLoRAConfig.{field}{scope}; default: the model's)"
        if kind is FLAG:
            parser.add_argument(flag_name(field), action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif isinstance(kind, tuple):
            parser.add_argument(flag_name(field), choices=kind, default=None, help=help_)
        else:
            parser.add_argument(flag_name(field), type=kind, default=None, help=help_)


def given_temp_lora(parser: argparse.ArgumentParser, args: argparse.Namespace,
                    fields=tuple(TEMP_LORA_FLAGS)) -> dict[str, Any]:
    """The fields of ``fields`` whose flag was given, by TempLoRAConfig name; a value out of its range is the
    parser's error (exit 2, the flag named)."""
    given = {}
    for field in fields:
        value = getattr(args, flag_name(field)[2:].replace("-", "_"))
        if value is None:
            continue
        bound = TEMP_LORA_FLAGS[field][2]
        if bound is not None and not (value >= bound[1] if bound[0] == ">=" else value > bound[1]):
            parser.error(f"{flag_name(field)} must be {bound[0]} {bound[1]}")
        given[field] = value
    return given
