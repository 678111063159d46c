"""Why Θ's step on the sampler's first pass learns nothing at one denoising pass (session 48, issue 16).

    PYTHONPATH=. python docs/results/one_pass_target_s48.py

The shipped default draws chunks in the vector env (2 envs, 3 chunks, Temp-LoRA off, fp32, CPU) at 1 and 2 passes;
each first pass's prediction is scored against what it should have predicted for the chunk the sampler returned
(`diffusion.pass_target`), the loss the reused pass (`reuse_sampler_pass`) takes its step on. At one pass the chunk
is that prediction's own DDIM result, so the loss is 0 up to rounding; at two it is the first pass against the second.
"""

import contextlib

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers SlowFastVGen-v0)
from worldmodel.diffusion import pass_target
from worldmodel.loading import load_model


class FirstPass:
    """`SamplerPasses` that keeps the first pass's prediction, input and timestep."""

    def around(self, index):
        return contextlib.nullcontext()

    def keep(self, index, prediction, noisy, t):
        if index == 0:
            self.prediction, self.noisy, self.t = prediction.detach(), noisy.detach(), t


model, _ = load_model("default", device="cpu")
generate, losses = model.generate_latents, []


def recording(*args, passes=None, **kwargs):
    first = FirstPass()
    new = generate(*args, passes=first, **kwargs)
    target = pass_target(model.scheduler, first.noisy.float(), new.float(), first.t)
    losses.append(((first.prediction.float() - target) ** 2).flatten(1).mean(1).tolist())
    return new


model.generate_latents = recording
for passes in (1, 2):
    losses.clear()
    env = gym.make_vec("SlowFastVGen-v0", num_envs=2, vectorization_mode="vector_entry_point", model=model,
                       temp_lora=False, denoise_steps=passes, device="cpu")
    env.reset(seed=3)
    for k in range(3):
        env.step(np.array([1, 2]))
    env.close()
    print(f"{passes} pass(es): first-pass loss against the returned chunk, per chunk and env: {losses}")
