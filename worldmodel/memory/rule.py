"""The one fast-learning rule of Temp-LoRA, shared by the peft memory (one Θ) and the batched one (Θ per env).

Per chunk, Θ takes ``steps`` Adam steps on an unconditioned (null action tokens) denoising loss over a
training sequence chosen by the variant (the paper's ablation):

- ``local``: this chunk's input -> output pair (context latents + new latents);
- ``original``: the generated chunk alone (the text-generation Temp-LoRA design);
- ``full_sequence``: a random window, as long as a chunk, over the current chunk's context followed by
  the new latents of the episode's chunks so far (at most ``max_history`` of them, this one included).

The objective picks what is noised: ``conditional`` holds the context frames clean (the same task as
generation), ``joint`` noises the whole sequence as the paper describes. A non-finite loss, or one above
``explode_factor`` x the median of the recent losses, rolls Θ back to its state before the update.
The chunk enters the history once per update (not once per step: several steps on one chunk must not
fill the history with copies of it).
"""

from __future__ import annotations

import collections
import contextlib
from dataclasses import dataclass
from typing import Protocol, Sequence

import torch

from ..chunk import Chunk
from ..config import TempLoRAConfig

RECENT_LOSSES = 32  # losses kept per memory for the explode check


@dataclass
class FastUpdate:
    """What one fast-learning update did; `rolled_back` means Θ was restored to its last good state."""

    loss: float
    steps: int
    rolled_back: bool = False


class EpisodicMemory(Protocol):
    """What the imagination core needs of a memory of ``num_envs`` episodes.

    ``reset(ids, generators)`` forgets episodes; ``applied(ids)`` is a context in which the denoiser's
    batch row j uses Θ of ``ids[j % len(ids)]``; ``update(chunk, ids, generators)`` fast-learns on a
    batched chunk (row k belongs to ``ids[k]``) and returns one FastUpdate per row; ``fork(src, dst)``
    copies whole episodic states (Θ, optimizer state, history) so planners can branch.
    """

    num_envs: int
    enabled: bool

    def reset(self, ids: Sequence[int] | None = None,
              generators: Sequence[torch.Generator | None] | None = None) -> None: ...

    def applied(self, ids: Sequence[int] | None = None) -> contextlib.AbstractContextManager: ...

    def update(self, chunk: Chunk, ids: Sequence[int] | None = None,
               generators: Sequence[torch.Generator | None] | None = None,
               steps: int | None = None) -> list[FastUpdate]: ...

    def fork(self, src_ids: Sequence[int], dst_ids: Sequence[int]) -> None: ...


def new_history(config: TempLoRAConfig) -> collections.deque:
    return collections.deque(maxlen=config.max_history)


def new_losses() -> collections.deque:
    return collections.deque(maxlen=RECENT_LOSSES)


def training_sequence(config: TempLoRAConfig, chunk: Chunk, history: Sequence[torch.Tensor],
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """The latents (B, C, F, h, w) the rule trains Θ on; `history` holds earlier chunks' new latents.

    For ``full_sequence`` the window start is drawn from `generator` (the global RNG when None).
    """
    if config.variant == "local":
        return chunk.latents
    if config.variant == "original":
        return chunk.new_latents
    keep = max(config.max_history - 1, 0)
    past = list(history)[len(history) - keep:] if keep else []
    seq = torch.cat([chunk.latents[:, :, : chunk.num_context], *past, chunk.new_latents], dim=2)
    window = chunk.latents.shape[2]
    start = int(torch.randint(0, seq.shape[2] - window + 1, (), generator=generator).item())
    return seq[:, :, start : start + window]


def remember(config: TempLoRAConfig, history: collections.deque, chunk: Chunk) -> None:
    """After an update: the chunk's new latents join the history (full_sequence only)."""
    if config.variant == "full_sequence":
        history.append(chunk.new_latents.detach())


def given_frames(config: TempLoRAConfig, batch: int, frames: int, num_context: int,
                 device: torch.device | str) -> torch.Tensor:
    """(B, F) bool: which frames of the training sequence the objective holds clean."""
    given = torch.zeros(batch, frames, dtype=torch.bool, device=device)
    if config.objective == "conditional" and config.variant != "original":
        given[:, :num_context] = True
    return given


def is_exploding(config: TempLoRAConfig, losses: Sequence[float], value: float) -> bool:
    """Above ``explode_factor`` x the median of the recent losses (needs 3 of them first)."""
    if len(losses) < 3:
        return False
    median = sorted(losses)[len(losses) // 2]
    return value > config.explode_factor * max(median, 1e-8)


def draw_loss_noise(shape: Sequence[int], generator: torch.Generator | None,
                    num_train_timesteps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise and timestep for one sample, drawn in `diffusion_loss`'s order (noise, then t).

    With a generator seeded like the global RNG, these equal what `diffusion_loss` draws for B=1.
    """
    noise = torch.randn(tuple(shape), generator=generator)
    t = torch.randint(0, num_train_timesteps, (1,), generator=generator)
    return noise, t


def check_ids(ids: Sequence[int] | torch.Tensor | None, num_envs: int) -> list[int]:
    """Env indices as ints (all by default); out-of-range ones are an IndexError."""
    if ids is None:
        return list(range(num_envs))
    out = [int(i) for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)]
    for i in out:
        if not 0 <= i < num_envs:
            raise IndexError(f"env index {i} out of range for {num_envs} memories")
    return out


def check_fork(src_ids: Sequence[int], dst_ids: Sequence[int], num_envs: int) -> tuple[list[int], list[int]]:
    """Validated (sources, destinations) of a fork; destinations distinct (sources are read before any write)."""
    src, dst = check_ids(src_ids, num_envs), check_ids(dst_ids, num_envs)
    if len(src) != len(dst):
        raise ValueError(f"fork needs as many sources as destinations, got {len(src)} and {len(dst)}")
    if len(set(dst)) != len(dst):
        raise ValueError(f"fork destinations must be distinct, got {dst}")
    return src, dst
