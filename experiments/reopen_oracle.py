"""Can Θ bring the cube back at all? Cube recall at the drawer reopen with everything before it real (issue 15).

    python -m experiments.reopen_oracle --data runs/s12/scene_eval --settings phi oracle:3e-3,20,1

Each memory episode (`memory_drawer`, `memory_drawer_locked`) is teacher-forced up to the chunk that makes the
first frame after the cube's last hidden frame in the closed drawer (its context still hides the cube), and
generated freely from there to the episode's end; the reopen frames are scored by the memory benchmark's probe
(`evaluation.memory_probe`). Settings:

- ``phi``: Φ alone;
- ``lr,steps,draws``: Θ learns every real chunk before the reopen (the teacher mode of `experiments.evaluate`);
  a trailing ``,reverse`` also learns each chunk played backwards (`TempLoRAConfig.reverse`), ``,backward`` that
  alone (``forward`` False: no forward rows), ``,reverse,phases=N``
  also the windows ending 1..N frames earlier, backwards (`TempLoRAConfig.reverse_phases`: the phases rule);
- ``oracle:lr,steps,draws``: Θ learns nothing before the reopen, then the real reopen chunk itself (the answer),
  and the chunk is generated from the same real context: an upper bound on what Θ can make the model draw;
- ``hide:lr,steps,draws[,reverse]``: of the real chunks Θ learns one, the one that hides the cube (`hiding_chunk`):
  what that chunk alone can write, without the later chunks' updates on top. Beside the ``lr,steps,draws`` row it
  tells a write that does not store from one that the chunks after it overwrite;
- ``around:lr,steps,draws[,reverse]``: of the real frames Θ learns the windows (one chunk long) at every frame offset
  from the hiding chunk's context to the end of the chunk after it (before the reopen chunk's new frames,
  `around_windows`), ``steps`` each: the hiding, played backwards, at every phase a chunk can cut it.
- ``change:lr,steps,draws[,reverse]``: the ``around`` windows, not of the hiding chunk but of each of the
  `CHANGED_CHUNKS` real chunks whose new frames change most (`most_changed_chunks`): a rule that is not told where
  the hiding is (session 59: the hiding chunk is among the four of most change in 19 of 20 episodes). It picks them
  from all the chunks before the reopen, so it is a probe of what such a gate would store, not yet a causal rule
  (``--changed-chunks`` sets how many).
- ``event:lr,steps,draws[,reverse]``: the ``around`` windows of every `event_chunks` chunk, one whose change exceeds
  ``--event-gate`` times the mean change of the chunks before it: the gate a causal rule can run (it decides on a
  chunk from the chunks up to it; its windows reach one chunk further, in once the next chunk is).

``--replay`` (``change``, ``event``): after a chunk's windows Θ learns those of the chunks written before it again.
``--temp-lora-write events`` (with ``--temp-lora-replay``): the plain settings run the library's rule
(`TempLoRAConfig.write`), which makes the ``event`` probe's choice causally from the frames as they come.

Teacher-forced chunks are sampled with 1 denoising step (their frames are thrown away: Θ learns the real
ones); free chunks with the model's. Writes ``reopen_oracle.json`` (per setting: recall, per-episode verdicts,
the probe's labels per reopen frame) into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from evaluation.temp_lora_flags import add_temp_lora_flags, flag_name, given_temp_lora
from worldmodel.config import TempLoRAConfig


def reopen_episodes(data: str, count: int) -> list:
    """The first `count` drawer-memory episodes of `data` (`evaluation.episodes.EvalEpisode`) that hide the cube and
    reopen the drawer onto it: the ones the probe can score."""
    from envs.real.objects import reopen_frames
    from evaluation.episodes import load_h5_episodes

    return [e for e in load_h5_episodes(data, ["memory_drawer", "memory_drawer_locked"], count, 1)
            if e.cube is not None and len(reopen_frames(e.cube["sim_state"], e.cube["cube_pixel"]))]


def last_hidden_frame(episode) -> int:
    """The last frame in which the cube lies hidden in the closed drawer (`envs.real.objects.hidden_frames`)."""
    from envs.real.objects import hidden_frames

    return int(hidden_frames(episode.cube["sim_state"], episode.cube["cube_pixel"])[-1])


def hiding_chunk(episode, new_frames: int) -> int:
    """The chunk that hides the cube for the last time before the reopen: the one that makes the first frame of
    the last run of hidden frames (`envs.real.objects.hidden_frames`). Its training sequence (context and new
    frames) holds that frame and the one before it, the cube's last sight."""
    from envs.real.objects import hidden_frames

    hidden = hidden_frames(episode.cube["sim_state"], episode.cube["cube_pixel"])
    starts = hidden[1:][np.diff(hidden) > 1]
    first = int(starts[-1]) if len(starts) else int(hidden[0])
    return max(first - 1, 0) // new_frames


