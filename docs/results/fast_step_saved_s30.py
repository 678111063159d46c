"""What a fast step keeps for its backward, Φ frozen for it (`rule.phi_frozen`, session 30) or not (as before).

    python docs/results/fast_step_saved_s30.py [N ...]      # the shipped default, CPU, fp32, 2 threads

For each N (envs, one `Imagination` step each: 2 denoising steps, then one batched fast update of all N envs): the
bytes autograd saves for the backward (saved_tensors_hooks; distinct storages, weights not counted), the step's
seconds, and whether Θ comes out the same. Output: docs/results/fast_step_saved_s30_cpu.txt.
"""
import contextlib
import sys
import time

import numpy as np
import torch

sys.path.insert(0, ".")
from worldmodel.imagination import Imagination  # noqa: E402
from worldmodel.loading import load_model  # noqa: E402
from worldmodel.memory import rule  # noqa: E402
from worldmodel.memory.batched_lora import BatchedTempLoRA  # noqa: E402

torch.set_num_threads(2)
model, _ = load_model("default", device="cpu")
phi = {p.untyped_storage().data_ptr() for p in model.parameters()}
freeze = rule.phi_frozen
print(f"Φ requires grad as loaded: {all(p.requires_grad for p in model.unet.parameters())}")
for n in [int(a) for a in sys.argv[1:]] or [1, 4, 8]:
    thetas = {}
    for mode in ("Φ trainable (before)", "Φ frozen (phi_frozen)"):
        rule.phi_frozen = freeze if "frozen" in mode else (lambda unet, keep=(): contextlib.nullcontext())
        core = Imagination(model, n, BatchedTempLoRA(model, n), denoise_steps=2)
        core.reset(None, np.random.default_rng(0).integers(0, 256, (n, 1, 64, 64, 3), dtype=np.uint8),
                   seeds=list(range(n)))
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            s = t.untyped_storage()
            if s.data_ptr() not in phi:
                storages[s.data_ptr()] = s.nbytes()
            return t

        start = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            core.step(None, {"text": ["open the drawer"] * n, "vector": torch.zeros(n, 4, 5)})
        seconds = time.perf_counter() - start
        thetas[mode] = core.memory.theta.clone()
        print(f"N={n:3d} {mode:24s} saved for the backward {sum(storages.values()) / 2**20:8.1f} MiB "
              f"({sum(storages.values()) / 2**20 / n:6.1f} per env), step {seconds:5.2f} s (with the hooks)")
    a, b = thetas.values()
    print(f"N={n:3d} Θ the same: {torch.equal(a, b)}")
rule.phi_frozen = freeze
