"""Session 34 (docs/RESULTS.md, "The session-34 lease"): the task-4 PPO policies run in the real scene with each chosen
skill run on until the heads' success output sees its real chunk done, up to 3 chunks (`PolicyAgent(skill_chunks=3)`,
the planners' rule), beside the plain policy (a decision every chunk), on 20 scene seeds none of the session's analyses
looked at (3000-3019), deterministic. The judge: the heads that read the episode so far (docs/results/history_heads_s34)
for every policy. The policies: the two trained in imagination (session 34) and the one trained in the real scene
(session 33), each from its lease's $OUT (not kept in the repo).

    MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa python docs/results/ppo_task4_skill_runs_s34.py POLICY.zip [POLICY.zip ...]
"""
import sys
import time
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import PPO

from agents.ppo import run_policy_in_real_scene
from envs.real.skills import SKILLS
from worldmodel.heads import RewardHeads

torch.set_num_threads(1)
heads = RewardHeads.from_pretrained("docs/results/history_heads_s34")
SEEDS = range(3000, 3020)
for zip_ in sys.argv[1:]:
    policy = PPO.load(zip_, device="cpu")
    for skill_chunks in (1, 3):
        start = time.perf_counter()
        res = run_policy_in_real_scene(policy, "task4_put_in_drawer", SEEDS, heads=heads, skill_chunks=skill_chunks)
        print(f"== {Path(zip_).name} skill_chunks={skill_chunks}: success {sum(r.success for r in res)} of {len(res)}, "
              f"chunks per episode {np.mean([r.chunks for r in res]):.2f} ({time.perf_counter() - start:.0f} s)",
              flush=True)
        for r in res:
            print(r.seed, r.success, "to_go", r.to_go, [SKILLS[k][:24] for k in r.skills], flush=True)
