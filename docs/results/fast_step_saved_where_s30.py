"""Where a fast step's saved activations live, Φ frozen (session 30): bytes autograd saves for the backward of one
env's fast update, by the innermost UNet module running when each was saved (its class) and by UNet block.

    python docs/results/fast_step_saved_where_s30.py     # the shipped default, CPU, fp32, 1 env, 2 denoising steps

Output: docs/results/fast_step_saved_where_s30_cpu.txt. A Temp-LoRA layer's own saves (its input x and x A, for Θ's
gradient) run in the layer's forward hook, after the layer has left the module stack: they count for its parent
(Attention for to_q/to_k/to_v/to_out.0, FeedForward for ff.net.2, GEGLU for ff.net.0.proj, Transformer2DModel for
proj_in/proj_out).
"""
import collections
import sys

import numpy as np
import torch

sys.path.insert(0, ".")
from worldmodel.imagination import Imagination  # noqa: E402
from worldmodel.loading import load_model  # noqa: E402
from worldmodel.memory.batched_lora import BatchedTempLoRA  # noqa: E402

torch.set_num_threads(2)
model, _ = load_model("default", device="cpu")
running: list[tuple[str, str]] = []  # (module name, class) of the modules whose forward is under way
for name, module in model.unet.named_modules():
    module.register_forward_pre_hook(lambda m, a, name=name: running.append((name, type(m).__name__)) and None)
    module.register_forward_hook(lambda m, a, o: running.pop() and None)
core = Imagination(model, 1, BatchedTempLoRA(model, 1), denoise_steps=2)  # after: its hooks run after ours
core.reset(None, np.zeros((1, 1, 64, 64, 3), np.uint8), seeds=[0])
weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
by_class, by_block, seen = collections.Counter(), collections.Counter(), set()


def pack(t: torch.Tensor) -> torch.Tensor:
    storage = t.untyped_storage()
    if storage.data_ptr() not in weights and storage.data_ptr() not in seen:
        seen.add(storage.data_ptr())
        name, kind = running[-1] if running else ("(outside the UNet)", "(outside the UNet)")
        by_class[kind] += storage.nbytes()
        by_block[".".join(name.split(".")[:2])] += storage.nbytes()
    return t


with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
    core.step(None, {"text": ["open the drawer"], "vector": torch.zeros(1, 4, 5)})
total = sum(by_class.values())
print(f"saved for the fast step's backward, 1 env: {total / 2**20:.1f} MiB")
for title, counts in (("by module class", by_class), ("by UNet block", by_block)):
    print(title)
    for key, value in counts.most_common():
        print(f"  {key:28s} {value / 2**20:7.1f} MiB {100 * value / total:5.1f}%")
