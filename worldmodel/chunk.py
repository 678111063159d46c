"""What one generated (or observed) chunk is, and the frame checks every chunk path shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class Chunk:
    """One chunk: new frames uint8 (B, Tn, H, W, 3) and the latents of context + new frames.

    Temp-LoRA learns from `latents`; generated chunks and real (teacher-forced) chunks look the same.
    `updates` holds what the memory did after the chunk (one FastUpdate per row, empty without memory)
    and `timings` the wall-clock seconds of the step's phases (action, denoise, decode, fast_update).
    """

    frames: torch.Tensor
    latents: torch.Tensor  # (B, C, Tc + Tn, h, w), scaled by the VAE scaling factor
    num_context: int
    updates: list = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def new_latents(self) -> torch.Tensor:
        return self.latents[:, :, self.num_context :]

    def row(self, k: int) -> "Chunk":
        """Row k alone (batch of one), for rules that treat each env separately."""
        return Chunk(self.frames[k : k + 1], self.latents[k : k + 1], self.num_context)

    def rows(self, positions: list[int]) -> "Chunk":
        index = torch.tensor(positions, device=self.latents.device)
        return Chunk(self.frames[positions], self.latents[index], self.num_context)


def frames_to_tensor(frames: Any, frame_size: int, name: str = "frames") -> torch.Tensor:
    """Validate uint8 frames (B, T, H, W, 3) or (T, H, W, 3) and return them batched as a uint8 tensor."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(frames).__name__}")
    if frames.dtype != torch.uint8:
        raise TypeError(f"{name} must be uint8 (0..255), got {frames.dtype}")
    if frames.ndim == 4:
        frames = frames.unsqueeze(0)
    if frames.ndim != 5 or frames.shape[-1] != 3 or frames.shape[2:4] != (frame_size, frame_size):
        raise ValueError(
            f"{name} must have shape (T, {frame_size}, {frame_size}, 3) or (B, T, {frame_size}, {frame_size}, 3), "
            f"got {tuple(frames.shape)}"
        )
    return frames


def pad_context(context: torch.Tensor, num: int) -> torch.Tensor:
    """Keep the last `num` frames, left-padding with the first frame when fewer are given."""
    t = context.shape[1]
    if t >= num:
        return context[:, t - num :]
    return torch.cat([context[:, :1].expand(-1, num - t, *context.shape[2:]), context], dim=1)
