"""What a fast-learning setting stores and what it disturbs, on real chunks (issue 15, part 2).

    python -m experiments.collect out_dir=runs/fastmem/scene seed=1 num_episodes=6 workers=1 \\
        env.chunk_len=4 env.frame_skip=8 tasks.play=0 ...      # a few memory episodes (see docs/RESULTS.md)
    python -m experiments.fast_update --data runs/fastmem/scene --settings 1e-4,1,1,0 1e-3,2,4,0

For every setting ``lr,steps,draws[,rehearsal]`` a fresh Temp-LoRA memory learns the first ``--chunks``
real chunks of each ``--learn`` episode in order, and the fast loss (fixed evaluation draws) is compared:
on the chunk just learned (after vs before its update), on all learned chunks after the episode (Θ vs Φ)
and on the first ``--other-chunks`` chunks of the ``--other`` episodes (Θ vs Φ: interference). The logic
is `worldmodel.memory.measure`. Writes ``fast_update.json`` and ``fast_update.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch


def first_window(data: str, context_frames: int, new_frames: int, index: int, count: int) -> dict:
    """The first ``count`` chunks of episode ``index`` of ``data`` (in the order of its files and keys, counting every
    episode), an `envs.data.EpisodeDataset` item. An episode shorter than ``count`` chunks is an error, not skipped:
    skipping it would shift the index, so that ``--learn`` and ``--other`` (scored at other lengths) could name one
    episode twice."""
    from envs.data import EpisodeDataset

    ds = EpisodeDataset(data, context_frames, new_frames, count, anchor="start")
    episodes = ds._episodes.refs  # every episode, long enough or not
    if not 0 <= index < len(episodes):
        raise SystemExit(f"episode {index}: {data} holds {len(episodes)} episodes")
    ref = episodes[index]
    if ref.num_chunks < count:
        raise SystemExit(f"episode {index} ({ref.key}) has {ref.num_chunks} chunks, {count} are needed")
    return ds[ds._items.index((ref, 0))]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m experiments.fast_update", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--data", required=True, help="h5 file or folder of scene episodes (experiments.collect)")
    ap.add_argument("--model", default="default", help="'default', a preset or a save_pretrained folder")
    ap.add_argument("--learn", type=int, nargs="+", default=[0], help="episode indices whose chunks are learned")
    ap.add_argument("--chunks", type=int, default=4, help="chunks learned per --learn episode")
    ap.add_argument("--later-chunks", type=int, default=0,
                    help="also score the N chunks after the learned ones of each --learn episode (never learned)")
    ap.add_argument("--other", type=int, nargs="+", default=[1, 2], help="episode indices for interference")
    ap.add_argument("--other-chunks", type=int, default=2, help="chunks scored per --other episode")
    ap.add_argument("--settings", nargs="+", default=["1e-4,1,1,0", "1e-3,2,4,0"],
                    help="lr,steps,draws[,rehearsal[,blocks]][,reverse[,phases=N]][,targets=A+B][,rank=R]"
                         "[,timesteps=T][,events[,top=K][,slots=S][,replay][,alone][,change=C]] per setting "
                         "(blocks: UNet block prefixes joined by +; reverse, phases, targets, rank, timesteps, "
                         "events, top, slots, replay, alone, change: TempLoRAConfig.reverse, reverse_phases, "
                         "target_modules, rank, timesteps, write='events', event_top, event_slots, replay, "
                         "slots_alone, event_change)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", default="runs/fast_update")
    args = ap.parse_args(argv)
    if args.later_chunks < 0:
        ap.error("--later-chunks must be >= 0")
    if set(args.learn) & set(args.other):
        ap.error(f"episodes {sorted(set(args.learn) & set(args.other))} are both --learn and --other: interference is "
                 "measured on episodes the memory never learned")
    torch.set_num_threads(args.threads)

    from worldmodel.loading import load_model
    from worldmodel.memory.measure import Setting, episode_chunks, markdown, measure

    settings = [Setting.parse(s) for s in args.settings]
    model, _ = load_model(args.model, device="cpu")
    model.eval()
    mc = model.config

    def first_chunks(index: int, count: int) -> list:
        return episode_chunks(model, first_window(args.data, mc.context_frames, mc.new_frames, index, count))

    episodes = [first_chunks(e, args.chunks + args.later_chunks) for e in args.learn]
    learned = [ep[: args.chunks] for ep in episodes]
    later = [ep[args.chunks:] for ep in episodes] if args.later_chunks else []
    others = [c for e in args.other for c in first_chunks(e, args.other_chunks)]
    result = measure(model, learned, others, settings, seed=args.seed, later=later)
    result["command"] = "python -m experiments.fast_update " + " ".join(argv if argv is not None else sys.argv[1:])
    result["machine"] = f"{platform.machine()} CPU, torch threads {args.threads}"
    result["date"] = time.strftime("%Y-%m-%d")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fast_update.json").write_text(json.dumps(result, indent=2))
    md = f"`{result['command']}` ({result['machine']}, {result['date']})\n\n{markdown(result)}\n"
    (out / "fast_update.md").write_text(md)
    print(md)
    return result


if __name__ == "__main__":
    main()
