"""Render the real start frames shipped with the default model (what `SlowFastVGen-v0` resets from).

    MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa python -m experiments.make_start_frames \
        --out worldmodel/weights/default/start_frames.npz

One reset frame per (task, seed) of the OGBench scene suite, with the task's instruction and its
scripted expert's skill plan, so a demo can play a long-horizon instruction without the simulator.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

from envs.real.skills import SKILLS
from envs.real.tasks import EXPERT_TASKS


def render_start_frames(tasks: list[str], seeds: int, size: int) -> dict[str, np.ndarray]:
    from envs.real.scene import RealSceneEnv

    env = RealSceneEnv(task=tasks[0], width=size, height=size)
    frames, names, instructions, plans = [], [], [], []
    try:
        for task in tasks:
            for seed in range(seeds):
                frame, info = env.reset(seed=seed, options={"task": task})
                frames.append(frame)
                names.append(task)
                instructions.append(info["instruction"])
                plans.append(" | ".join(SKILLS[i] for i in info["plan"]))
    finally:
        env.close()
    return {"frames": np.stack(frames)[:, None], "tasks": np.array(names), "instructions": np.array(instructions),
            "plans": np.array(plans)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--tasks", nargs="+", default=list(EXPERT_TASKS))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    data = render_start_frames(args.tasks, args.seeds, args.size)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=os.path.dirname(os.path.abspath(args.out)))
    with os.fdopen(fd, "wb") as f:
        np.savez_compressed(f, **data)
    os.replace(tmp, args.out)
    print(f"{len(data['frames'])} start frames -> {args.out}")


if __name__ == "__main__":
    main()