def around_windows(episode, hide: int, reopen: int, context_frames: int, new_frames: int) -> list[np.ndarray]:
    """The real frame windows (context_frames + new_frames long) at every offset from chunk `hide`'s context start to
    the end of chunk hide + 1, none reaching the new frames of chunk `reopen` (the answer)."""
    length = context_frames + new_frames
    start = max(1 + hide * new_frames - context_frames, 0)
    end = min(1 + (hide + 2) * new_frames, 1 + reopen * new_frames, len(episode.frames))
    return [episode.frames[o : o + length] for o in range(start, end - length + 1)]


def chunk_change(episode, chunk: int, new_frames: int, measure: str = "mean") -> float:
    """How much chunk `chunk`'s new frames differ from the last frame of its context: the memory's event gate's
    measure (`worldmodel.memory.rule.chunk_change`; "mean": the mean absolute pixel difference, 0-255)."""
    from worldmodel.memory import rule

    start = 1 + chunk * new_frames
    frames = torch.from_numpy(episode.frames)
    return rule.chunk_change(frames[start : start + new_frames], frames[start - 1], measure)


def chunk_changes(episode, free_from: int, new_frames: int, measure: str = "mean") -> list[float]:
    """`chunk_change` of chunks 1 .. free_from - 1 (item c - 1 is chunk c's), what the gates rank and compare. Chunk 0
    is left out: its context is the start frame repeated."""
    return [chunk_change(episode, c, new_frames, measure) for c in range(1, free_from)]


def event_chunks(episode, free_from: int, new_frames: int, gate: float, top: int = 0, measure: str = "mean"
                 ) -> list[int]:
    """The chunks c among 3 .. free_from - 1 whose `chunk_change` exceeds ``gate`` times the mean change of chunks
    1 .. c - 1 (`chunk_changes`; two chunks before a first decision), or with ``top`` = K > 0 ranks among the K largest
    so far: the memory's event gate (`worldmodel.memory.rule.is_event`) on the real frames, its change ``measure``
    (`TempLoRAConfig.event_change`)."""
    from worldmodel.memory import rule

    change = chunk_changes(episode, free_from, new_frames, measure)
    return [c for c in range(3, free_from) if rule.is_event(change[: c - 1], change[c - 1], gate, top)]


def most_changed_chunks(episode, free_from: int, new_frames: int, count: int) -> list[int]:
    """The `count` chunks among 1 .. free_from - 1 of most `chunk_change` (`chunk_changes`), most first."""
    change = chunk_changes(episode, free_from, new_frames)
    return sorted(range(1, free_from), key=lambda c: -change[c - 1])[:count]


CHANGED_CHUNKS = 4  # how many chunks `change:` writes the windows around (the top four held the hiding in 19 of 20)
# `event:`'s gate: at 1.3 the hiding chunk was an event in 75 of session 60's 99 reopens (seeds 381, 410, 411), at
# 2.2 events an episode (1.2: 86 at 3.2; 1.4: 52 at 1.4)
EVENT_GATE = TempLoRAConfig.event_gate  # 1.3, the library rule's default
# which real chunks Θ learns (see the module's settings)
KINDS = ("every", "oracle", "hide", "around", "change", "event")
# The --temp-lora-* flags (`evaluation.temp_lora_flags`) this probe takes, in every setting with Θ: where Θ lives and
# how it draws t, and the library's event rule (its gate's ratio is --event-gate, shared with the ``event:`` kind); a
# setting's own lr, steps, draws and reverse come from its text.
EVENT_FIELDS = ("event_top", "event_slots", "event_change", "slots_alone", "replay")
MEMORY_FIELDS = ("target_modules", "blocks", "timesteps", "rank", "write", *EVENT_FIELDS, "protect")
ORDINARY_CHUNKS = 8  # chunks of each --ordinary episode whose inputs define what Θ keeps off (TempLoRAConfig.protect)


SHEET_FRAMES = 8  # frames of a reopen on the sheet, from the reopen chunk's first new frame on


