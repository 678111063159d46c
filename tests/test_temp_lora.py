"""Temp-LoRA episodic memory: exact reset, merged == unmerged, rollback, variants, and memory that helps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from envs.synthetic import go_and_return_episode, loop_episode
from worldmodel.model import Chunk, SlowFastVGen
from worldmodel.memory import TempLoRA

STAY = {"text": "stay"}
MEMORY_STEPS, MEMORY_LR = 6, 2e-3


def _first(seed: int = 0) -> np.ndarray:
    return go_and_return_episode(seed, 1, frame_size=32, chunk_len=2)["frames"][:2]


def _real_chunk(model: SlowFastVGen, frames: torch.Tensor, start: int) -> Chunk:
    """A teacher-forced chunk: real frames [start-Tc, start + Tn) as if the model had generated them."""
    tc, tn = model.config.context_frames, model.config.new_frames
    window = frames[max(start - tc, 0) : start + tn]
    if window.shape[0] < tc + tn:
        window = torch.cat([window[:1].expand(tc + tn - window.shape[0], -1, -1, -1), window])
    with torch.no_grad():
        lat = model.encode_frames(window[None])
    return Chunk(window[None, tc:], lat, tc)


def _gen(model, memory=None, seed=0):
    return model.generate_chunk(_first(), STAY, generator=torch.Generator().manual_seed(seed), memory=memory).frames


def test_reset_restores_phi_exactly_and_merged_matches_unmerged():
    torch.manual_seed(0)
    model = SlowFastVGen.from_preset("tiny").eval()
    base = _gen(model)
    memory = TempLoRA(model, dataclasses.replace(model.config.temp_lora, merge_for_inference=False, lr=1e-2))
    assert torch.equal(_gen(model, memory), base), "Θ = 0 right after attaching"
    chunk = model.generate_chunk(_first(), STAY, generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        assert not memory.update(chunk)[0].rolled_back
    with memory.applied():
        unmerged = model.generate_latents(chunk.latents[:, :, :2], STAY, generator=torch.Generator().manual_seed(0))
    memory.config.merge_for_inference = True
    with memory.applied():
        merged = model.generate_latents(chunk.latents[:, :, :2], STAY, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(merged, unmerged, atol=1e-4, rtol=1e-4)
    assert not torch.equal(_gen(model, memory), base), "Θ changed the model"
    memory.set_enabled(False)
    assert torch.equal(_gen(model, memory), base), "disabled Θ is the base model"
    memory.set_enabled(True)
    memory.reset()
    assert torch.equal(_gen(model, memory), base), "reset() restores Φ exactly"


def test_non_finite_fast_loss_rolls_theta_back(caplog):
    torch.manual_seed(0)
    model = SlowFastVGen.from_preset("tiny").eval()
    memory = TempLoRA(model)
    chunk = model.generate_chunk(_first(), STAY)
    memory.update(chunk)
    good = [p.detach().clone() for p in memory.params]
    bad = Chunk(chunk.frames, torch.full_like(chunk.latents, float("nan")), chunk.num_context)
    [result] = memory.update(bad)
    assert result.rolled_back and result.steps == 0 and memory.rollbacks == [1]
    assert all(torch.equal(p, g) for p, g in zip(memory.params, good))
    assert "rolled back" in caplog.text
    exploding = Chunk(chunk.frames, chunk.latents * 1e4, chunk.num_context)
    for _ in range(3):
        memory.update(chunk)
    assert memory.update(exploding)[0].rolled_back


@pytest.mark.parametrize("variant, frames", [("local", 4), ("original", 2), ("full_sequence", 4)])
def test_variants_train_on_their_sequences(variant, frames):
    torch.manual_seed(0)
    model = SlowFastVGen.from_preset("tiny").eval()
    memory = TempLoRA(model, dataclasses.replace(model.config.temp_lora, variant=variant, max_history=3))
    chunk = model.generate_chunk(_first(), STAY)
    assert memory.training_sequence(chunk).shape[2] == frames
    for _ in range(5):
        assert np.isfinite(memory.update(chunk)[0].loss)
    if variant == "full_sequence":
        assert len(memory.history) == 3


def test_memory_reconstructs_revisited_frames_better(trained_tiny):
    """Pan round a wrapping world twice: on the second lap every chunk's input -> output pair was seen on
    the first, so Θ (trained on real chunks as they come) reconstructs the revisited frames, which the
    slow weights cannot know, with lower error."""
    model = SlowFastVGen.from_pretrained(trained_tiny[0])
    memory = TempLoRA(model, dataclasses.replace(model.config.temp_lora, steps=MEMORY_STEPS, lr=MEMORY_LR))
    errors = {True: [], False: []}
    for seed in range(100, 102):
        ep = loop_episode(seed, lap_chunks=6)
        frames, k = torch.from_numpy(ep["frames"]), len(ep["language"])
        for use_memory in (True, False):
            memory.reset()
            for c in range(k):
                start = 1 + 2 * c
                chunk = _real_chunk(model, frames, start)
                if c >= k // 2:  # second lap: compare generated frames with the real revisited ones
                    vec = np.asarray(ep["actions"][start - 1 : start + 1])
                    with memory.applied():
                        out = model.generate_latents(chunk.latents[:, :, :2],
                                                     {"text": ep["language"][c], "vector": vec},
                                                     generator=torch.Generator().manual_seed(c))
                    err = (model.decode_latents(out)[0].float() - frames[start : start + 2].float()).pow(2).mean()
                    errors[use_memory].append(float(err))
                if use_memory:
                    memory.update(chunk)
    with_mem, without = np.mean(errors[True]), np.mean(errors[False])
    assert with_mem < 0.95 * without, (with_mem, without)
