"""The one fast-learning rule of Temp-LoRA, shared by the peft memory (one Θ) and the batched one (Θ per env).

Per chunk, Θ takes ``steps`` Adam steps on an unconditioned (null action tokens) denoising loss over a
training sequence chosen by the variant (the paper's ablation):

- ``local``: this chunk's input -> output pair (context latents + new latents);
- ``original``: the generated chunk alone (the text-generation Temp-LoRA design);
- ``full_sequence``: a random window, as long as a chunk, over the current chunk's context followed by
  the new latents of the episode's chunks so far (at most ``max_history`` of them, this one included).

The objective picks what is noised: ``conditional`` holds the context frames clean (the same task as
generation), ``joint`` noises the whole sequence as the paper describes.

A fast step's batch (`fast_batch`) holds ``draws`` (t, noise) draws on the training sequence plus
``rehearsal`` windows over the episode so far (one draw each); t comes from the sampler's timesteps
(``timesteps="sampler"``) or from all training timesteps. The step's loss is the mean over those rows.
A non-finite row loss rolls Θ back to its state before the update, and so does (``rollback="expected"``)
one above ``explode_factor`` x the median of the recent losses at the same timestep (`RecentLosses`;
until 3 are recorded there, x the largest recent loss at any timestep).
The chunk enters the history once per update (not once per step: several steps on one chunk must not
fill the history with copies of it). With ``update_every`` = k only every k-th chunk of an episode is
learned (`skips`); the others enter the history alone.
"""

from __future__ import annotations

import collections
import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, Sequence

import torch
from torch import nn

from ..chunk import Chunk
from ..config import TempLoRAConfig
from ..diffusion import make_sampler

RECENT_LOSSES = 32  # losses kept per memory (all timesteps) for the "median" explode check
RECENT_PER_T = 16  # losses kept per timestep bucket for the "expected" check
T_BUCKET = 20  # timesteps per bucket: the sampler's timesteps (>= 40 apart up to 25 steps) get one each


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


