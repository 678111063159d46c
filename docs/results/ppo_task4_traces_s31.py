"""Session 31 (docs/RESULTS.md, "The session-31 lease"): the skills the two task-4 PPO policies of the lease (PPO in
imagination, PPO in the real scene; `train_agent reward=to_go max_chunks=12`, 41k env steps each) play in the real
scene, deterministic, scene seeds 1000-1003 (the first four of the evaluation's 20), with the skills the task still
needs after each chunk (`EpisodeResult.to_go`). The policies came back from the lease as $OUT/seed1_imagination_ppo.zip
and $OUT/seed1_real_real_ppo.zip (7 MB each, not kept in the repo).

    MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa python docs/results/ppo_task4_traces_s31.py seed1_real_real_ppo.zip \
        seed1_imagination_ppo.zip
"""
import sys
from pathlib import Path

from stable_baselines3 import PPO
from agents.ppo import run_policy_in_real_scene
from envs.real.skills import SKILLS

for zip_ in sys.argv[1:]:
    policy = PPO.load(zip_, device="cpu")
    res = run_policy_in_real_scene(policy, "task4_put_in_drawer", range(1000, 1004))
    print("==", Path(zip_).name)
    for r in res:
        print(r.seed, r.success, r.stop, "to_go", r.to_go)
        print("   ", [SKILLS[k] for k in r.skills])
