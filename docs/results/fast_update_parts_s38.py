"""Where the usual fast step's time goes on the CPU (issue 16, session 38): the shipped default, one env, 2 bf16
denoising steps, 2 threads; the fast update's parts (its forward and loss, the backward, Adam) timed by wrapping them,
mean over 4 chunks after 2 warm-up chunks. `PYTHONPATH=. python docs/results/fast_update_parts_s38.py`"""
import time

import numpy as np
import torch

from worldmodel.imagination import Imagination
from worldmodel.loading import load_model
from worldmodel.memory import BatchedTempLoRA
from worldmodel.memory import batched_lora

torch.set_num_threads(2)
model = load_model("default", "cpu")[0]
memory = BatchedTempLoRA(model, 1)
core = Imagination(model, 1, memory, denoise_steps=2, precision="bf16")
core.reset([0], [np.zeros((4, 64, 64, 3), np.uint8)], seeds=[0])
spent: dict[str, float] = {}


def timed(name, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
        return out
    return wrapper


batched_lora.diffusion_loss = timed("forward and loss", batched_lora.diffusion_loss)
torch.autograd.grad = timed("backward", torch.autograd.grad)
memory._adam = timed("Adam", memory._adam)
memory._learn = timed("whole fast update", memory._learn)
phases = []
for i in range(6):
    if i == 2:
        spent.clear()
    chunk = core.step([0], ["open the drawer"])
    if i >= 2:
        phases.append(chunk.timings)
print({k: f"{v / 4 * 1000:.1f} ms" for k, v in spent.items()})
print({k: f"{np.mean([p[k] for p in phases]):.3f} s" for k in phases[0]})
