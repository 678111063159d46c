"""Session 28's CPU probe (docs/RESULTS.md, "A stand-in of task 4"): the task-4 stand-in's PPO judged every 2,048 env
steps while it learns (the deterministic and the sampled policy, 10 episodes each) beside its rollouts' episode length.

    python docs/results/ppo_standin_s28_timeline.py FAIL REWARD STEPS     # e.g. 0 to_go 20480
"""
import sys, numpy as np, torch
sys.path.insert(0, "docs/results")
import ppo_standin_s28_task4 as M
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor
from agents.ppo import PPOConfig, train_ppo
M.FAIL, M.SCALE, M.REWARD = float(sys.argv[1]), 1.0, sys.argv[2]
M.REAL = M.state_frames()
torch.set_num_threads(1)


def judge(model, det=True, n=10):
    wins = 0
    for i in range(n):
        e = M.StandIn(); obs, _ = e.reset(seed=1000 + i)
        for t in range(12):
            a, _ = model.predict(obs, deterministic=det); obs, r, done, trunc, _ = e.step(a)
            if done: wins += 1; break
    return wins


class Timeline(BaseCallback):
    def _on_rollout_end(self):
        if self.model.num_timesteps % 2048 < 256:
            ep = self.model.ep_info_buffer
            print(self.model.num_timesteps, "rollout len", round(np.mean([e["l"] for e in ep]), 2) if ep else None,
                  "det wins /10", judge(self.model), "sampled", judge(self.model, False), flush=True)

    def _on_step(self):
        return True


env = VecMonitor(DummyVecEnv([M.StandIn] * 32)); env.seed(1)
agent = train_ppo(env, PPOConfig(seed=1, device="cpu", n_steps=8, batch_size=64, total_timesteps=int(sys.argv[3])),
                  callback=Timeline())
print("end", judge(agent), judge(agent, False))
