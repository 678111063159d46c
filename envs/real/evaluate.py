"""Scripted-expert success per task in the real sim, without rendering.

    python -m envs.real.evaluate --seeds 20 [--noise 0.1] [--tasks task1_open memory_drawer] [--distractors 1 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from envs.real.objects import reopen_frames
from envs.real.rollout import run_episode
from envs.real.scene import RealSceneEnv
from envs.real.tasks import EXPERT_TASKS


def expert_success(env: RealSceneEnv, task: str, seeds: range) -> dict:
    """Success rate, mean chunks, mean revisit pairs and mean distractor skills of the expert on
    ``task`` over ``seeds``, and the share of episodes whose cube lay fully hidden in the closed drawer
    and shows again when it is reopened (what the memory probe scores; ``evaluation.memory_probe``)."""
    episodes = [run_episode(env, seed, task) for seed in seeds]
    return dict(
        success=float(np.mean([e["attrs"]["task_success"] for e in episodes])),
        chunks=float(np.mean([len(e["skill_ids"]) for e in episodes])),
        revisits=float(np.mean([len(e["revisits"]) for e in episodes])),
        distractors=float(np.mean([e["attrs"]["distractors"] for e in episodes])),
        hidden_reopened=float(np.mean([len(reopen_frames(e["sim_state"], e["cube_pixel"])) > 0 for e in episodes])),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20, help="episodes per task (seeds 0..N-1)")
    parser.add_argument("--noise", type=float, default=0.0, help="std of Gaussian action noise")
    parser.add_argument("--tasks", nargs="+", default=list(EXPERT_TASKS))
    parser.add_argument("--chunk-len", type=int, default=8)
    parser.add_argument("--frame-skip", type=int, default=4)
    parser.add_argument("--distractors", type=int, nargs=2, default=(1, 3), metavar=("MIN", "MAX"),
                        help="random distractor skills in the drawer memory tasks")
    args = parser.parse_args(argv)
    env = RealSceneEnv(
        render=False, skill_noise=args.noise, chunk_len=args.chunk_len, frame_skip=args.frame_skip,
        min_distractors=args.distractors[0], max_distractors=args.distractors[1],
    )
    print(f"| task | expert success ({args.seeds} seeds, noise {args.noise}) | mean chunks | mean revisit pairs "
          "| mean distractors | cube hidden, then reopened |")
    print("| --- | --- | --- | --- | --- | --- |")
    start = time.time()
    for task in args.tasks:
        r = expert_success(env, task, range(args.seeds))
        print(f"| {task} | {r['success']:.0%} | {r['chunks']:.1f} | {r['revisits']:.1f} | {r['distractors']:.1f} "
              f"| {r['hidden_reopened']:.0%} |", flush=True)
    print(f"({time.time() - start:.0f} s)")
    env.close()


if __name__ == "__main__":
    main()
