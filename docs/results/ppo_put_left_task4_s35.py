"""Session 35's CPU check (docs/RESULTS.md, "The session-35 lease"): the task-4 skill orders the session's policies
play, imagined and real. Imagination seed 2 moves the cube to the left of the table before the cube skill in all its
failures; seed 1 closes the drawer after two cube chunks. Each order is imagined from real task-4 first frames (the
shipped default, 2 denoising steps, Temp-LoRA on, judged by the heads that read the episode so far) and played open
loop in the real scene (the simulator's skills to go), so the two worlds' counts can be read side by side.

    python -m experiments.collect out_dir=runs/task4_starts seed=6 num_episodes=16 env.render_backend=osmesa \
        env.chunk_len=4 env.frame_skip=8 '~tasks' '+tasks={task4_put_in_drawer: 1}'
    MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa python docs/results/ppo_put_left_task4_s35.py runs/task4_starts \
        docs/results/history_heads_s34
"""
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from agents.heads import resolve_heads
from agents.ppo import imagined_vec_env
from agents.real_scene import SceneSpec, make_scene, run_real_episodes
from envs.real.skills import SKILLS
from experiments.train_agent import start_frames_from_data
from worldmodel.loading import load_model

EPISODES, REAL_SEEDS = 4, range(4000, 4010)
PLANS = {"expert, three cube chunks": [4, 0, 6, 6, 6, 1],
         "two cube chunks, then close (seed 1's failures)": [4, 0, 6, 6, 1],
         "the cube to the left first, one cube chunk (seed 2's)": [4, 0, 7, 6, 1],
         "the cube to the left first, three cube chunks": [4, 0, 7, 6, 6, 6, 1]}
torch.set_num_threads(2)
model, folder = load_model("worldmodel/weights/default", "cpu")
out = Path(tempfile.mkdtemp())
heads, _ = resolve_heads(sys.argv[2], folder, None, out, model.config.frame_size, "cpu")
starts = start_frames_from_data(sys.argv[1], ["task4_put_in_drawer"], model.config.frame_size, out)
env = imagined_vec_env(model, heads, ["task4_put_in_drawer"], num_envs=EPISODES, max_chunks=12, seed=0,
                       denoise_steps=2, temp_lora=True, start_frames=str(starts), reward="to_go")


class OpenLoop:  # plays a fixed skill order (a real-scene `Agent`)
    def __init__(self, plan: list[int], n: int):
        self.plan, self.num_episodes, self.step = plan, n, [0] * n
        self.name = "open loop"

    def reset_episode(self, b, frame, info):
        self.step[b] = 0

    def act_batch(self, ids):
        return [self.plan[self.step[b]] if self.step[b] < len(self.plan) else None for b in ids]

    def observe_batch(self, ids, skills, frames, infos):
        for b in ids:
            self.step[b] += 1


scene = SceneSpec(chunk_len=model.config.new_frames, max_chunks=12)
scenes = [make_scene(scene, model.config.frame_size, "task4_put_in_drawer") for _ in range(2)]
for name, plan in PLANS.items():
    print(f"== {name}: {', '.join(SKILLS[k] for k in plan)}")
    obs, over, counts = env.reset(), np.zeros(EPISODES, bool), []
    for skill in plan:
        obs, rewards, dones, infos = env.step(np.full(EPISODES, skill))
        counts.append(" ".join("  -- " if o else f"{-r:4.2f}" for o, r in zip(over, rewards)))
        over |= dones
    print("  imagined, heads' skills to go after each chunk (4 episodes):", " | ".join(counts))
    print(f"  imagined episodes the heads called done: {int(over.sum())} of {EPISODES}")
    results = run_real_episodes(OpenLoop(plan, len(scenes)), scenes, [("task4_put_in_drawer", s) for s in REAL_SEEDS],
                                scene)
    print(f"  real, seeds {REAL_SEEDS[0]}-{REAL_SEEDS[-1]}: success {sum(r.success for r in results)} of "
          f"{len(results)}; skills to go after each chunk:", "; ".join(str(r.to_go[1:]) for r in results), flush=True)
env.close()
for s in scenes:
    s.close()
