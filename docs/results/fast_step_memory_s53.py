"""The default's first vector-env step with Temp-LoRA at 16 envs on the CPU, one fast step of all 16: how much the
process's peak memory grows over the step (ru_maxrss after the step minus before), with the fast step's adapted
blocks recomputed layer by layer (the code since session 53), as whole blocks (the code before) or not at all, and
with Temp-LoRA off. Session 53 (docs/RESULTS.md):

    python docs/results/fast_step_memory_s53.py {layers,blocks,none,off} [envs]

One process per run: ru_maxrss is a high-water mark.
"""

import json
import resource
import sys
import time

import torch

from envs.world_model_env import WorldModelVectorEnv
from worldmodel.memory import batched_lora

mode = sys.argv[1]
envs = int(sys.argv[2]) if len(sys.argv) > 2 else 16
if mode not in ("layers", "blocks", "none", "off"):
    raise SystemExit(f"mode must be layers, blocks, none or off, got {mode!r}")
if mode == "blocks":
    batched_lora._recompute_units = lambda blocks: list(blocks)
torch.set_num_threads(1)
venv = WorldModelVectorEnv(num_envs=envs, model="default", action_mode="skill", denoise_steps=1,
                           temp_lora=mode != "off", max_episode_steps=None, fast_batch_size=envs,
                           fast_recompute=mode in ("layers", "blocks"), cpu_threads=1)
venv.reset(seed=0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
info = venv.step(venv.action_space.sample())[4]
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
phases = info["timings"][0].as_dict()
print(json.dumps({"mode": mode, "envs": envs, "peak_growth_mib": round(grown / 1024), "step_s": round(
    time.perf_counter() - start, 2), "fast_update_s": round(phases["fast_update"], 2)}))
