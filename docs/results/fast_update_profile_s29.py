"""Session 29 probe (docs/RESULTS.md, "The session-29 lease"): where the fast update's time goes at N envs
(eager, bf16 on the GPU, 2 denoising steps), by torch.profiler ranges around its parts.

    python docs/results/fast_update_profile_s29.py [N=256] [FAST_BATCH=128] [DEVICE=cuda]
"""
import sys
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile, record_function

import worldmodel.memory.batched_lora as bl
import worldmodel.memory.rule as rule
from envs.world_model_env import WorldModelVectorEnv
from worldmodel.loading import load_model

N = int(sys.argv[1]) if len(sys.argv) > 1 else 256
FB = int(sys.argv[2]) if len(sys.argv) > 2 else 128
DEV = sys.argv[3] if len(sys.argv) > 3 else "cuda"
sync = torch.cuda.synchronize if DEV == "cuda" else (lambda: None)


def wrap(owner, name, label):
    fn = getattr(owner, name)

    def inner(*a, **k):
        with record_function(label):
            return fn(*a, **k)
    setattr(owner, name, inner)


wrap(rule, "fast_batch", "fu.fast_batch")
wrap(rule, "rolls_back", "fu.rolls_back")
wrap(rule, "record", "fu.record")
wrap(rule, "remember", "fu.remember")
wrap(bl, "diffusion_loss", "fu.forward_loss")
wrap(torch.autograd, "grad", "fu.backward")
wrap(bl.BatchedTempLoRA, "_adam", "fu.adam")
wrap(bl.BatchedTempLoRA, "update", "fu.update_total")

model, _ = load_model("worldmodel/weights/default", DEV, shared=True)
wrap(model, "generate_latents", "denoise_total")
venv = WorldModelVectorEnv(num_envs=N, model=model, action_mode="skill", denoise_steps=2, max_episode_steps=None,
                           precision="bf16" if DEV == "cuda" else "fp32", fast_batch_size=FB)
venv.batch.imagination.sync_timings = True
venv.reset(seed=0)
rng = np.random.default_rng(0)
for _ in range(3):
    venv.step(rng.integers(10, size=N))
sync()
t0 = time.perf_counter()
for _ in range(4):
    out = venv.step(rng.integers(10, size=N))
sync()
print(f"N={N} fast batch {FB}: {(time.perf_counter() - t0) / 4:.3f} s/step; phases", out[4]["timings"][0].as_dict())
with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEV == "cuda" else [])) as prof:
    for _ in range(2):
        venv.step(rng.integers(10, size=N))
    sync()
ka = prof.key_averages()
print("ranges (ms over 2 steps): cpu total, device total")
for e in sorted(ka, key=lambda e: e.key):
    if e.key.startswith("fu.") or e.key.startswith("denoise"):
        print(f"  {e.key:20s} calls {e.count:5d} cpu {e.cpu_time_total / 1e3:9.1f} device "
              f"{getattr(e, 'device_time_total', getattr(e, 'cuda_time_total', 0)) / 1e3:9.1f}")
print(ka.table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=60))
print(ka.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60))