def reopen_sheet(episodes, free_from: list[int], new_frames: int, drawn: dict[str, list[np.ndarray]],
                 results: dict) -> np.ndarray:
    """Per reopen (as many as ``drawn``'s videos), a row of the real frames and one per setting: `SHEET_FRAMES`
    frames from the reopen chunk's first new frame on (the last frame before it first, the closed drawer), each
    captioned with the row's name and, for a setting, whether the probe found the cube's colour there."""
    from evaluation.videos import caption_frame

    rows = []
    for k in range(len(next(iter(drawn.values()), []))):
        e, start = episodes[k], 1 + free_from[k] * new_frames
        for name, video in [("real", e.frames), *((name, videos[k]) for name, videos in drawn.items())]:
            frames = list(video[start - 1: start - 1 + SHEET_FRAMES])
            frames += [np.zeros_like(frames[0])] * (SHEET_FRAMES - len(frames))
            mark = (f"{e.name[-7:]} {e.cube['color']}" if name == "real" else
                    ("cube" if results[name]["correct"][k] else "no cube") + f" ({name[:14]})")
            tiles = [caption_frame(f, [mark if i == 0 else f"t={start - 1 + i}"], 2) for i, f in enumerate(frames)]
            rows.append(np.concatenate(tiles, axis=1))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(rows[:-1], axis=0)


def parse_setting(text: str) -> tuple[str, dict | None]:
    """(kind, Temp-LoRA overrides or None for Φ alone) of ``phi`` or ``lr,steps,draws`` with an optional
    ``,reverse`` or ``,backward`` (backwards alone: ``forward`` False) and then an optional ``,phases=N``
    (`TempLoRAConfig.reverse_phases`, the windows 1..N frames earlier, backwards: the phases rule) and an optional
    ``oracle:``, ``hide:``, ``around:``, ``change:`` or ``event:`` in front; kind is one of `KINDS`."""
    if text == "phi":
        return "every", None
    kind, _, rest = text.rpartition(":")
    parts = rest.split(",")
    phases = parts.pop()[len("phases="):] if parts[-1].startswith("phases=") else "0"
    reverse = parts[-1] in ("reverse", "backward")
    bad = kind not in ("", *KINDS[1:]) or len(parts) != 3 + reverse or not phases.isdigit()
    if bad or (phases != "0" and not reverse):
        raise ValueError(f"a setting is phi, or lr,steps,draws[,reverse|,backward[,phases=N]] with an optional "
                         f"oracle:, hide:, around:, change: or event: in front; got {text!r}")
    return kind or "every", dict(lr=float(parts[0]), steps=int(parts[1]), draws=int(parts[2]), rollback="finite",
                                 reverse=reverse, forward=parts[-1] != "backward", reverse_phases=int(phases))


@torch.no_grad()
def teacher_chunks(model, episode, chunks: range) -> list:
    """The real chunks of an episode as `roll` feeds them (`worldmodel.Chunk`, batch of one): chunk c's new frames are
    frames 1 + c * new_frames on, its context the frames before (the start frame repeated where there are too few);
    the chunks past the episode's end are left out."""
    from worldmodel.chunk import Chunk

    tn, tc, frames = model.config.new_frames, model.config.context_frames, episode.frames
    out = []
    for c in chunks:
        start = 1 + c * tn
        if start + tn > len(frames):
            break
        context = frames[max(start - tc, 0): start]
        window = np.concatenate([np.repeat(context[:1], tc - len(context), 0), context, frames[start: start + tn]])
        with torch.no_grad():
            latents = model.encode_frames(torch.from_numpy(window[None]))
        out.append(Chunk(torch.from_numpy(window[None, tc:]), latents, tc))
    return out


