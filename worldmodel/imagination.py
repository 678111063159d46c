"""The one chunk loop: N imagined episodes advanced together, each with its own context, RNG and memory.

Every chunk that the project generates goes through `Imagination.step`: the model's `rollout` and
`generate_chunk`, the Gymnasium env (`envs.world_model_env`) and evaluation (`evaluation.rollout`).
One step, for the envs ``ids``:

1. draw each env's initial noise from its own generator (so env i's video does not depend on which
   other envs share the batch);
2. denoise the new frames after each env's context latents, with each env's Θ applied (the memory's
   ``applied(ids)``) and the model's sampler (`SlowFastVGen.generate_latents`: action encoding,
   classifier-free guidance);
3. decode them to uint8 frames;
4. fast-learn each env's Θ on the chunk (the memory's ``update``): the generated chunk, or with
   ``teacher_frames`` the real one (real context + true new frames), as an agent learns from what it
   observes; the chunk is always generated before its real frames reach the memory. With the memory's
   ``reuse_sampler_pass`` the first denoising pass of step 2 runs with Θ's gradient kept and the fast step is
   scored on it (`BatchedTempLoRA.reused_pass`): no forward of its own (at one pass, on a generated chunk, the
   usual step: there the pass's prediction is the chunk itself and its loss exactly 0);
5. slide each env's context to the last ``context_frames`` latents of the chunk it learned from.

`fork(src_ids, dst_ids)` copies imagined states (context latents, Θ rows, optimizer state, recent
losses, RNG state) so a planner can branch: the same actions then give the same chunks on both branches.
The core holds no observations, instructions or rewards: that bookkeeping is the env's.

``precision="bf16"`` runs the three phases (denoise, decode, fast update) under bf16 autocast: the
weights, Θ, its Adam state and the context latents stay float32, so only the arithmetic is rounded.
On a CPU with native bf16 (AVX512-BF16 / AMX) a denoising pass of the shipped default took ~0.6x the
float32 time; ``"fp32"`` (the default) keeps results independent of the batch composition, which the
exactness tests (vector env == N single envs) rely on. ``"auto"`` is bf16 where the device has native
bf16 arithmetic, else fp32.
"""

from __future__ import annotations

import contextlib
import functools
import time
from typing import Any, Sequence

import numpy as np
import torch

from .chunk import Chunk, frames_to_tensor, pad_context
from .memory.rule import EpisodicMemory, check_fork, check_ids


