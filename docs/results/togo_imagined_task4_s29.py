"""Session 29's CPU check (docs/RESULTS.md, "The session-29 lease"): the reward PPO would learn from with
`train_agent reward=to_go` in imagination, minus the heads' skills to go, along three skill sequences of
task4_put_in_drawer (the expert's plan, skills that do nothing for it, the drawer opened while locked), each skill one
chunk, 4 imagined episodes from real task-4 first frames (the shipped default and its heads, 2 denoising steps,
Temp-LoRA on).

    python -m experiments.collect out_dir=runs/task4_starts seed=6 num_episodes=64 env.render_backend=osmesa \
        env.chunk_len=4 env.frame_skip=8 '~tasks' '+tasks={task4_put_in_drawer: 1}'
    python docs/results/togo_imagined_task4_s29.py runs/task4_starts
"""
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from agents.heads import resolve_heads
from agents.ppo import imagined_vec_env
from experiments.train_agent import start_frames_from_data
from worldmodel.loading import load_model

torch.set_num_threads(1)
model, folder = load_model("worldmodel/weights/default", "cpu")
out = Path(tempfile.mkdtemp())
heads, _ = resolve_heads(None, folder, None, out, model.config.frame_size, "cpu")
starts = start_frames_from_data(sys.argv[1], ["task4_put_in_drawer"], model.config.frame_size, out)
plans = {"expert": [4, 0, 6, 1], "skills that do nothing for it": [3, 2, 5, 3], "drawer opened locked": [0, 0, 6, 1]}
for reward in ("to_go", "scene"):  # the same seeded imagined chunks, scored both ways
    env = imagined_vec_env(model, heads, ["task4_put_in_drawer"], num_envs=4, max_chunks=12, seed=0,
                           denoise_steps=2, temp_lora=True, start_frames=str(starts), reward=reward)
    for name, plan in plans.items():
        env.reset()
        print(f"reward={reward}, {name}")
        for skill in plan:
            _, rewards, dones, _ = env.step(np.full(4, skill))
            print(f"  skill {skill}: rewards {' '.join(f'{r:5.2f}' for r in rewards)}, episode over {dones.tolist()}",
                  flush=True)
    env.close()
