"""Masked conditional chunk diffusion: given frames stay clean, only the other frames are noised and scored.

The UNet input is the channel concatenation `[x, given latents, mask]` (2C + 1 channels): `x` holds the
noisy latents of frames to generate and the clean latents of given frames, the second group holds the
given latents (zeros elsewhere) and the mask channel is 1 on given frames.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .config import WorldModelConfig


def make_train_scheduler(config: WorldModelConfig) -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        prediction_type=config.prediction_type,
        clip_sample=False,
    )


def make_sampler(config: WorldModelConfig, train_scheduler: DDPMScheduler) -> SchedulerMixin:
    """A fresh few-step sampler (samplers keep per-run state, so one per generated chunk)."""
    if config.sampler == "ddim":
        return DDIMScheduler.from_config(train_scheduler.config, timestep_spacing="trailing")
    return DPMSolverMultistepScheduler.from_config(train_scheduler.config, timestep_spacing="trailing")


def unet_input(x: torch.Tensor, given: torch.Tensor, given_mask: torch.Tensor) -> torch.Tensor:
    """Build the (B, 2C+1, F, h, w) UNet input; x/given: (B, C, F, h, w), given_mask: (B, F) bool."""
    m = given_mask[:, None, :, None, None].to(x.dtype)
    x = torch.where(m.bool(), given, x)
    mask_channel = m.expand(-1, 1, -1, x.shape[-2], x.shape[-1])
    return torch.cat([x, given * m, mask_channel], dim=1)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, given_mask: torch.Tensor,
               per_sample: bool = False) -> torch.Tensor:
    """MSE over the frames to generate only: the prediction for given frames gets no gradient.

    `per_sample` returns (B,) losses, each the mean over that sample's frames to generate.
    """
    keep = (~given_mask)[:, None, :, None, None].to(torch.float32)
    dims = (1, 2, 3, 4) if per_sample else (0, 1, 2, 3, 4)
    denom = keep.sum(dim=dims) * pred.shape[1] * pred.shape[-2] * pred.shape[-1]
    if bool((denom == 0).any()):
        raise ValueError("masked_mse: every frame is given; there is nothing to score")
    return ((pred.float() - target.float()) ** 2 * keep).sum(dim=dims) / denom


def diffusion_loss(
    unet: torch.nn.Module,
    scheduler: DDPMScheduler,
    latents: torch.Tensor,
    given_mask: torch.Tensor,
    cond: torch.Tensor,
    noise: torch.Tensor | None = None,
    t: torch.Tensor | None = None,
    per_sample: bool = False,
) -> torch.Tensor:
    """One denoising-score-matching loss on latents (B, C, F, h, w) with the given frames held clean.

    Noise and timesteps are drawn from the global RNG unless given (per-env generators in batched envs).
    """
    b = latents.shape[0]
    noise = torch.randn_like(latents) if noise is None else noise
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), device=latents.device) if t is None else t
    noisy = scheduler.add_noise(latents, noise, t)
    pred = unet(unet_input(noisy, latents, given_mask), t, encoder_hidden_states=cond).sample
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, t)
    else:
        target = noise
    return masked_mse(pred, target, given_mask, per_sample)


def sample_new_frames(
    unet: torch.nn.Module,
    sampler: SchedulerMixin,
    context: torch.Tensor,
    num_new: int,
    cond: torch.Tensor,
    steps: int,
    null_cond: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Denoise `num_new` frames after clean context latents (B, C, Tc, h, w); returns (B, C, num_new, h, w).

    The initial noise is drawn with `generator` unless given (one draw per env in batched envs).
    """
    b, c, tc, h, w = context.shape
    if noise is None:
        noise = torch.randn((b, c, num_new, h, w), generator=generator, device=context.device, dtype=context.dtype)
    x = noise.to(context) * sampler.init_noise_sigma
    given = torch.cat([context, torch.zeros_like(x)], dim=2)
    given_mask = torch.zeros(b, tc + num_new, dtype=torch.bool, device=context.device)
    given_mask[:, :tc] = True
    use_cfg = null_cond is not None and guidance_scale != 1.0
    if use_cfg:
        given, given_mask, cond = given.repeat(2, 1, 1, 1, 1), given_mask.repeat(2, 1), torch.cat([cond, null_cond])
    sampler.set_timesteps(steps, device=context.device)
    for t in sampler.timesteps:
        xin = torch.cat([context, x], dim=2)
        if use_cfg:
            xin = xin.repeat(2, 1, 1, 1, 1)
        tt = t.expand(xin.shape[0]).to(context.device)
        pred = unet(unet_input(xin, given, given_mask), tt, encoder_hidden_states=cond).sample[:, :, tc:]
        if use_cfg:
            p_cond, p_null = pred.chunk(2)
            pred = p_null + guidance_scale * (p_cond - p_null)
        x = sampler.step(pred, t, x).prev_sample  # DDIM (eta=0) and DPM-Solver steps are deterministic
    return x
