"""The vector env's host-side work per step at N envs (issue 16): the default model's imagination step and heads
replaced by a cached chunk and a cached prediction after one real step, so that what is timed is the bookkeeping
around them (actions, observations, recent frames, infos). Usage: PYTHONPATH=. python docs/results/host_step_s54.py
[N]; prints ms per step and a cProfile of three steps."""
import cProfile
import dataclasses
import pstats
import sys
import time

import numpy as np
import torch

from envs.world_model_env.vector import WorldModelVectorEnv
from worldmodel.loading import load_model

n = int(sys.argv[1]) if len(sys.argv) > 1 else 256
torch.set_num_threads(2)
model, _ = load_model("worldmodel/weights/default", torch.device("cpu"), shared=True)
memory = dataclasses.replace(model.config.temp_lora, update_every=16)
env = WorldModelVectorEnv(num_envs=n, model=model, action_mode="continuous", denoise_steps=1, temp_lora=memory,
                          max_episode_steps=None)
rng = np.random.default_rng(0)
env.reset(seed=0)
imagination, heads = env.batch.imagination, env.batch.heads_history
real_step, real_predict, cache = imagination.step, heads.predict, {}
imagination.step = lambda ids, action, **kw: cache.setdefault("chunk", None) or cache.update(
    chunk=real_step(ids, action, **kw)) or cache["chunk"]
heads.predict = lambda *args: cache.setdefault("pred", None) or cache.update(pred=real_predict(*args)) or cache["pred"]


def actions():
    return rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)


env.step(actions())
start, steps = time.perf_counter(), 10
for _ in range(steps):
    env.step(actions())
print(f"N={n}: {1e3 * (time.perf_counter() - start) / steps:.1f} ms per step outside the model and the heads")
profile = cProfile.Profile()
profile.enable()
for _ in range(3):
    env.step(actions())
profile.disable()
pstats.Stats(profile).sort_stats("tottime").print_stats(8)
