"""Temp-LoRA must store what it is shown: tests that fail when the memory breaks.

Each test names the mutation it guards against: a fast update that never steps, a batched Adam step
that never writes Θ, a Θ that is never applied at sampling, and per-step copies in the history.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from worldmodel import BatchedTempLoRA, Chunk, Imagination, TempLoRA
from worldmodel.diffusion import diffusion_loss
from worldmodel.memory.rule import draw_loss_noise

FAST_LORA = dict(rank=2, alpha=4.0, lr=1e-2)


@pytest.fixture(scope="module")
def model(micro_model):
    return micro_model(temp_lora=FAST_LORA)


def _chunk(n: int = 1, seed: int = 0) -> Chunk:
    g = torch.Generator().manual_seed(seed)
    return Chunk(torch.zeros(n, 2, 16, 16, 3, dtype=torch.uint8), torch.randn(n, 4, 4, 8, 8, generator=g), 2)


def _probe_loss(model, chunk: Chunk, draws: int = 8) -> float:
    """The fast objective on fixed (noise, t) draws: what Θ should lower on a chunk it learned."""
    g = torch.Generator().manual_seed(123)
    given = torch.zeros(1, 4, dtype=torch.bool)
    given[:, :2] = True
    null = model.action_encoder.null(1)
    total = 0.0
    with torch.no_grad():
        for _ in range(draws):
            noise, t = draw_loss_noise(chunk.latents.shape[1:], g, model.scheduler.config.num_train_timesteps)
            total += float(diffusion_loss(model.unet, model.scheduler, chunk.latents[:1], given, null, noise[None], t))
    return total / draws


def test_peft_fast_updates_lower_the_loss_on_a_repeated_chunk(micro_model):
    """Guards: TempLoRA.update never stepping (Θ would stay 0 and the loss flat)."""
    model = micro_model(temp_lora=FAST_LORA)
    memory = TempLoRA(model, dataclasses.replace(model.config.temp_lora, merge_for_inference=False))
    chunk = _chunk()
    before = _probe_loss(model, chunk)
    torch.manual_seed(0)
    for _ in range(12):
        [update] = memory.update(chunk)
        assert update.steps == 1 and not update.rolled_back
    after = _probe_loss(model, chunk)
    assert after < 0.95 * before, (before, after)  # a never-stepping update leaves it equal
    memory.set_enabled(False)
    assert _probe_loss(model, chunk) == pytest.approx(before)  # Θ off: Φ exactly


def test_batched_fast_updates_write_theta_and_lower_the_loss(model):
    """Guards: the batched Adam step never writing Θ (env 0 learns; env 1, never updated, stays Φ)."""
    memory = BatchedTempLoRA(model, 2)
    memory.reset(generators=[torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)])
    chunk = _chunk()
    with memory.applied([0]):
        before = _probe_loss(model, chunk)
    start = memory.theta.detach().clone()
    for _ in range(12):
        [update] = memory.update(chunk, ids=[0], generators=[torch.Generator().manual_seed(2)])
        assert update.steps == 1 and not update.rolled_back
    assert not torch.equal(memory.theta[0], start[0]) and torch.equal(memory.theta[1], start[1])
    with memory.applied([0]):
        after = _probe_loss(model, chunk)
    assert after < 0.95 * before, (before, after)  # a never-stepping update leaves it equal


def test_theta_is_applied_when_sampling(model):
    """Guards: a memory whose Θ is never applied in the denoiser (learned, yet the video is Φ's)."""
    start = np.random.default_rng(0).integers(0, 256, (2, 1, 16, 16, 3), dtype=np.uint8)
    start[1] = start[0]
    core = Imagination(model, 2, BatchedTempLoRA(model, 2), denoise_steps=2)
    core.reset(None, start, seeds=[3, 3])  # two identical episodes
    for _ in range(4):  # only env 0's Θ learns (from a chunk of its own)
        core.memory.update(_chunk(seed=4), ids=[0], generators=[torch.Generator().manual_seed(5)])
    action = {"text": ["stay"] * 2, "vector": torch.zeros(2, 2, 5)}
    chunk = core.step(None, action, learn=False)
    assert not torch.equal(chunk.frames[0], chunk.frames[1]), "Θ of env 0 did not change its video"
    core.memory.set_enabled(False)
    core.reset(None, start, seeds=[3, 3], forget=False)
    plain = core.step(None, action, learn=False)
    assert torch.equal(plain.frames[0], plain.frames[1])  # without Θ the two episodes are the same


@pytest.mark.parametrize("memory_kind", ["peft", "batched"])
def test_history_holds_each_chunk_once(micro_model, memory_kind):
    """Guards: the full_sequence history gaining a copy of the chunk per fast step (3 chunks x 5 steps
    must give 3 entries, not 15)."""
    model = micro_model(temp_lora=dict(FAST_LORA, variant="full_sequence", steps=5, max_history=16))
    memory = TempLoRA(model) if memory_kind == "peft" else BatchedTempLoRA(model, 1)
    for seed in range(3):
        memory.update(_chunk(seed=seed), **({} if memory_kind == "peft" else {"generators": [None]}))
    history = memory.history if memory_kind == "peft" else memory.history[0]
    assert len(history) == 3
