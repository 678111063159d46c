"""Few-step distillation (issue 16): the student walks DDIM's path; its one pass comes to sample the teacher's four."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Subset

from worldmodel.diffusion import make_sampler, pass_target, sample_new_frames
from worldmodel.distill import SamplerDistillation, path_point
from worldmodel.latent_cache import LatentCache, encode_cached_action
from worldmodel.model import SlowFastVGen
from worldmodel.train import Trainer, TrainConfig


def _cfg(out, steps: int, **kw) -> TrainConfig:
    base = dict(phase="distill", steps=steps, batch_size=8, lr=1e-3, teacher_steps=4, log_every=4, checkpoint_every=100,
                latent_cache=True, ema_decay=0.0, out_dir=str(out))
    return TrainConfig(**{**base, **kw})


def test_the_students_passes_walk_ddims_path():
    """Pass 0 sees the initial noise and is scored as `pass_target` scores it; DDIM's step from there with that
    prediction lands on the path's next point: the student is trained where its own sampler will take it."""
    model = SlowFastVGen.from_preset("tiny")
    sampler = make_sampler(model.config, model.scheduler)
    sampler.set_timesteps(2)
    t0, t1 = sampler.timesteps.long()
    alphas = model.scheduler.alphas_cumprod.float()
    g = torch.Generator().manual_seed(0)
    noise, x0 = torch.randn(3, 4, 2, 8, 8, generator=g), torch.randn(3, 4, 2, 8, 8, generator=g)
    first = t0.view(1)
    noisy0, target0 = path_point(noise, x0, t0.repeat(3), first, alphas, model.config.prediction_type)
    torch.testing.assert_close(noisy0, noise, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(target0, pass_target(model.scheduler, noise, x0, t0), rtol=1e-4, atol=1e-4)
    stepped = sampler.step(target0, t0, noise).prev_sample
    noisy1, target1 = path_point(noise, x0, t1.repeat(3), first, alphas, model.config.prediction_type)
    torch.testing.assert_close(stepped, noisy1, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(sampler.step(target1, t1, noisy1).prev_sample, x0, rtol=1e-4, atol=1e-4)


def _one_step_gap(model: SlowFastVGen, cache: LatentCache, target: torch.Tensor, noise: torch.Tensor) -> float:
    """Mean squared distance of the model's 1-pass sample from ``target`` (the teacher's 4-pass sample)."""
    b, tc = cache.batch(torch.arange(noise.shape[0])), model.config.context_frames
    with torch.no_grad():
        cond = encode_cached_action(model.action_encoder, b.text_emb, b.vectors, None, noise.shape[0])
        one = sample_new_frames(model.unet, make_sampler(model.config, model.scheduler), b.latents[:, :, :tc],
                                noise.shape[2], cond, 1, noise=noise)
    return float(((one - target) ** 2).mean())


@pytest.mark.parametrize("student_steps, steps", [(1, 28), (2, 40)])  # after / before: 0.38 / 0.42 (CPU)
def test_distilled_one_pass_samples_what_the_teacher_samples_in_four(tmp_path, trained_tiny, chunk_dataset,
                                                                      student_steps, steps):
    """A student of 1 pass, and one of 2 (whose first pass at t = 999 has the 1-pass student's target: both walk one
    path from the noise, session 43), come to sample at one pass what the teacher samples in four."""
    model = SlowFastVGen.from_pretrained(trained_tiny[0])
    teacher = {k: v.clone() for k, v in model.unet.state_dict().items()}
    windows = Subset(chunk_dataset, range(0, len(chunk_dataset), max(1, len(chunk_dataset) // 48)))
    cache = LatentCache.build(model, Subset(windows, range(16)), "cpu", batch_size=16)
    tc = model.config.context_frames
    noise = torch.randn(cache.batch(torch.arange(16)).latents[:, :, tc:].shape,
                        generator=torch.Generator().manual_seed(1))
    reference = SamplerDistillation(model, 4, 1)
    b = cache.batch(torch.arange(16))
    four = reference.teacher_sample(b.latents[:, :, :tc], b.text_emb, b.vectors, noise)
    before = _one_step_gap(model, cache, four, noise)

    trainer = Trainer(model, windows, _cfg(tmp_path, steps, student_steps=student_steps))
    history = trainer.fit(progress=False)
    after = _one_step_gap(model, cache, four, noise)
    assert after < 0.5 * before, (before, after, history)
    assert model.config.sample_steps == student_steps  # the saved model samples as it was distilled
    assert model.config.distilled_from == 4  # and says from how many passes
    assert model.config.temp_lora.timesteps == 4  # and its fast steps learn on the teacher's passes
    for k, v in trainer.distillation.teacher_unet.state_dict().items():  # the teacher stays the model it started as
        torch.testing.assert_close(v, teacher[k])
    assert all(p.grad is None for p in trainer.distillation.teacher_unet.parameters())


@pytest.mark.parametrize("bad, match", [
    (dict(student_steps=4), "fewer than teacher_steps"),
    (dict(latent_cache=False), "latent cache"),
    (dict(teacher_steps=0), "teacher_steps must be an integer"),
])
def test_bad_distill_settings_are_named(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        _cfg(tmp_path, 1, **bad)


@pytest.mark.parametrize("phase", ["slow", "slow_fast", "distill"])
def test_a_distilled_student_is_not_trained_as_a_teacher_unless_asked(tmp_path, chunk_dataset, phase):
    """A student (``distilled_from`` set) is refused by the phases that would distil it again or train it back with the
    diffusion loss, naming why; ``from_student`` lets it through, and the VAE phase does not care."""
    model = SlowFastVGen.from_preset("tiny")
    model.config.distilled_from, model.config.sample_steps = 4, 1
    with pytest.raises(ValueError, match="student distilled from 4 passes to 1"):
        Trainer(model, chunk_dataset, _cfg(tmp_path / "refused", 1, phase=phase))
    Trainer(model, chunk_dataset, _cfg(tmp_path / "asked", 1, phase=phase, from_student=True))
    Trainer(model, chunk_dataset, _cfg(tmp_path / "vae", 1, phase="vae"))
