"""Session 28's CPU probe (docs/RESULTS.md, "A stand-in of task 4"): can `agents.ppo.train_ppo` learn a stand-in of
task4_put_in_drawer (press the left button, open the drawer, put the cube in it, close it) in the env steps the next
lease can give, with and without reward scaling? Sizes issue 17's next PPO runs on a longer task than task 1.

The stand-in: 32 envs, real 64x64 frames of the task's eight (left lock, drawer, cube) states (scene seeds 1000-1009,
rendered once into FRAMES with the real skills, each repeated until it succeeds), skills 0 / 1 / 4 / 6 open / close the
drawer, press the left button, put the cube in the open drawer, 7-9 take the cube out of the open drawer, the others
change nothing (the window and the right button are left out); each skill fails (changes nothing) with probability
`fail`; reward -`scale` x the goal parts unmet (cube in the drawer, left button unlocked, drawer shut: the real scene's
`sum(conditions) - 5` for these three), 12 chunks at most. Judged by the deterministic policy on 20 episodes.

    python docs/results/ppo_standin_s28_task4.py fail=0.3 scale=1 seed=1 steps=20480 [reward=to_go] [normalize_reward=False]
"""
import os
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from agents.ppo import ObservationSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ppo_standin_s27 import train_and_judge  # noqa: E402  (the same PPO and judge as session 27's stand-in)

FRAMES = Path(os.environ.get("STANDIN_FRAMES", "runs/ppo_standin_task4_frames.npz"))
OWN = ("fail", "scale", "seed", "steps", "reward")
CHAINS = ((4, 0, 6, 1, 4), (4, 0, 4), (4, 0, 6, 4))  # every (left, drawer, cube) state on one of these paths


def after(state: tuple, skill: int) -> tuple:
    """(left unlocked, drawer open, cube in drawer) after ``skill`` succeeds."""
    left, open_, cube = state
    if skill in (0, 1) and left:
        open_ = skill == 0
    elif skill == 4:
        left = not left
    elif skill == 6 and open_:
        cube = True
    elif skill in (7, 8, 9) and open_:
        cube = False
    return left, open_, cube


key = lambda state: "%d%d%d" % state  # noqa: E731


def state_frames() -> dict:
    if not FRAMES.is_file():
        from agents.real_scene import SceneSpec, make_scene

        env = make_scene(SceneSpec(chunk_len=4, max_chunks=12), 64, "task4_put_in_drawer")
        out: dict[str, list] = {}
        last = lambda frame: np.asarray(frame)[-1] if np.ndim(frame) == 4 else np.asarray(frame)  # noqa: E731
        for s in range(1000, 1010):
            for chain in CHAINS:
                frame, _ = env.reset(seed=s, options={"task": "task4_put_in_drawer"})
                state = (False, False, False)
                out.setdefault(key(state), []).append(last(frame))
                for skill in chain:
                    for _ in range(4):
                        frame, _, _, _, info = env.step(skill)
                        if info["success"]:
                            break
                    assert info["success"], (s, chain, skill)
                    state = after(state, skill)
                    out.setdefault(key(state), []).append(last(frame))
        FRAMES.parent.mkdir(parents=True, exist_ok=True)
        np.savez(FRAMES, **{k: np.stack(v[:10]) for k, v in out.items()})  # 10 frames per state, one per seed
    return dict(np.load(FRAMES))


INSTRUCTION = "unlock the drawer, put the cube in it and close it"
# reward=to_go: -scale x the fewest skills left to the goal (`envs.real.tasks.skills_to_go`'s count for these states),
# which never rises on the way, instead of the unmet goal parts, which rise when the drawer opens
TO_GO = {"000": 4, "100": 3, "110": 2, "111": 1, "101": 0, "010": 3, "011": 2, "001": 1}


class StandIn(gym.Env):
    obs_spec = ObservationSpec(64, 12)
    observation_space, action_space = obs_spec.space(), spaces.Discrete(10)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state, self.t, self.k = (False, False, False), 0, int(self.np_random.integers(10))
        return self.obs_spec.build(REAL["000"][self.k], INSTRUCTION, 0, None), {}

    def step(self, a):
        a, self.t = int(a), self.t + 1
        if self.np_random.random() >= FAIL:
            self.state = after(self.state, a)
        left, open_, cube = self.state
        unmet = (not cube) + (not left) + open_
        done = unmet == 0
        cost = TO_GO[key(self.state)] if REWARD == "to_go" else unmet
        return (self.obs_spec.build(REAL[key(self.state)][self.k], INSTRUCTION, self.t, a), -SCALE * cost, done,
                self.t >= 12 and not done, {})


if __name__ == "__main__":
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    FAIL, SCALE = float(args.get("fail", 0)), float(args.get("scale", 1))
    SEED, STEPS = int(args.get("seed", 1)), int(args.get("steps", 20480))
    REWARD = args.get("reward", "parts")
    REAL = state_frames()
    train_and_judge(StandIn, args, OWN, SEED, STEPS, 12)
