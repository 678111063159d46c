"""Session 27's CPU probe (docs/RESULTS.md, "The session-27 lease"): can `agents.ppo.train_ppo` learn a stand-in of
task1_open (open the drawer and the window, any order) in 10,240 env steps, and what decides it?

The stand-in: 32 envs, real 64x64 frames of the task's four drawer/window states (20 scene seeds each, rendered once
into FRAMES), skills 0-3 open/close the drawer/window, each fails (changes nothing) with probability `fail`, reward
-`scale` per unopened part, 8 chunks at most. Judged by the deterministic policy on 20 episodes.

    python docs/results/ppo_standin_s27.py fail=0.3 scale=1.5 seed=1 [normalize_reward=False] [share=0] [ppo key=value]
"""
import os
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

import agents.ppo as P
from agents.ppo import ObservationSpec, PPOConfig, train_ppo

FRAMES = Path(os.environ.get("STANDIN_FRAMES", "runs/ppo_standin_frames.npz"))
OWN = ("fail", "scale", "share", "seed", "steps")


def state_frames() -> dict:
    if not FRAMES.is_file():
        from agents.real_scene import SceneSpec, make_scene

        env = make_scene(SceneSpec(chunk_len=4, max_chunks=8), 64, "task1_open")
        out = {k: [] for k in ("00", "10", "01", "11")}
        for s in range(1000, 1020):
            for key, skills in (("00", []), ("10", [0]), ("01", [2]), ("11", [0, 2])):
                frame, _ = env.reset(seed=s, options={"task": "task1_open"})
                for a in skills:
                    frame, *_ = env.step(a)
                frame = np.asarray(frame)
                out[key].append(frame[-1] if frame.ndim == 4 else frame)
        FRAMES.parent.mkdir(parents=True, exist_ok=True)
        np.savez(FRAMES, **{k: np.stack(v) for k, v in out.items()})
    return dict(np.load(FRAMES))


INSTRUCTION = "open the drawer and the window"


class StandIn(gym.Env):
    obs_spec = ObservationSpec(64, 8)
    observation_space, action_space = obs_spec.space(), spaces.Discrete(10)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.open, self.t, self.k = [False, False], 0, int(self.np_random.integers(20))
        return self.obs_spec.build(REAL["00"][self.k], INSTRUCTION, 0, None), {}

    def step(self, a):
        a, self.t = int(a), self.t + 1
        if a < 4 and self.np_random.random() >= FAIL:
            self.open[a // 2] = a % 2 == 0
        done = all(self.open)
        frame = REAL["%d%d" % tuple(self.open)][self.k]
        return (self.obs_spec.build(frame, INSTRUCTION, self.t, a), -SCALE * (2 - sum(self.open)), done,
                self.t >= 8 and not done, {})


def judge(agent, standin: type, horizon: int, episodes: int = 20, deterministic: bool = True) -> tuple[int, list]:
    """Wins of ``agent`` over ``episodes`` episodes of ``standin`` (scene seeds 1000..) of at most ``horizon`` chunks,
    and the skills it played in each."""
    probe, wins, played = standin(), 0, []
    for i in range(episodes):
        obs, _ = probe.reset(seed=1000 + i)
        skills = []
        for _ in range(horizon):
            action, _ = agent.predict(obs, deterministic=deterministic)
            skills.append(int(action))
            obs, _, done, _, _ = probe.step(action)
            if done:
                wins += 1
                break
        played.append(skills)
    return wins, played


def train_and_judge(standin: type, args: dict, own: tuple, seed: int, steps: int, horizon: int,
                    callback=None) -> None:
    """PPO (`agents.ppo.train_ppo`, session 10's settings; ``args``' keys not in ``own`` are `PPOConfig`'s) on 32 copies
    of ``standin`` for ``steps`` env steps (``callback``: SB3's, while it learns), then the deterministic policy's
    success over 20 episodes of at most ``horizon`` chunks, printed."""
    torch.set_num_threads(1)

    def parse(k: str, v: str):
        default = getattr(PPOConfig(), k)
        return (v == "True") if isinstance(default, bool) else float(v) if default is None else type(default)(v)

    ppo = {k: parse(k, v) for k, v in args.items() if k not in own}
    env = VecMonitor(DummyVecEnv([standin] * 32))
    env.seed(seed)
    agent = train_ppo(env, PPOConfig(**{**dict(seed=seed, device="cpu", n_steps=8, batch_size=64,
                                                total_timesteps=steps), **ppo}), callback=callback)
    wins, played = judge(agent, standin, horizon)
    print(f"{args}: deterministic success {wins}/20, {agent.num_timesteps} steps, {agent.train_seconds:.0f} s, "
          f"first episodes {played[:3]}")


if __name__ == "__main__":
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    FAIL, SCALE = float(args.get("fail", 0)), float(args.get("scale", 1))
    SEED, STEPS = int(args.get("seed", 1)), int(args.get("steps", 10240))
    REAL = state_frames()
    if args.get("share", "1") == "0":  # the policy and the value function each with their own frame encoder
        class Unshared(P.PPO):
            def __init__(self, *a, **k):
                k["policy_kwargs"] = dict(k["policy_kwargs"], share_features_extractor=False)
                super().__init__(*a, **k)
        P.PPO = Unshared
    train_and_judge(StandIn, args, OWN, SEED, STEPS, 8)
