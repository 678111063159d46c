"""What one fast-learning setting stores, and what it disturbs, measured on real chunks (issue 15, part 2).

For a setting (lr, steps, draws, rehearsal, blocks, the reverse rule, the event rule) a fresh per-env memory
(`BatchedTempLoRA`, one env, seeded) learns the chunks of one episode in order, teacher-forced (the real
chunks, as `experiments.evaluate`'s teacher mode feeds them). The fast objective (null action, context
clean) is scored on a fixed evaluation set: one draw per sampler timestep with noise from a fixed seed per
chunk, the same for every setting, so numbers compare across settings. Reported, as relative loss changes:

- ``chunk``: per update, loss on the chunk just learned after the update vs just before it (mean over updates);
- ``episode``: after the episode, loss on every learned chunk with Θ vs with Φ alone (what is retained);
- ``other``: after the episode, loss on chunks of OTHER episodes with Θ vs Φ alone (interference).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..chunk import Chunk
from ..diffusion import diffusion_loss
from .batched_lora import BatchedTempLoRA
from .rule import fast_timesteps, given_frames


@dataclass
class Setting:
    lr: float
    steps: int
    draws: int
    rehearsal: int = 0
    blocks: tuple[str, ...] = ()
    reverse: bool = False  # TempLoRAConfig.reverse: each step also learns the chunk played backwards
    reverse_phases: int = 0  # TempLoRAConfig.reverse_phases: and the windows 1..N frames earlier, backwards
    targets: tuple[str, ...] = ()  # TempLoRAConfig.target_modules (empty: the model's)
    rank: int = 0  # TempLoRAConfig.rank (0: the model's; alpha stays the model's)
    timesteps: int | str | None = None  # TempLoRAConfig.timesteps: where fast steps draw t (None: the model's)
    write: str = "every"  # TempLoRAConfig.write: "events" learns only the chunks its gate picks
    event_top: int = 0  # TempLoRAConfig.event_top: the rank gate (the K largest changes so far)
    event_slots: int = 0  # TempLoRAConfig.event_slots: Θ's rank split into per-event slots
    replay: bool = False  # TempLoRAConfig.replay: after an event, the earlier events' windows again
    slots_alone: bool = False  # TempLoRAConfig.slots_alone: a write's forward with its own slot alone
    event_change: str = "mean"  # TempLoRAConfig.event_change: what the gate ranks ("pixels": the share changed)

    @classmethod
    def parse(cls, text: str) -> "Setting":
        """``lr,steps,draws[,rehearsal[,blocks]][,reverse][,phases=N][,targets=A+B][,rank=R][,timesteps=T][,events]
        [,top=K][,slots=S][,replay][,alone][,change=C]``, e.g.
        ``1e-3,2,4,0``,
        ``1e-3,1,4,0,up_blocks`` (blocks: UNet block prefixes joined by '+', Θ only there; default everywhere),
        ``3e-3,4,1,0,up_blocks,reverse,phases=3`` (session 40's recall rule) or
        ``5e-4,1,1,0,up_blocks,targets=to_q+to_k+to_v+to_out.0,rank=16`` (Θ's layer kinds and rank); T is
        ``sampler``, ``uniform`` or a number of DDIM passes (`TempLoRAConfig.timesteps`). The evaluation draws stay
        at the sampler's timesteps in every setting: the loss where generation happens. ``events``, ``top=K``,
        ``slots=S``, ``replay``, ``alone``: the event rule (`TempLoRAConfig.write="events"`, ``event_top``,
        ``event_slots``, ``replay``, ``slots_alone``; ``change=pixels``: ``event_change``), e.g. session 63's
        ``3e-3,4,4,0,up_blocks,reverse,events,top=2,slots=4``."""
        parts = text.split(",")
        keys = ("phases=", "targets=", "rank=", "timesteps=", "top=", "slots=", "change=")
        flags = [p for p in parts if p in ("reverse", "events", "replay", "alone") or p.startswith(keys)]
        parts = [p for p in parts if p not in flags]
        if len(parts) not in (3, 4, 5):
            raise ValueError(f"a setting is lr,steps,draws[,rehearsal[,blocks]][,reverse][,phases=N][,targets=A+B]"
                             f"[,rank=R][,timesteps=T][,events][,top=K][,slots=S][,replay][,alone][,change=C], "
                             f"got {text!r}")
        blocks = tuple(b for b in parts[4].split("+") if b) if len(parts) == 5 else ()
        value = {key: [p.split("=", 1)[1] for p in flags if p.startswith(key)] for key in keys}
        targets = tuple(t for t in value["targets="][-1].split("+") if t) if value["targets="] else ()
        t = value["timesteps="][-1] if value["timesteps="] else None
        number = {key: int(value[key][-1]) if value[key] else 0 for key in ("phases=", "rank=", "top=", "slots=")}
        return cls(float(parts[0]), int(parts[1]), int(parts[2]), int(parts[3]) if len(parts) >= 4 else 0, blocks,
                   "reverse" in flags, number["phases="], targets, number["rank="], int(t) if t and t.isdigit() else t,
                   "events" if "events" in flags else "every", number["top="], number["slots="], "replay" in flags,
                   "alone" in flags, value["change="][-1] if value["change="] else "mean")


def episode_chunks(model: Any, item: dict) -> list[Chunk]:
    """The teacher-forced chunks of an `envs.data.EpisodeDataset` item, latents encoded by the model's VAE."""
    tc, tn = model.config.context_frames, model.config.new_frames
    frames = item["frames"]
    chunks = []
    with torch.no_grad():
        for c in range(item["actions"].shape[0]):
            window = frames[c * tn : c * tn + tc + tn]
            latents = model.encode_frames(window[None])
            chunks.append(Chunk(window[None, tc:], latents, tc))
    return chunks


class EvalSet:
    """Fixed (t, noise) draws per chunk: every sampler timestep once, noise seeded by the chunk's key."""

    def __init__(self, model: Any, config: Any, seed: int = 1234):
        self.model, self.config, self.seed = model, config, seed
        self.timesteps = fast_timesteps(dataclasses.replace(config, timesteps="sampler"), model)

    @torch.no_grad()
    def loss(self, chunk: Chunk, key: int, memory: BatchedTempLoRA | None = None) -> float:
        model, t = self.model, self.timesteps
        m = len(t)
        latents = chunk.latents[:1].expand(m, -1, -1, -1, -1)
        noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(self.seed + key))
        given = given_frames(self.config, m, latents.shape[2], chunk.num_context, latents.device)
        null = model.action_encoder.null(m)
        if memory is None:
            return float(diffusion_loss(model.unet, model.scheduler, latents, given, null, noise, t).mean())
        with memory.applied([0]):
            return float(diffusion_loss(model.unet, model.scheduler, latents, given, null, noise, t).mean())

    @torch.no_grad()
    def per_t(self, chunk: Chunk, key: int) -> list[float]:
        """Φ's loss at each sampler timestep (the profile the "expected" rollback compares against)."""
        model, t = self.model, self.timesteps
        m = len(t)
        latents = chunk.latents[:1].expand(m, -1, -1, -1, -1)
        noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(self.seed + key))
        given = given_frames(self.config, m, latents.shape[2], chunk.num_context, latents.device)
        out = diffusion_loss(model.unet, model.scheduler, latents, given, model.action_encoder.null(m), noise, t,
                             per_sample=True)
        return [float(v) for v in out]


