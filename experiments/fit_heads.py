"""Fit a model's reward / success / termination heads on real episodes and ship them in its folder.

    python -m experiments.fit_heads --model runs/small/model --data data/scene
    python -m experiments.fit_heads --model runs/small/model --data data/scene --steps 4000 --device cuda

The heads (`worldmodel.heads.RewardHeads`) judge frames, so they learn from real frames only: every
10th episode is held out and the accuracy there goes to ``<model>/heads/fit.json`` and the output. With
``heads/`` in the model folder, `SlowFastVGen-v0` gives real rewards and the planners and agents score
imagined chunks with them (`agents.heads.resolve_heads` finds them there).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from agents.heads import HEADS_DIR, fit_and_save
from worldmodel.config import WorldModelConfig


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m experiments.fit_heads", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", required=True, help="model folder (save_pretrained); heads go to its heads/")
    ap.add_argument("--data", required=True, help="h5 episode file or folder of real episodes")
    ap.add_argument("--steps", type=int, default=2000, help="optimizer steps (default 2000)")
    ap.add_argument("--batch", type=int, default=64, help="chunks per step (default 64)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--heldout", type=float, default=0.1, help="share of episodes held out (default 0.1)")
    ap.add_argument("--max-episodes", type=int, default=None, help="read at most this many episodes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    args = ap.parse_args(argv)

    folder = Path(args.model)
    if not (folder / "config.json").is_file():
        raise SystemExit(f"{folder} is not a model folder (no config.json); pass the folder save_pretrained wrote")
    frame_size = WorldModelConfig.load(folder / "config.json").frame_size
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    _, info = fit_and_save(args.data, frame_size, folder / HEADS_DIR, steps=args.steps, batch_size=args.batch,
                           lr=args.lr, heldout=args.heldout, max_episodes=args.max_episodes, seed=args.seed,
                           device=device)
    print(json.dumps(info))
    return info


if __name__ == "__main__":
    main()
