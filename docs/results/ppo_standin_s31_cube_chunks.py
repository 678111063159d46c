"""Session 31's CPU probe (docs/RESULTS.md, "The session-31 lease"): the task-4 stand-in of session 28 with the real
scene's cube skill, which takes more than one chunk. Does PPO still learn it from skills to go, and what helps?

First the real scene: scene seeds 1000-1009, the left button pressed and the drawer opened (each repeated until it
succeeds), then "pick up the cube and put it in the drawer" repeated until it succeeds (at most 4 chunks): how many
chunks it took, and the last frame after each chunk that left the cube under way (the stand-in's "held" frames, by
chunk, saved to HELD_FRAMES). Then the stand-in: session 28's (`ppo_standin_s28_task4.py`: 32 envs, the real frames of
each state, each skill failing with probability `fail`, 12 chunks), except that the cube skill with the drawer open
takes `cube_chunks` (3, as the real scene's) successful chunks to put the cube in, the cube held (under way, the real
frames of that chunk) in between; any other skill while it is held drops it back on the table. The reward is minus
the skills to go, which, as `envs.real.tasks.skills_to_go` counts it, is the same for a held cube as for a cube on the
table (`held=same`), or less by the share of the cube's chunks done (`held=part`).

    python docs/results/ppo_standin_s31_cube_chunks.py                                # the real scene's cube chunks
    python docs/results/ppo_standin_s31_cube_chunks.py fail=0.3 held=same steps=40960 seed=1 \
        [cube_chunks=3] [ent_coef=0.05]
"""
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ppo_standin_s28_task4 as task4  # noqa: E402
from ppo_standin_s27 import train_and_judge  # noqa: E402

HELD_FRAMES = Path(os.environ.get("STANDIN_HELD_FRAMES", "runs/ppo_standin_task4_held_frames.npz"))
OWN = ("fail", "held", "seed", "steps", "cube_chunks")
PUT, OPEN, UNLOCK = 6, 0, 4


def cube_chunks() -> np.ndarray:
    """The real scene's cube chunks per seed, printed; the held frames saved once."""
    from agents.real_scene import SceneSpec, make_scene

    env = make_scene(SceneSpec(chunk_len=4, max_chunks=12), 64, "task4_put_in_drawer")
    held, counts = {}, []
    for s in range(1000, 1010):
        env.reset(seed=s, options={"task": "task4_put_in_drawer"})
        for skill in (UNLOCK, OPEN):
            for _ in range(4):
                *_, info = env.step(skill)
                if info["success"]:
                    break
        for n in range(1, 5):
            frame, *_, info = env.step(PUT)
            if info["success"]:
                break
            frame = np.asarray(frame)
            held.setdefault(f"held{n}", []).append(frame[-1] if frame.ndim == 4 else frame)
        counts.append(n if info["success"] else None)
        print(f"scene seed {s}: the cube in the drawer after {counts[-1]} chunk(s)", flush=True)
    env.close()
    HELD_FRAMES.parent.mkdir(parents=True, exist_ok=True)
    np.savez(HELD_FRAMES, **{k: np.stack(v) for k, v in held.items()})
    return np.asarray(counts)


class CubeChunks(task4.StandIn):
    """(left, open, cube) with cube 0 on the table, 1 .. CUBE_CHUNKS - 1 held (under way), CUBE_CHUNKS in the drawer."""

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        self.cube = 0
        return obs, info

    def step(self, a):
        a, self.t = int(a), self.t + 1
        left, open_, _ = self.state
        if self.np_random.random() >= task4.FAIL:
            if a == PUT and open_ and self.cube < CUBE_CHUNKS:
                self.cube += 1
            elif a != PUT:
                left, open_, in_drawer = task4.after((left, open_, self.cube == CUBE_CHUNKS), a)
                self.cube = CUBE_CHUNKS if in_drawer else 0  # a held cube dropped, or one taken out
        elif a != PUT and 0 < self.cube < CUBE_CHUNKS:
            self.cube = 0
        held = 0 < self.cube < CUBE_CHUNKS
        self.state = (left, open_, self.cube == CUBE_CHUNKS)
        done = left and not open_ and self.cube == CUBE_CHUNKS
        cost = task4.TO_GO[task4.key(self.state)] - (self.cube / CUBE_CHUNKS if HELD == "part" and held else 0.0)
        frames = HELD_IMG[f"held{min(self.cube, len(HELD_IMG))}"] if held else task4.REAL[task4.key(self.state)]
        frame = frames[self.k % len(frames)]
        return (self.obs_spec.build(frame, task4.INSTRUCTION, self.t, a), -cost, done, self.t >= 12 and not done, {})


if __name__ == "__main__":
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    if not args:
        counts = cube_chunks()
        print("chunks per cube skill:", counts.tolist())
        sys.exit(0)
    task4.FAIL, task4.SCALE, task4.REWARD = float(args.get("fail", 0.3)), 1.0, "to_go"
    HELD, CUBE_CHUNKS = args.get("held", "same"), int(args.get("cube_chunks", 3))
    task4.REAL = task4.state_frames()
    if not HELD_FRAMES.is_file():
        cube_chunks()
    HELD_IMG = dict(np.load(HELD_FRAMES))
    train_and_judge(CubeChunks, args, OWN, int(args.get("seed", 1)), int(args.get("steps", 40960)), 12)