def measure(model: Any, learned: Sequence[list[Chunk]], others: Sequence[Chunk], settings: Sequence[Setting],
            seed: int = 0, log: Any = print, later: Sequence[list[Chunk]] = ()) -> dict:
    """Rows (one per setting) of chunk / episode / other relative loss changes, plus Φ's per-t loss profile. ``later``
    (one list per learned episode): the episode's chunks after the learned ones, which Θ never saw, scored once the
    episode's updates are in (column ``later``: what the memory does to the rest of its own episode, the reopen
    among them)."""
    base_cfg = model.config.temp_lora
    ev = EvalSet(model, base_cfg)
    phi_learned = [[ev.loss(c, 1000 * e + k) for k, c in enumerate(ep)] for e, ep in enumerate(learned)]
    phi_later = [[ev.loss(c, 10**5 + 1000 * e + k) for k, c in enumerate(ep)] for e, ep in enumerate(later)]
    phi_other = [ev.loss(c, 10**6 + j) for j, c in enumerate(others)]
    profile = [ev.per_t(c, 10**6 + j) for j, c in enumerate(others)]
    rows = []
    for s in settings:
        cfg = dataclasses.replace(base_cfg, lr=s.lr, steps=s.steps, draws=s.draws, rehearsal=s.rehearsal,
                                  blocks=s.blocks, reverse=s.reverse, reverse_phases=s.reverse_phases,
                                  target_modules=s.targets or base_cfg.target_modules, rank=s.rank or base_cfg.rank,
                                  timesteps=base_cfg.timesteps if s.timesteps is None else s.timesteps,
                                  write=s.write, event_top=s.event_top, event_slots=s.event_slots, replay=s.replay,
                                  slots_alone=s.slots_alone, event_change=s.event_change)
        memory = BatchedTempLoRA(model, 1, cfg)
        chunk_rel, ep_rel, other_rel, later_rel, rollbacks, start = [], [], [], [], 0, time.perf_counter()
        update_cpu_s = []
        for e, ep in enumerate(learned):
            gen = torch.Generator().manual_seed(seed + e)
            memory.reset(generators=[gen])
            for k, c in enumerate(ep):
                before = ev.loss(c, 1000 * e + k, memory)
                cpu = time.process_time()
                [up] = memory.update(c, generators=[gen])
                update_cpu_s.append(time.process_time() - cpu)
                rollbacks += int(up.rolled_back)
                after = ev.loss(c, 1000 * e + k, memory)
                chunk_rel.append(after / before - 1)
            ep_rel += [ev.loss(c, 1000 * e + k, memory) / phi_learned[e][k] - 1 for k, c in enumerate(ep)]
            other_rel += [ev.loss(c, 10**6 + j, memory) / phi_other[j] - 1 for j, c in enumerate(others)]
            if e < len(later):
                later_rel += [ev.loss(c, 10**5 + 1000 * e + k, memory) / phi_later[e][k] - 1
                              for k, c in enumerate(later[e])]
        row = dict(lr=s.lr, steps=s.steps, draws=s.draws, rehearsal=s.rehearsal, blocks="+".join(s.blocks) or "all",
                   reverse=s.reverse, reverse_phases=s.reverse_phases,
                   targets="+".join(s.targets) or "the model's", rank=cfg.rank, timesteps=cfg.timesteps,
                   write=cfg.write, event_top=cfg.event_top, event_slots=cfg.event_slots, replay=cfg.replay,
                   slots_alone=cfg.slots_alone, event_change=cfg.event_change, update_cpu_s=_mean(update_cpu_s),
                   theta_parameters=memory.num_parameters_per_env,
                   chunk=_mean(chunk_rel), episode=_mean(ep_rel), other=_mean(other_rel),
                   other_max=max(other_rel), rollbacks=rollbacks, seconds=round(time.perf_counter() - start, 1))
        if later_rel:
            row.update(later=_mean(later_rel), later_max=max(later_rel))
        log(row)
        rows.append(row)
    return {"rows": rows, "timesteps": ev.timesteps.tolist(),
            "phi_loss_per_t": [_mean([p[i] for p in profile]) for i in range(len(ev.timesteps))]}


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / max(len(xs), 1))


