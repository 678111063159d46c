"""Options, spaces and action checks of ``SlowFastVGen-v0`` (`WorldModelEnvConfig` is the env's keyword arguments)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import torch

from worldmodel.config import TEMP_LORA_RULES, TempLoRAConfig
from worldmodel.imagination import PRECISIONS

ACTION_MODES = ("skill", "text", "continuous")
OBSERVATIONS = ("frame", "chunk", "stack")
TEMP_LORA_VARIANTS = ("local", "full_sequence", "original")


@dataclass
class WorldModelEnvConfig:
    """Construction options of ``SlowFastVGen-v0`` (single and vector env keyword arguments).

    - ``model``: "default" (the shipped model), a preset name ("tiny", ...), a local model folder, or
      a ``SlowFastVGen`` instance (shared, not copied).
    - ``task`` / ``instruction``: the episode's task (``envs.real.tasks`` name; gives the instruction)
      or instruction text, fed to the reward heads. ``reset(options=...)`` may override both.
    - ``action_mode``, ``skills``, ``continuous_shape``: see the module docstring.
    - ``denoise_steps`` (default: the model's ``sample_steps``), ``guidance_scale``.
    - ``precision``: "fp32" (default; results independent of the batch), "bf16" (autocast: faster on
      GPUs and on CPUs with native bf16) or "auto" (bf16 where native). See `worldmodel.imagination`.
    - ``compile``: `torch.compile` the model's UNet in place (`SlowFastVGen.compile_unet`; a shared model is
      compiled for every env using it): the first steps compile (about a minute on a GPU), later ones run
      the compiled graphs. Batches of one size only: a step of a subset of the envs compiles again.
      ``compile_fast_update`` (needs ``compile``): Temp-LoRA's fast update runs compiled too (default eager).
      ``compile_decoder``: the VAE's decoder compiled in place too (`SlowFastVGen.compile_decoder`; default eager).
    - ``cpu_threads``: on a CPU device, torch's threads: "auto" (default: the cores not busy when the env
      is made, `worldmodel.loading.free_cpu_threads`; threads fighting another process for the cores
      made steps ~4x slower), an int, or None (leave torch's setting). torch's setting is process-wide.
    - ``temp_lora``: True (the model's variant), False, a variant name, a named rule over the model's config
      (`worldmodel.config.TEMP_LORA_RULES`: "recall", the event rule that stores a hidden object; ~9 s a CPU step)
      or a ``TempLoRAConfig``;
      ``temp_lora_steps``: fast steps per chunk (default: the config's); ``fast_batch_size``: at most
      this many envs per fast-update forward/backward (default 128; bounds memory at large N, same
      result. On an H200, bf16, N = 256, the default model's update took 0.40 s per step at 128 against
      1.23 s at 32, peak 33 GB against 13 GB; a one-shot update of 256 envs once ran out of an H100's
      80 GB, in fp32 with Θ in every layer); ``fast_recompute``: the fast update recomputes the adapted
      blocks' activations layer by layer in its backward (activation checkpointing: the same Θ, less memory, one
      more forward of those blocks; default False).
    - ``observation``: "frame" (last frame, H x W x 3), "chunk" (the chunk's frames) or "stack" (the
      last ``frame_stack`` frames, default ``context_frames``).
    - ``start_frames``: uint8 frames (H,W,3), (T,H,W,3) or a set (M,T,H,W,3), a ``.npz`` (key
      ``frames``) or an ``.h5`` episode file (first frames of up to 64 episodes); default: the model
      folder's ``start_frames.npz``, else first frames of the synthetic panning world.
    - ``heads``: None (the model folder's ``heads/`` if present), False, a folder or ``RewardHeads``.
    """

    model: Any = "default"
    task: str | None = None
    instruction: str | None = None
    action_mode: str = "skill"
    skills: Sequence[str] | None = None
    continuous_shape: str = "chunk"
    denoise_steps: int | None = None
    guidance_scale: float | None = None
    precision: str = "fp32"
    compile: bool = False
    compile_fast_update: bool = False
    compile_decoder: bool = False
    cpu_threads: int | str | None = "auto"
    temp_lora: Any = True
    temp_lora_steps: int | None = None
    fast_batch_size: int | None = 128
    fast_recompute: bool = False
    device: str | None = None
    render_mode: str | None = None
    render_fps: int = 8
    max_episode_steps: int | None = 200
    observation: str = "frame"
    frame_stack: int | None = None
    start_frames: Any = None
    heads: Any = None
    termination_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"unknown action_mode {self.action_mode!r}; choose one of {ACTION_MODES}")
        if self.observation not in OBSERVATIONS:
            raise ValueError(f"unknown observation {self.observation!r}; choose one of {OBSERVATIONS}")
        if self.continuous_shape not in ("chunk", "frame"):
            raise ValueError(f"continuous_shape must be 'chunk' or 'frame', got {self.continuous_shape!r}")
        if self.render_mode not in (None, "rgb_array", "rgb_array_list"):
            raise ValueError(f"unsupported render_mode {self.render_mode!r}; use 'rgb_array' or 'rgb_array_list'")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {self.max_episode_steps}")
        if self.denoise_steps is not None and self.denoise_steps < 1:
            raise ValueError(f"denoise_steps must be >= 1, got {self.denoise_steps}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {PRECISIONS}")
        if not (self.cpu_threads in (None, "auto") or (isinstance(self.cpu_threads, int)
                                                       and not isinstance(self.cpu_threads, bool)
                                                       and self.cpu_threads >= 1)):
            raise ValueError(f"cpu_threads must be 'auto', None or a positive int, got {self.cpu_threads!r}")
        if self.fast_batch_size is not None and self.fast_batch_size < 1:
            raise ValueError(f"fast_batch_size must be >= 1 or None, got {self.fast_batch_size}")
        if self.compile_fast_update and not self.compile:
            raise ValueError("compile_fast_update=True needs compile=True (the UNet compiled)")
        if self.temp_lora_steps is not None and self.temp_lora_steps < 0:
            raise ValueError(f"temp_lora_steps must be >= 0, got {self.temp_lora_steps}")
        names = (*TEMP_LORA_VARIANTS, *TEMP_LORA_RULES)
        if not (isinstance(self.temp_lora, (bool, TempLoRAConfig)) or self.temp_lora in names):
            raise ValueError(f"temp_lora must be True, False, a TempLoRAConfig, a variant or a rule name, one of "
                             f"{names}; got {self.temp_lora!r}")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "WorldModelEnvConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown SlowFastVGen-v0 options {unknown}; valid options: {sorted(known)}")
        return cls(**kwargs)



@dataclass(frozen=True)
class StepTimings:
    """Wall-clock seconds of one step's phases (for the whole batch in a vector env).

    Timings are measurements, not env state: they take no part in equality, so two seeded runs
    compare equal (Gymnasium's determinism check compares infos).
    """

    action: float = field(default=0.0, compare=False)
    denoise: float = field(default=0.0, compare=False)
    decode: float = field(default=0.0, compare=False)
    fast_update: float = field(default=0.0, compare=False)
    heads: float = field(default=0.0, compare=False)
    total: float = field(default=0.0, compare=False)

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class SkillText(gym.spaces.Text):
    """A ``Text`` space over a skill vocabulary: samples are skills; `contains` accepts them
    case- and spacing-insensitively."""

    def __init__(self, skills: Sequence[str], seed: int | np.random.Generator | None = None):
        self.skills = tuple(skills)
        charset = "".join(sorted(set("".join(self.skills)) | set(" ")))
        super().__init__(max_length=max(map(len, self.skills)), min_length=min(map(len, self.skills)),
                         charset=charset, seed=seed)
        self._lookup = {normalize_text(s): s for s in self.skills}

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        return self.skills[int(self.np_random.integers(len(self.skills)))]

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and normalize_text(x) in self._lookup

    def canonical(self, x: str) -> str:
        return self._lookup[normalize_text(x)]

    def __repr__(self) -> str:
        return f"SkillText({len(self.skills)} skills)"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, SkillText) and other.skills == self.skills

    def __hash__(self) -> int:
        return hash(("SkillText", self.skills))


def normalize_text(text: str) -> str:
    return " ".join(str(text).lower().split())


def skill_index(action: Any, num: int) -> int:
    value = action
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.size != 1 or value.ndim > 1:
            raise ValueError(f"skill action must be a single integer, got an array of shape {value.shape}")
        if value.dtype.kind not in "iu":
            raise TypeError(f"skill action must be an integer, got dtype {value.dtype}")
        value = int(value.reshape(()))
    elif isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"skill action must be an integer in [0, {num}), got {type(action).__name__} {action!r}")
    value = int(value)
    if not 0 <= value < num:
        raise ValueError(f"skill action {value} out of range: expected an integer in [0, {num})")
    return value


def continuous_action(action: Any, new_frames: int, action_dim: int) -> np.ndarray:
    if isinstance(action, torch.Tensor):
        action = action.detach().cpu().numpy()
    if isinstance(action, (str, bytes, dict)) or action is None:
        raise TypeError(f"continuous action must be a float array, got {type(action).__name__}")
    arr = np.asarray(action)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"continuous action must be a float array, got dtype {arr.dtype}")
    if arr.shape == (action_dim,):
        arr = np.broadcast_to(arr, (new_frames, action_dim))
    elif arr.shape != (new_frames, action_dim):
        raise ValueError(f"continuous action has shape {arr.shape}; expected ({action_dim},) or "
                         f"({new_frames}, {action_dim})")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError("continuous action contains NaN or inf")
    if np.abs(arr).max() > 1.0 + 1e-6:
        raise ValueError(f"continuous action out of range: values must lie in [-1, 1], got max |a| = "
                         f"{np.abs(arr).max():.4g}")
    return np.ascontiguousarray(arr)