def roll(model, episodes, free_from: list[int], kind: str, overrides: dict | None, max_batch: int, seed: int,
         changed_chunks: int = CHANGED_CHUNKS, event_gate: float = EVENT_GATE, replay: bool = False, ordinary=()):
    """Videos (real frames, generated from chunk free_from[k] on) of every episode under one setting (`KINDS`).
    ``replay``: after the windows around a chunk, Θ learns those of the chunks written before it again, oldest first
    (episodic replay: a later write is followed by the earlier ones, not left on top of them). ``ordinary``: episodes
    (not these) whose first `ORDINARY_CHUNKS` chunks define the inputs Θ keeps off when the setting protects
    (``protect`` in ``overrides``; `worldmodel.memory.protect`)."""
    from evaluation.rollout import model_action
    from worldmodel.imagination import Imagination
    from worldmodel.memory import BatchedTempLoRA
    from worldmodel.memory.protect import ordinary_bases

    tn, b = model.config.new_frames, len(episodes)
    memory = None if overrides is None else BatchedTempLoRA(
        model, b, dataclasses.replace(model.config.temp_lora, **overrides), max_batch=max_batch)
    if memory is not None and memory.config.protect:
        if not ordinary:
            raise ValueError("a setting with protect needs ordinary episodes (--ordinary)")
        chunks = [c for e in ordinary for c in teacher_chunks(model, e, range(ORDINARY_CHUNKS))]
        memory.protect(ordinary_bases(model, memory.config, chunks, memory.config.protect))
    core = Imagination(model, b, memory, denoise_steps=1)
    torch.manual_seed(seed)
    core.reset(None, [e.frames[:1] for e in episodes], [seed + k for k in range(b)])
    videos = [e.frames.copy() for e in episodes]

    def action(ids, acts):
        return model_action(model, [acts[k][0] for k in ids], np.stack([acts[k][1] for k in ids]))

    hide = [hiding_chunk(e, tn) if kind in ("hide", "around") else None for e in episodes]
    cf = model.config.context_frames
    surround = [{hide[k]} if kind == "around" else  # the chunks whose around_windows Θ learns
                set(most_changed_chunks(e, free_from[k], tn, changed_chunks)) if kind == "change" else
                set(event_chunks(e, free_from[k], tn, event_gate)) if kind == "event" else set()
                for k, e in enumerate(episodes)]
    written: list[list[int]] = [[] for _ in episodes]  # per episode, the chunks whose windows Θ learned
    for c in range(max(e.num_model_chunks(tn) for e in episodes)):
        start = 1 + c * tn
        acts = [e.chunk_action(c, tn) for e in episodes]
        real = np.stack([e.frames[np.clip(np.arange(start, start + tn), 0, len(e.frames) - 1)] for e in episodes])
        forced = [k for k in range(b) if c < free_from[k]]
        free = [k for k in range(b) if c >= free_from[k] and start < len(episodes[k].frames)]
        core.denoise_steps = 1
        for learn in (True, False):
            ids = [k for k in forced if learn == (kind == "every" or (kind == "hide" and c == hide[k]))]
            if ids:
                core.step(ids, action(ids, acts), teacher_frames=real[ids], learn=learn)
        writers = [k for k in forced if c in surround[k]]
        if writers:  # the j-th window of every writing episode in one step (Θ per env); the context is put back after
            context = core.context.clone()
            windows = {k: [w for chunk in ([c, *written[k]] if replay else [c])
                           for w in around_windows(episodes[k], chunk, free_from[k], cf, tn)] for k in writers}
            for j in range(max(len(w) for w in windows.values())):
                ids = [k for k in writers if j < len(windows[k])]
                batch = np.stack([windows[k][j] for k in ids])
                core.context[torch.tensor(ids, device=core.context.device)] = model.encode_frames(
                    torch.as_tensor(batch[:, :cf])).to(core.context)
                core.step(ids, action(ids, acts), teacher_frames=batch[:, cf:])
            for k in writers:
                written[k].append(c)
            core.context.copy_(context)
        if not free:
            continue
        answer = [k for k in free if c == free_from[k]]
        if kind == "oracle" and answer and memory is not None:  # Θ learns the real reopen chunk, the context put back
            context = core.context.clone()
            core.step(answer, action(answer, acts), teacher_frames=real[answer])
            core.context.copy_(context)
        core.denoise_steps = model.config.sample_steps
        frames = core.step(free, action(free, acts)).frames.cpu().numpy()
        for j, k in enumerate(free):
            hi = min(start + tn, len(videos[k]))
            videos[k][start:hi] = frames[j][: hi - start]
    return videos


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m experiments.reopen_oracle", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--data", required=True, help="h5 file or folder of scene memory episodes (experiments.collect)")
    ap.add_argument("--model", default="default", help="'default', a preset or a save_pretrained folder")
    ap.add_argument("--episodes", type=int, default=16)
    ap.add_argument("--settings", nargs="+", default=["phi", "oracle:3e-3,20,1"])
    ap.add_argument("--max-batch", type=int, default=4, help="envs per fast step (bounds memory)")
    add_temp_lora_flags(ap, MEMORY_FIELDS, scope=", in every setting with Θ")
    ap.add_argument("--ordinary", default=None, metavar="DATA:N",
                    help=f"with --temp-lora-protect: N reopen episodes of DATA (other than --data's) whose first "
                         f"{ORDINARY_CHUNKS} chunks define the inputs Θ keeps off")
    ap.add_argument("--changed-chunks", type=int, default=CHANGED_CHUNKS,
                    help="how many chunks of most pixel change `change:` writes the windows around")
    ap.add_argument("--event-gate", type=float, default=EVENT_GATE,
                    help="`event:` writes around a chunk whose pixel change exceeds this times the mean of the "
                         "chunks before it")
    ap.add_argument("--replay", action="store_true",
                    help="around, change, event: after each chunk's windows, learn the earlier written chunks' again")
    ap.add_argument("--sheet", type=int, default=0,
                    help="K > 0: reopen_sheet.png in --out, the first K reopens as each setting drew them beside the "
                         "real frames (8 frames from the reopen chunk on, captioned with what the probe read)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="runs/reopen_oracle")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = {s: parse_setting(s) for s in args.settings}
    memory = given_temp_lora(ap, args, MEMORY_FIELDS)
    if args.changed_chunks < 1 or not args.event_gate > 0:
        ap.error("--changed-chunks must be >= 1 and --event-gate > 0")
    if memory.get("write") == "events":
        if any(kind != "every" for kind, o in settings.values() if o is not None):
            ap.error("--temp-lora-write events is the library's rule: it decides which chunks Θ learns, so it goes "
                     "with the plain lr,steps,draws settings (every chunk offered), not with a kind in front")
        memory["event_gate"] = args.event_gate
    elif set(memory) & set(EVENT_FIELDS):
        ap.error(f"{', '.join(flag_name(f) for f in EVENT_FIELDS if f in memory)} go with --temp-lora-write events "
                 "(--replay is the probe kinds' replay)")
    settings = {s: (kind, None if o is None else {**o, **memory}) for s, (kind, o) in settings.items()}
    ordinary_data, _, ordinary_count = (args.ordinary or "").rpartition(":")
    if bool(memory.get("protect")) != bool(args.ordinary):
        ap.error("--temp-lora-protect q > 0 and --ordinary DATA:N go together")
    if args.ordinary and (not ordinary_count.isdigit() or int(ordinary_count) < 1 or not ordinary_data):
        ap.error(f"--ordinary is DATA:N with N >= 1, got {args.ordinary!r}")
    if args.ordinary and Path(ordinary_data).resolve() == Path(args.data).resolve():
        ap.error("--ordinary must name other episodes than --data's: the bases would hold the tested reopens")

    from evaluation import memory_probe
    from worldmodel.loading import load_model

    model, _ = load_model(args.model, device=args.device)
    model.eval()
    for name, (_, overrides) in settings.items():
        try:  # what goes together (slots_alone needs event_slots ...) is the config's to say, on the model's own
            dataclasses.replace(model.config.temp_lora, **(overrides or {}))
        except ValueError as err:
            raise SystemExit(f"setting {name!r}: {err}") from None
    episodes = reopen_episodes(args.data, args.episodes)
    if not episodes:
        raise SystemExit(f"no memory episode with a drawer reopen in {args.data}")
    free_from = [last_hidden_frame(e) // model.config.new_frames for e in episodes]
    ordinary = reopen_episodes(ordinary_data, int(ordinary_count)) if args.ordinary else []
    if args.ordinary and not ordinary:
        raise SystemExit(f"no memory episode with a drawer reopen in {ordinary_data} (--ordinary)")
    results, drawn = {}, {}
    for name, (kind, overrides) in settings.items():
        t0 = time.time()
        videos = roll(model, episodes, free_from, kind, overrides, args.max_batch, args.seed, args.changed_chunks,
                      args.event_gate, args.replay, ordinary=ordinary)
        probes = [memory_probe.cube_recall(v, e.cube["cube_pixel"], e.cube["sim_state"], e.cube["color"],
                                           recorded_width=e.cube["width"]) for v, e in zip(videos, episodes)]
        correct = [bool(p["correct"]) for p in probes]
        results[name] = dict(recall=float(np.mean(correct)), correct=correct, labels=[p["labels"] for p in probes],
                             colors=[e.cube["color"] for e in episodes], seconds=round(time.time() - t0, 1))
        drawn[name] = videos[: args.sheet]
        print(f"{name}: recall {np.mean(correct):.2f} ({sum(correct)}/{len(correct)}), {time.time() - t0:.0f} s",
              flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shown = sys.argv[1:] if argv is None else argv
    report = dict(command="python -m experiments.reopen_oracle " + " ".join(shown), model=args.model,
                  data=args.data, ordinary=args.ordinary, episodes=[e.name for e in episodes], free_from_chunk=free_from,
                  hiding_chunk=[hiding_chunk(e, model.config.new_frames) for e in episodes], results=results)
    if args.sheet > 0:
        from PIL import Image

        Image.fromarray(reopen_sheet(episodes, free_from, model.config.new_frames, drawn, results)).save(
            out / "reopen_sheet.png")
    tmp = out / "reopen_oracle.json.tmp"
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(out / "reopen_oracle.json")
    return report


if __name__ == "__main__":
    main()
