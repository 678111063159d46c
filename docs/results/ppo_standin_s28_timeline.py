"""Session 28's CPU probe (docs/RESULTS.md, "A stand-in of task 4"): the task-4 stand-in's PPO judged every 2,048 env
steps while it learns (the deterministic and the sampled policy, 10 episodes each) beside its rollouts' episode length.

    python docs/results/ppo_standin_s28_timeline.py FAIL REWARD STEPS [seed=S] [PPO key=value ...]  # 0 to_go 20480

(Session 29 added the seed and the PPO settings, e.g. ``anneal_lr=True`` or ``target_kl=0.02``.)
"""
import sys
from pathlib import Path

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ppo_standin_s28_task4 as task4  # noqa: E402
from ppo_standin_s27 import judge, train_and_judge  # noqa: E402


class Timeline(BaseCallback):
    def _on_rollout_end(self):
        if self.model.num_timesteps % 2048 < 256:
            ep = self.model.ep_info_buffer
            print(self.model.num_timesteps, "rollout len", round(np.mean([e["l"] for e in ep]), 2) if ep else None,
                  "det wins /10", judge(self.model, task4.StandIn, 12, 10)[0],
                  "sampled", judge(self.model, task4.StandIn, 12, 10, deterministic=False)[0], flush=True)

    def _on_step(self):
        return True


if __name__ == "__main__":
    task4.FAIL, task4.SCALE, task4.REWARD = float(sys.argv[1]), 1.0, sys.argv[2]
    task4.REAL = task4.state_frames()
    args = dict(a.split("=", 1) for a in sys.argv[4:])
    train_and_judge(task4.StandIn, args, ("seed",), int(args.get("seed", 1)), int(sys.argv[3]), 12,
                    callback=Timeline())
