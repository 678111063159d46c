"""Session 34 (docs/RESULTS.md, "The session-34 lease"): the task-4 policies PPO learnt in imagination, run in the real
scene on all 20 evaluation seeds (1000-1019, deterministic, as `train_agent` evaluates them), with the skills each
episode played and the skills the task still needed after each chunk, so every failure can be read. The policies came
back from the lease as $OUT/seed1_imagination_ppo.zip and seed2_imagination_ppo.zip (8.6 MB each, not kept in the repo).

    MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa python docs/results/ppo_task4_failures_s34.py seed1_imagination_ppo.zip \
        seed2_imagination_ppo.zip
"""
import sys
from pathlib import Path

from stable_baselines3 import PPO

from agents.ppo import run_policy_in_real_scene
from envs.real.skills import SKILLS

for zip_ in sys.argv[1:]:
    policy = PPO.load(zip_, device="cpu")
    res = run_policy_in_real_scene(policy, "task4_put_in_drawer", range(1000, 1020))
    print("==", Path(zip_).name, f"success {sum(r.success for r in res)} of {len(res)}", flush=True)
    for r in res:
        print(r.seed, r.success, r.stop, "to_go", r.to_go)
        print("   ", [SKILLS[k] for k in r.skills], flush=True)