PRECISIONS = ("fp32", "bf16", "auto")


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX-BF16 in /proc/cpuinfo's flags);
    without it oneDNN emulates bf16 and autocast is slower than float32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """"fp32" or "bf16" for ``precision`` ("fp32", "bf16" or "auto") on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


class Imagination:
    """``num_envs`` imagined episodes of one model (a `SlowFastVGen`), advanced chunk by chunk.

    - ``memory``: an episodic memory of ``num_envs`` episodes (`TempLoRA` for one, `BatchedTempLoRA`
      for any number) or None (Φ alone).
    - ``denoise_steps`` / ``guidance_scale``: the sampler's (default: the model config's).
    - ``sync_timings``: synchronise CUDA around each timed phase (exact per-phase times, slower).
    - ``precision``: "fp32" (default), "bf16" (autocast) or "auto" (see the module docstring).
    - ``compile_fast_update``: under a compiled UNet (`SlowFastVGen.compile_unet`), the fast update's forward and
      backward run compiled too (default: eager, see `step`).

    Each env's random draws come from its generator, seeded by ``reset(..., seeds=...)``; an env reset
    without a seed draws from the global RNG.
    """

    def __init__(self, model: Any, num_envs: int, memory: EpisodicMemory | None = None,
                 denoise_steps: int | None = None, guidance_scale: float | None = None,
                 sync_timings: bool = False, precision: str = "fp32", compile_fast_update: bool = False):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if memory is not None and memory.num_envs != num_envs:
            raise ValueError(f"the memory holds {memory.num_envs} episodes but the core runs {num_envs}")
        if denoise_steps is not None and denoise_steps < 1:
            raise ValueError(f"denoise_steps must be >= 1, got {denoise_steps}")
        cfg = model.config
        self.model, self.num_envs, self.memory = model, num_envs, memory
        self.denoise_steps = denoise_steps or cfg.sample_steps
        self.guidance_scale = cfg.guidance_scale if guidance_scale is None else guidance_scale
        self.sync_timings = sync_timings
        self.compile_fast_update = compile_fast_update
        self.precision = resolve_precision(precision, model.device)
        self.context = torch.zeros(num_envs, cfg.latent_channels, cfg.context_frames, cfg.latent_size,
                                   cfg.latent_size, device=model.device)
        self.generators: list[torch.Generator | None] = [None] * num_envs
        self.started = np.zeros(num_envs, bool)

    @property
    def device(self) -> torch.device:
        return self.context.device

    def _ids(self, ids: Sequence[int] | None) -> list[int]:
        return check_ids(ids, self.num_envs)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _fast_stance(self) -> contextlib.AbstractContextManager:
        """The compile stance of the fast update (and of a reused first pass, `BatchedTempLoRA.reused_pass`). Under a
        compiled UNet it runs eager unless ``compile_fast_update``: compiling its forward and backward took 470 of
        the 650 s warm-up on the CPU and made it no faster there (docs/RESULTS.md, session 23); on the GPU its eager
        forward under bf16 autocast spends its time in casts and norms (session 29's profile), which compiling the
        sampler fused."""
        if self.compile_fast_update:
            return contextlib.nullcontext()
        return torch.compiler.set_stance("force_eager")

    def _sync(self) -> float:
        if self.sync_timings and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    # ------------------------------------------------------------------------------------------ reset
    @torch.no_grad()
    def reset(self, ids: Sequence[int] | None, frames: Any, seeds: Sequence[int | None] | None = None,
              forget: bool = True) -> None:
        """Start episodes for envs ``ids`` from real frames (per env (T, H, W, 3) uint8, any T >= 1, padded
        to the context with the first frame): context latents set, generators seeded, and Θ forgotten
        unless ``forget=False`` (to sample from given frames with a memory as it stands)."""
        ids = self._ids(ids)
        if isinstance(frames, (np.ndarray, torch.Tensor)) and frames.ndim == 4:
            frames = [frames] * len(ids)  # one start for every env
        per_env = list(frames)
        if len(per_env) != len(ids):
            raise ValueError(f"{len(per_env)} start frame sets for {len(ids)} envs")
        seeds = list(seeds) if seeds is not None else [None] * len(ids)
        if len(seeds) != len(ids):
            raise ValueError(f"{len(seeds)} seeds for {len(ids)} envs")
        cfg = self.model.config
        batch = torch.cat([pad_context(frames_to_tensor(f, cfg.frame_size, "start frames"), cfg.context_frames)
                           for f in per_env])
        for i, seed in zip(ids, seeds):
            if seed is not None:
                self.generators[i] = torch.Generator().manual_seed(int(seed))
        latents = self.model.encode_frames(batch)
        self.context[torch.tensor(ids, device=self.device)] = latents.to(self.context)
        if self.memory is not None and forget:
            self.memory.reset(ids, [self.generators[i] for i in ids])
        self.started[ids] = True

    # ------------------------------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, ids: Sequence[int] | None, action: Any, teacher_frames: Any = None,
             learn: bool = True) -> Chunk:
        """One chunk for envs ``ids`` under ``action`` (the model's action format, batched over ``ids``).

        Returns the generated chunk (frames uint8 (n, Tn, H, W, 3) on the model's device, latents of
        context + new frames) with the memory's updates and the phases' timings. ``learn=False`` leaves
        Θ as it is (sampling only).
        """
        ids = self._ids(ids)
        if not self.started[ids].all():
            raise RuntimeError("reset() an env before step()")
        model, cfg = self.model, self.model.config
        index = torch.tensor(ids, device=self.device)
        t0 = self._sync()
        shape = (1, cfg.latent_channels, cfg.new_frames, cfg.latent_size, cfg.latent_size)
        noise = torch.cat([torch.randn(shape, generator=self.generators[i]) for i in ids]).to(self.device)
        context = self.context[index]
        memory = self.memory
        # with ``reuse_sampler_pass`` the fast step is scored on the sampler's first pass (run with Θ's gradient),
        # when some env's chunk is due (`BatchedTempLoRA.due`); else the passes sample as without it. At one pass the
        # sampler's prediction is its own result: a generated chunk scores exactly 0 on it and Θ would learn nothing
        # (session 48), so there Θ takes the usual step, its own forward at a fresh draw
        reuse = memory is not None and learn and memory.enabled and memory.config.reuse_sampler_pass
        own_forward = reuse and self.denoise_steps == 1 and teacher_frames is None
        reused = (memory.reused_pass(ids, eager=not self.compile_fast_update)
                  if reuse and not own_forward and any(memory.due(ids)) else None)
        applied = memory.applied(ids) if memory is not None and reused is None else contextlib.nullcontext()
        with applied, self._autocast():
            new = model.generate_latents(context, action, steps=self.denoise_steps, guidance_scale=self.guidance_scale,
                                         noise=noise, passes=reused).float()
        t1 = self._sync()
        with self._autocast():
            frames = model.decode_latents(new)
        t2 = self._sync()
        latents = torch.cat([context, new], dim=2)
        observed = Chunk(frames, latents, cfg.context_frames)
        if teacher_frames is not None:
            truth = frames_to_tensor(teacher_frames, cfg.frame_size, "teacher_frames")
            if truth.shape[:2] != frames.shape[:2]:
                raise ValueError(f"teacher_frames must be ({len(ids)}, {cfg.new_frames}, H, W, 3), got "
                                 f"{tuple(truth.shape)}")
            observed = Chunk(truth, torch.cat([context, model.encode_frames(truth)], dim=2), cfg.context_frames)
        updates = []
        if memory is not None and learn:
            with self._autocast(), self._fast_stance():
                extra = ({"reused": reused} if reused is not None else  # (the batched memory's alone)
                         {"own_forward": True} if own_forward else {})
                updates = memory.update(observed, ids, [self.generators[i] for i in ids], **extra)
        self.context[index] = observed.latents[:, :, -cfg.context_frames:]
        t3 = self._sync()
        timings = {"denoise": t1 - t0, "decode": t2 - t1, "fast_update": t3 - t2}
        return Chunk(frames, latents, cfg.context_frames, updates, timings)

    # ------------------------------------------------------------------------------------------- fork
    def fork(self, src_ids: Sequence[int], dst_ids: Sequence[int]) -> None:
        """Env ``dst_ids[k]`` becomes a copy of env ``src_ids[k]`` (context, Θ and its optimizer, RNG)."""
        src, dst = check_fork(src_ids, dst_ids, self.num_envs)
        if not self.started[src].all():
            raise RuntimeError("fork() needs started source envs")
        gens = [self.generators[i] for i in src]
        if any(g is None for g in gens):
            raise RuntimeError("fork() needs seeded envs (reset with seeds): an unseeded env draws from the "
                               "global RNG, which two branches cannot share")
        states = [g.get_state() for g in gens]
        self.context[torch.tensor(dst, device=self.device)] = self.context[torch.tensor(src, device=self.device)]
        for i, state in zip(dst, states):
            self.generators[i] = torch.Generator()
            self.generators[i].set_state(state)
        if self.memory is not None:
            self.memory.fork(src, dst)
        self.started[dst] = True
