"""Masked conditional chunk diffusion: given frames stay clean, only the other frames are noised and scored.

The UNet input is the channel concatenation `[x, given latents, mask]` (2C + 1 channels): `x` holds the
noisy latents of frames to generate and the clean latents of given frames, the second group holds the
given latents (zeros elsewhere) and the mask channel is 1 on given frames.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

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
               per_sample: bool = False, weights: torch.Tensor | None = None) -> torch.Tensor:
    """MSE over the frames to generate only: the prediction for given frames gets no gradient.

    `per_sample` returns (B,) losses, each the mean over that sample's frames to generate. `weights`
    (broadcastable to `pred`, e.g. `object_loss_weights`' (B, 1, 1, h, w)) makes it the weighted mean
    sum(weight * err^2) / sum(weight) over those frames; None is the plain mean, computed as it always was.
    """
    keep = (~given_mask)[:, None, :, None, None].to(torch.float32)
    dims = (1, 2, 3, 4) if per_sample else (0, 1, 2, 3, 4)
    if weights is None:
        denom = keep.sum(dim=dims) * pred.shape[1] * pred.shape[-2] * pred.shape[-1]
        if bool((denom == 0).any()):
            raise ValueError("masked_mse: every frame is given; there is nothing to score")
        return ((pred.float() - target.float()) ** 2 * keep).sum(dim=dims) / denom
    weighted_keep = (keep * weights.float()).expand(pred.shape)
    denom = weighted_keep.sum(dim=dims)
    if bool((denom == 0).any()):
        raise ValueError("masked_mse: every frame is given or weighted 0; there is nothing to score")
    return ((pred.float() - target.float()) ** 2 * weighted_keep).sum(dim=dims) / denom


def new_frames_error(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The mean squared error of new-frame predictions (B, C, Tn, h, w), or with ``weights`` ((B, 1, 1, h, w),
    `object_loss_weights`) the weighted mean sum(weight * err^2) / sum(weight), as `masked_mse` computes them but
    without its data-dependent check: the form `torch.compile` traces (the cached slow step, distillation)."""
    err = (pred.float() - target.float()) ** 2
    if weights is None:
        return err.mean()
    weights = weights.float().expand(err.shape)
    return (err * weights).sum() / weights.sum()


def object_loss_weights(object_pixels: torch.Tensor, frame_width: torch.Tensor | float, latent_size: int,
                        new_frames: int, weight: float, radius: int) -> torch.Tensor:
    """Loss weights (B, 1, 1, h, w): 1 + `weight` on the latent cells along the cube's path, 1 elsewhere.

    Why: the cube the OGBench tasks move is ~3 px of a 64 px frame, a cell or two of the 16x16 latents,
    so a plain mean over all cells barely scores where generated frames put it. The cells within
    `radius` (Chebyshev distance, in latent cells) of the cube in the window's last context frame or in
    any new frame where the cube is seen (visible > 0) get the extra weight, in every new frame and
    channel, so the loss scores both where the cube was and where it went.

    `object_pixels`: (B, F, 3) per-frame (x, y, visible) of the window's frames (context first, then the
    `new_frames` new frames; only the last new_frames + 1 rows are read), x = column, y = row in pixels of
    frames `frame_width` wide ((B,) or a number); cell = floor(coord * latent_size / frame_width). A
    window without a record (NaN coordinates, visible 0) gets weight 1 everywhere. Pure tensor code with
    no data-dependent branching: the cached training step and the eager loss build the same map.
    """
    if weight < 0 or radius < 0:
        raise ValueError(f"object_loss_weights: weight ({weight}) and radius ({radius}) must be >= 0")
    if object_pixels.ndim != 3 or object_pixels.shape[-1] != 3 or object_pixels.shape[1] < new_frames + 1:
        raise ValueError(f"object_loss_weights: object_pixels must be (B, F >= {new_frames + 1}, 3) "
                         f"(x, y, visible per frame), got {tuple(object_pixels.shape)}")
    rec = object_pixels[:, -(new_frames + 1):].float()
    x, y, visible = rec.unbind(-1)  # (B, F)
    width = torch.as_tensor(frame_width, device=rec.device).float().reshape(-1, 1)
    cx, cy = torch.floor(x * latent_size / width), torch.floor(y * latent_size / width)
    cells = torch.arange(latent_size, device=rec.device, dtype=torch.float32)
    near_x = (cells - cx[..., None]).abs() <= radius  # (B, F, w); False for NaN coordinates
    near_y = (cells - cy[..., None]).abs() <= radius  # (B, F, h)
    seen = (visible > 0)[..., None, None]  # False for NaN too
    near = (near_y[..., :, None] & near_x[..., None, :] & seen).any(dim=1)  # (B, h, w)
    return (1.0 + weight * near.float())[:, None, None]


def revisit_chunks(visible: torch.Tensor, start: int, context_frames: int, new_frames: int) -> torch.Tensor:
    """(B,) bool: which episodes' chunk at frame `start` brings the cube back, the chunk memory has to draw.

    `visible`: (B, F) the cube's visibility per frame of an episode run (the ``cube_pixel`` record's third
    column, > 0 seen). A chunk (context frames `start` .. `start + context_frames`, then `new_frames` new ones)
    is a revisit when the cube was seen before its context, is hidden in every context frame, and is seen in
    a new frame: at a drawer's reopen nothing the model is given shows the cube, so only what Θ stored can.
    (An arm covering the cube for a whole context counts too: the cube's colour is then also out of context.)
    """
    if visible.ndim != 2 or visible.shape[1] < start + context_frames + new_frames or start < 0:
        raise ValueError(f"revisit_chunks: visible must be (B, F >= {start + context_frames + new_frames}) for a "
                         f"chunk at frame {start}, got {tuple(visible.shape)}")
    seen = visible > 0
    before = seen[:, :start].any(dim=1) if start > 0 else torch.zeros_like(seen[:, 0])
    context = seen[:, start : start + context_frames].any(dim=1)
    new = seen[:, start + context_frames : start + context_frames + new_frames].any(dim=1)
    return before & ~context & new


def diffusion_loss(
    unet: torch.nn.Module,
    scheduler: DDPMScheduler,
    latents: torch.Tensor,
    given_mask: torch.Tensor,
    cond: torch.Tensor,
    noise: torch.Tensor | None = None,
    t: torch.Tensor | None = None,
    per_sample: bool = False,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """One denoising-score-matching loss on latents (B, C, F, h, w) with the given frames held clean.

    Noise and timesteps are drawn from the global RNG unless given (per-env generators in batched envs).
    `weights`: per-cell loss weights for `masked_mse` (`object_loss_weights`), None for the plain mean.
    """
    b = latents.shape[0]
    noise = torch.randn_like(latents) if noise is None else noise
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), device=latents.device) if t is None else t
    pred, target = denoising_prediction(unet, scheduler, latents, given_mask, cond, noise, t)
    return masked_mse(pred, target, given_mask, per_sample, weights)