class RecentLosses:
    """A memory's recent fast losses, pooled (``all``) and per timestep bucket (``by_t``)."""

    def __init__(self) -> None:
        self.all: collections.deque = collections.deque(maxlen=RECENT_LOSSES)
        self.by_t: dict[int, collections.deque] = {}

    def add(self, t: int, value: float) -> None:
        self.all.append(value)
        self.by_t.setdefault(int(t) // T_BUCKET, collections.deque(maxlen=RECENT_PER_T)).append(value)

    def median(self, t: int | None = None) -> float | None:
        """Median of the recent losses (at t's bucket when t is given); None with fewer than 3."""
        values = self.all if t is None else self.by_t.get(int(t) // T_BUCKET, ())
        if len(values) < 3:
            return None
        return sorted(values)[len(values) // 2]

    def clear(self) -> None:
        self.all.clear()
        self.by_t.clear()

    def copy(self) -> "RecentLosses":
        out = RecentLosses()
        out.all.extend(self.all)
        out.by_t = {k: collections.deque(v, maxlen=RECENT_PER_T) for k, v in self.by_t.items()}
        return out

    def __len__(self) -> int:
        return len(self.all)


def new_losses() -> RecentLosses:
    return RecentLosses()


def keeps_history(config: TempLoRAConfig) -> bool:
    """Whether the rule needs the episode's earlier chunks (full_sequence windows, rehearsal or reverse phases)."""
    return config.variant == "full_sequence" or config.rehearsal > 0 or config.reverse_phases > 0


def fast_timesteps(config: TempLoRAConfig, model: Any) -> torch.Tensor:
    """The timesteps a fast step draws t from (int64, CPU): the sampler's, those of a sampler of
    ``config.timesteps`` passes, or all training timesteps."""
    if config.timesteps == "uniform":
        return torch.arange(model.scheduler.config.num_train_timesteps)
    sampler = make_sampler(model.config, model.scheduler)
    sampler.set_timesteps(config.timesteps if isinstance(config.timesteps, int) else model.config.sample_steps)
    return torch.as_tensor(sampler.timesteps).detach().to("cpu", torch.int64).clone()


def draw_fast_noise(shape: Sequence[int], generator: torch.Generator | None, timesteps: torch.Tensor,
                    draws: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`draws` (noise, t) pairs, each drawn noise first, then t uniformly among `timesteps`: (D, *shape), (D,).

    With ``timesteps = arange(num_train_timesteps)`` one draw equals `draw_loss_noise`'s.
    """
    noise, ts = [], []
    for _ in range(draws):
        noise.append(torch.randn(tuple(shape), generator=generator))
        ts.append(timesteps[torch.randint(0, len(timesteps), (1,), generator=generator)])
    return torch.stack(noise), torch.cat(ts)


def rehearsal_windows(history: Sequence[torch.Tensor], count: int, length: int,
                      generator: torch.Generator | None) -> list[torch.Tensor]:
    """`count` random windows of `length` frames over the history's new latents, concatenated in episode
    order; none while the history is shorter than one window."""
    if count <= 0 or not history:
        return []
    seq = torch.cat(list(history), dim=2)
    if seq.shape[2] < length:
        return []
    out = []
    for _ in range(count):
        start = int(torch.randint(0, seq.shape[2] - length + 1, (), generator=generator).item())
        out.append(seq[:, :, start : start + length])
    return out


def phase_windows(config: TempLoRAConfig, chunk: Chunk, history: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The ``reverse_phases`` windows, each as long as the chunk's latents and played backwards, that end 1, 2, ...
    frames before the chunk's end, over the history's new latents followed by the chunk (its context is the history's
    last frames, so those are not repeated). A window that would reach before the episode's first remembered frame is
    the chunk's own sequence backwards instead, so that every env of a batch has as many rows."""
    if config.reverse_phases <= 0:
        return []
    earlier = torch.cat(list(history), dim=2) if history else chunk.latents[:, :, :0]
    earlier = earlier[:, :, : max(earlier.shape[2] - chunk.num_context, 0)]  # its last frames are the chunk's context
    sequence = torch.cat([earlier.to(chunk.latents), chunk.latents], dim=2)
    n, length = sequence.shape[2], chunk.latents.shape[2]
    return [sequence[:, :, n - length - j : n - j].flip(2) if n - length - j >= 0 else chunk.latents.flip(2)
            for j in range(1, config.reverse_phases + 1)]


def fast_batch(config: TempLoRAConfig, chunk: Chunk, history: Sequence[torch.Tensor],
               generator: torch.Generator | None, timesteps: torch.Tensor, on_host: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One env's rows of a fast step: latents (M, C, F, h, w), noise (M, C, F, h, w), t (M,), M = draws + rehearsal
    (twice that with ``reverse``, once with ``forward`` False, and then ``reverse_phases`` more: `phase_windows`).

    `chunk` is one env's (batch 1). Draw order (all from `generator`, the global RNG when None): the
    full_sequence window start, the rehearsal window starts, then per row its noise and t. Rows are
    ``draws`` draws on the training sequence, then the rehearsal windows; rehearsal rows the history
    cannot fill yet are further draws on the training sequence; with ``reverse``, then each of those rows
    again in reverse frame order (a rehearsed window played backwards too: the hiding chunk, reversed, is the
    reopen, and the chunks learnt after it would otherwise overwrite it); with ``forward`` False those alone.

    ``on_host``: noise and t stay where they were drawn (the CPU), for a caller that moves many envs' rows to the
    device in one copy (`BatchedTempLoRA`: at 256 envs on one H200, drawing the rows env by env, a copy to the GPU
    per env among it, took about 66 of the fast update's 400 ms per step; docs/RESULTS.md, "The session-29 lease").
    """
    main = training_sequence(config, chunk, history, generator)
    windows = rehearsal_windows(history, config.rehearsal, main.shape[2], generator)
    rows = [main] * (config.draws + config.rehearsal - len(windows)) + windows
    if config.reverse:
        rows = (rows if config.forward else []) + [row.flip(2) for row in rows] + phase_windows(config, chunk, history)
    latents = torch.cat(rows).detach()
    noise, t = draw_fast_noise(latents.shape[1:], generator, timesteps, latents.shape[0])
    if on_host:
        return latents, noise, t
    return latents, noise.to(latents), t.to(latents.device)


def rolls_back(config: TempLoRAConfig, losses: RecentLosses, t: torch.Tensor, values: torch.Tensor) -> bool:
    """Whether a fast step's row losses `values` (at timesteps `t`) roll Θ back: any non-finite, or (by
    ``config.rollback``) any above explode_factor x the recent median at its timestep or over all."""
    values = [float(v) for v in values.detach().flatten().cpu()]
    if not all(math.isfinite(v) for v in values):
        return True
    if config.rollback == "finite":
        return False
    for tt, v in zip(t.flatten().tolist(), values):
        ref = losses.median(tt if config.rollback == "expected" else None)
        if ref is None and config.rollback == "expected" and len(losses) >= 3:
            ref = max(losses.all)  # too few at this t yet: the largest recent loss at any t bounds it
        if ref is not None and v > config.explode_factor * max(ref, 1e-8):
            return True
    return False


def record(losses: RecentLosses, t: torch.Tensor, values: torch.Tensor) -> None:
    for tt, v in zip(t.flatten().tolist(), values.detach().flatten().cpu().tolist()):
        losses.add(tt, v)


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


def skips(config: TempLoRAConfig, offered: int) -> bool:
    """Whether an episode's chunk number `offered` (0-based since its reset) is only remembered, not learned:
    with ``update_every`` = k, Θ learns chunks k - 1, 2k - 1, ... (every k-th one)."""
    return (offered + 1) % config.update_every != 0


# ------------------------------------------------------------------------------------ writes at events
@dataclass
class EventLog:
    """One episode's state under ``write="events"`` (`event_writes`): what the gate compares a chunk with, the
    event waiting for its next chunk, and the written events' sequences (``replay``). Its tensors are never changed
    in place, so a fork may share them."""

    chunks: int = 0  # chunks observed since the reset
    last_frame: torch.Tensor | None = None  # the last observed frame (H, W, 3): a chunk's change is from it
    changes: list[float] = field(default_factory=list)  # `chunk_change` of chunks 1, 2, ... (item c - 1: chunk c's)
    pending: torch.Tensor | None = None  # an event chunk's latents (1, C, Tc + Tn, h, w), until the next chunk is in
    # the written events' sequences, oldest first (replay): every event from the count - len(written)-th on
    written: list[torch.Tensor] = field(default_factory=list)
    count: int = 0  # events written since the reset

    def copy(self) -> "EventLog":
        return EventLog(self.chunks, self.last_frame, list(self.changes), self.pending, list(self.written), self.count)

    def nbytes(self) -> int:
        held = [t for t in (self.last_frame, self.pending, *self.written) if t is not None]
        return sum(t.numel() * t.element_size() for t in held)


PIXEL_CHANGE = 48  # ``event_change="pixels"``: a pixel changed when a channel moved by more than this (of 255)


def chunk_change(frames: torch.Tensor, before: torch.Tensor, measure: str = "mean") -> float:
    """How much a chunk's new frames (Tn, H, W, 3) differ from the frame before them (H, W, 3)
    (`TempLoRAConfig.event_change`): "mean", the mean absolute pixel difference (0-255); "pixels", the share of
    pixels (over the new frames) whose largest channel difference exceeds `PIXEL_CHANGE`."""
    diff = (frames.float() - before.to(frames.device).float()).abs()  # teacher frames: on the host
    if measure == "pixels":
        return float((diff.amax(-1) > PIXEL_CHANGE).float().mean())
    return float(diff.mean())


def event_writes(config: TempLoRAConfig, log: EventLog, chunk: Chunk) -> list[tuple[int | None, torch.Tensor]]:
    """Observe one env's chunk (batch 1) and return the latent sequences whose windows (`event_windows`) Θ learns now,
    each with the slot of Θ it is written into (``event_slots``: event k's is k mod S; None: all of Θ).

    Chunk c (counted from the reset) is an event when c >= 3 and its `chunk_change` exceeds ``event_gate`` times the
    mean change of chunks 1 .. c - 1 (chunk 0's context is the start frame, not a chunk), or with ``event_top`` = K
    ranks among the K largest changes so far (`is_event`). An event's sequence is its
    latents (context + new) followed by the next chunk's new latents, so it is written once that chunk is in: the
    motion around the event, where a hidden object was last seen (the drawer closing over the cube). With ``replay``
    the earlier written sequences follow it, oldest first: a later write does not stay on top of them (issue 15:
    writes elsewhere overwrote the hiding; docs/RESULTS.md, "The session-60 lease")."""
    out = []
    if log.pending is not None:
        sequence = torch.cat([log.pending, chunk.new_latents.detach()], dim=2)
        first = log.count - len(log.written)  # the oldest replayed event's number
        out = [(event_slot(config, log.count), sequence),
               *((event_slot(config, first + k), s) for k, s in enumerate(log.written))]
        log.pending = None
        if config.replay:  # the last max_history events are replayed (bounds the cost on long episodes)
            log.written = [*log.written, sequence][-config.max_history:]
        log.count += 1
    c, log.chunks = log.chunks, log.chunks + 1
    if log.last_frame is not None and c >= 1:
        change = chunk_change(chunk.frames[0], log.last_frame, config.event_change)
        if c >= 3 and is_event(log.changes, change, config.event_gate, config.event_top):
            log.pending = chunk.latents.detach().clone()  # (a copy: a view would hold the whole batch's chunk)
        log.changes.append(change)
    log.last_frame = chunk.frames[0, -1].clone()
    return out


def event_slot(config: TempLoRAConfig, number: int) -> int | None:
    """The slot of Θ event ``number`` (from 0) is written into: number mod ``event_slots``; None without slots."""
    return number % config.event_slots if config.event_slots else None


def slot_mask(config: TempLoRAConfig, slot: int | None,
              device: torch.device | str | None = None) -> torch.Tensor | None:
    """Which of Θ's rank components (rank,) slot ``slot`` holds (1.0, else 0.0): the slot's share of the rank, in
    order; None for all of Θ."""
    if slot is None:
        return None
    size = config.rank // config.event_slots
    mask = torch.zeros(config.rank, device=device)
    mask[slot * size: (slot + 1) * size] = 1.0
    return mask


def is_event(before: Sequence[float], change: float, gate: float, top: int = 0) -> bool:
    """Whether a chunk whose `chunk_change` is ``change`` is an event after chunks whose changes were ``before``: it
    exceeds ``gate`` x their mean (`TempLoRAConfig.event_gate`), or (``top`` = K > 0, ``event_top``) fewer than K of
    them changed more. `experiments.reopen_oracle`'s ``event:`` probe decides with it too."""
    if top > 0:
        return sum(b > change for b in before) < top
    return change > gate * sum(before) / len(before)


def event_windows(sequence: torch.Tensor, length: int) -> list[torch.Tensor]:
    """The windows (one chunk's latents long) of an event's sequence at every frame offset: the event cut at every
    phase a later chunk can cut it (a revisit comes at its own phase)."""
    return [sequence[:, :, o: o + length] for o in range(sequence.shape[2] - length + 1)]


def combined(updates: Sequence[FastUpdate]) -> FastUpdate:
    """One chunk's update made of several (the windows of ``write="events"``): their mean loss, their steps, rolled
    back if any was; no update (nan, 0) when there were none."""
    if not updates:
        return FastUpdate(float("nan"), 0)
    return FastUpdate(sum(u.loss for u in updates) / len(updates), sum(u.steps for u in updates),
                      any(u.rolled_back for u in updates))


def remember(config: TempLoRAConfig, history: collections.deque, chunk: Chunk) -> None:
    """After an update: the chunk's new latents join the history (full_sequence or rehearsal only)."""
    if keeps_history(config):
        history.append(chunk.new_latents.detach())


def given_frames(config: TempLoRAConfig, batch: int, frames: int, num_context: int,
                 device: torch.device | str) -> torch.Tensor:
    """(B, F) bool: which frames of the training sequence the objective holds clean."""
    given = torch.zeros(batch, frames, dtype=torch.bool, device=device)
    if config.objective == "conditional" and config.variant != "original":
        given[:, :num_context] = True
    return given


@contextlib.contextmanager
def phi_frozen(unet: nn.Module, keep: Sequence[torch.Tensor] = ()) -> Iterator[None]:
    """Φ (the UNet's weights, all but ``keep``: a peft memory's own Θ) without gradients for one fast step.

    A fast step differentiates Θ alone, but while Φ requires grad (a trainer's setting, or no one ever froze
    it) autograd keeps every activation Φ's weight gradients would need, down and mid blocks included, for a
    gradient nobody reads: about twice the memory saved for the backward (1,191 against 576 MiB at 4 envs of the
    shipped default, CPU, session 30). Θ's values do not change. Trainability is put back afterwards; the
    slow-fast phase's differentiable step, whose backward does reach Φ, must not use this."""
    kept = {id(p) for p in keep}
    frozen = [p for p in unet.parameters() if p.requires_grad and id(p) not in kept]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


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


# ------------------------------------------------------------------------------------ target layers
def _matches(name: str, targets: Sequence[str]) -> bool:
    """peft's rule: a module is targeted when its name equals a target or ends with '.' + target."""
    return any(name == t or name.endswith("." + t) for t in targets)


def target_layers(unet: nn.Module, targets: Sequence[str],
                  blocks: Sequence[str] = ()) -> list[tuple[str, nn.Module]]:
    """(name, layer) of the nn.Linear / nn.Conv2d layers Θ adapts, in `modules()` order: names that
    match ``targets`` (peft's rule) inside one of ``blocks`` (module-name prefixes; empty: anywhere).
    Both memories adapt exactly these layers. A layer already wrapped by peft is found through its
    `base_layer`.
    """
    inside = tuple(b.rstrip(".") + "." for b in blocks)
    found = []
    for name, module in unet.named_modules():
        plain = name.replace(".base_layer", "")
        if ".lora_" in name or "lora_" in plain.rsplit(".", 1)[-1] or not _matches(plain, targets):
            continue
        if inside and not plain.startswith(inside):
            continue
        if isinstance(module, nn.Linear):
            found.append((plain, module))
        elif isinstance(module, nn.Conv2d):
            if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
                raise ValueError(f"Temp-LoRA adapts ungrouped, zero-padded convolutions with numeric padding; "
                                 f"{plain} is {module}")
            found.append((plain, module))
    if not found:
        where = f" inside {tuple(blocks)}" if blocks else ""
        raise ValueError(f"Temp-LoRA found no target layers among {tuple(targets)}{where}")
    return found