def markdown(result: dict) -> str:
    later = any("later" in r for r in result["rows"])  # `measure`'s ``later`` chunks were scored
    header = ("| lr | steps | draws | rehearsal | Θ in | Θ's layers, rank (values), t | backwards | writes "
              "| learned chunk (after/before update) | episode chunks (Θ vs Φ) "
              + ("| the episode's later chunks, never learned (Θ vs Φ; max) " if later else "")
              + "| other episodes' chunks (Θ vs Φ; max) | rollbacks | CPU s per update | seconds |")
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for r in result["rows"]:
        back = (f"the chunk and {r['reverse_phases']} phases" if r.get("reverse_phases") else
                "the chunk" if r.get("reverse") else "no")
        layers = (f"{r.get('targets', '')}, {r.get('rank', '')} ({r.get('theta_parameters', 0):,}), "
                  f"{r.get('timesteps', '')}")
        writes = ("every chunk" if r.get("write", "every") == "every" else
                  f"events (top {r['event_top']})" if r.get("event_top") else "events")
        writes += f", {r['event_slots']} slots" if r.get("event_slots") else ""
        writes += ", replay" if r.get("replay") else ""
        writes += ", each slot alone" if r.get("slots_alone") else ""
        writes += ", gate on the pixels changed" if r.get("event_change") == "pixels" else ""
        lines.append(f"| {r['lr']:g} | {r['steps']} | {r['draws']} | {r['rehearsal']} | {r.get('blocks', 'all')} "
                     f"| {layers} | {back} | {writes} "
                     f"| {100 * r['chunk']:+.1f}% | {100 * r['episode']:+.1f}% "
                     + (f"| {100 * r['later']:+.1f}% ({100 * r['later_max']:+.1f}%) " if later else "")
                     + f"| {100 * r['other']:+.1f}% "
                     f"({100 * r['other_max']:+.1f}%) | {r['rollbacks']} | {r.get('update_cpu_s', float('nan')):.2f} "
                     f"| {r['seconds']} |")
    prof = ", ".join(f"{t}: {v:.3f}" for t, v in zip(result["timesteps"], result["phi_loss_per_t"]))
    lines.append("")
    lines.append(f"Φ's fast loss per sampler timestep (other chunks, mean): {prof}")
    return "\n".join(lines)