def denoising_prediction(unet: torch.nn.Module, scheduler: DDPMScheduler, latents: torch.Tensor,
                         given_mask: torch.Tensor, cond: torch.Tensor, noise: torch.Tensor,
                         t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The UNet's prediction on latents noised with ``noise`` at ``t`` (the given frames held clean) and its target
    (the velocity under v-prediction, else the noise): what `diffusion_loss` scores, for callers that score one
    prediction several ways (`experiments.loss_check`)."""
    noisy = scheduler.add_noise(latents, noise, t)
    pred = unet(unet_input(noisy, latents, given_mask), t, encoder_hidden_states=cond).sample
    target = scheduler.get_velocity(latents, noise, t) if scheduler.config.prediction_type == "v_prediction" else noise
    return pred, target


def pass_target(scheduler: DDPMScheduler, noisy: torch.Tensor, clean: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What a denoising pass at timestep ``t`` on ``noisy`` latents should have predicted for ``clean`` ones: the noise
    that takes ``clean`` to ``noisy`` at t, or under v-prediction its velocity (from which the sampler's x0 estimate
    is exactly ``clean``). For the sampler's first pass, whose input is its initial noise, this scores a chunk (the
    generated one or the real one) the way `diffusion_loss` scores a fresh draw."""
    alpha = scheduler.alphas_cumprod.to(noisy.device)[t.long()].to(noisy.dtype)
    noise = (noisy - alpha.sqrt() * clean) / (1 - alpha).sqrt()
    if scheduler.config.prediction_type == "v_prediction":
        return alpha.sqrt() * noise - (1 - alpha).sqrt() * clean
    return noise


class SamplerPasses(Protocol):
    """What `sample_new_frames` lets a caller do around its denoising passes (`BatchedTempLoRA.reused_pass`):
    run pass ``index`` inside ``around(index)`` and see its prediction of the new latents, its input and t."""

    def around(self, index: int) -> contextlib.AbstractContextManager: ...

    def keep(self, index: int, prediction: torch.Tensor, noisy: torch.Tensor, t: torch.Tensor) -> None: ...


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
    passes: SamplerPasses | None = None,
) -> torch.Tensor:
    """Denoise `num_new` frames after clean context latents (B, C, Tc, h, w); returns (B, C, num_new, h, w).

    The initial noise is drawn with `generator` unless given (one draw per env in batched envs). ``passes``: each
    denoising pass runs inside ``passes.around(i)``, and its prediction (after guidance) goes to ``passes.keep``.
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
    for index, t in enumerate(sampler.timesteps):
        xin = torch.cat([context, x], dim=2)
        if use_cfg:
            xin = xin.repeat(2, 1, 1, 1, 1)
        tt = t.expand(xin.shape[0]).to(context.device)
        with passes.around(index) if passes is not None else contextlib.nullcontext():
            pred = unet(unet_input(xin, given, given_mask), tt, encoder_hidden_states=cond).sample[:, :, tc:]
            if use_cfg:
                p_cond, p_null = pred.chunk(2)
                pred = p_null + guidance_scale * (p_cond - p_null)
        if passes is not None:
            passes.keep(index, pred, x, t)
        x = sampler.step(pred.detach(), t, x).prev_sample  # DDIM (eta=0) and DPM-Solver steps are deterministic
    return x
