"""Per-sample Temp-LoRA: N independent episodic memories Θ_1..Θ_N applied inside ONE batched UNet forward.

`TempLoRA` (peft) keeps one Θ for the whole batch. A batched world-model env needs a different Θ per
env, so here every target layer of the UNet gets low-rank factors ``A: (N, d_in, r)`` and
``B: (N, r, d_out)`` applied with batched matmuls by a forward hook::

    y[rows of sample j] = W x + (alpha / r) * x @ A[j % N] @ B[j % N]

(the UNet3D lays rows out batch-major in every target layer, so sample j owns a contiguous block of
rows; classifier-free guidance doubles the batch as [cond, null], hence ``j % N``). A k x k convolution's x is
its k x k patches (`F.unfold`, d_in = channels x k x k), as peft's conv LoRA is an A of the layer's kernel and a 1x1 B.

All factors live in one flat tensor ``theta (N, P)`` (per-layer A/B are views of it), so reset,
snapshot/rollback and the per-env Adam step are a handful of tensor ops whatever the layer count; a
fast step differentiates a copy of the stepped envs' rows, so the gradient is (n, P) and row k is
env k's own. ``max_batch`` splits a large batch's fast step into groups of envs (bounding activation
memory) with the same result.
The learning rule is `worldmodel.memory.rule`'s, as in the peft `TempLoRA`: the same training
sequence, fast batch (`rule.fast_batch`) and objective, the same unconditioned denoising loss as `worldmodel.diffusion.diffusion_loss`
(noise and timestep drawn in the same order, but from each env's own generator), Adam with the same
learning rate, and the same per-env rollback on a non-finite or exploding loss. The loss is summed over envs, so one
backward pass trains all N memories and each env's gradient stays in its own factors.

Hooks are installed once per UNet and do nothing unless a memory is applied (``with
memory.applied(ids): ...``), so several envs can share one model instance.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import record_function
from torch.utils.checkpoint import checkpoint

from ..chunk import Chunk
from ..config import TempLoRAConfig
from ..diffusion import diffusion_loss, pass_target
from . import rule
from .rule import FastUpdate

_ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam defaults, as TempLoRA uses
_ADAM_EPS = 1e-8
_DISPATCH_ATTR = "_batched_lora_dispatchers"


def _dims(layer: nn.Module) -> tuple[int, int]:
    """(d_in, d_out) of a target layer's factors; a k x k convolution's A reads its k x k patches (`_patches`), as
    peft's conv LoRA does with its A a convolution of the layer's kernel and B a 1x1 one."""
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    return layer.in_channels * math.prod(layer.kernel_size), layer.out_channels


def _patches(layer: nn.Module) -> dict | None:
    """`F.unfold`'s arguments for a convolution wider than 1x1 (None for a linear or 1x1 layer)."""
    if not isinstance(layer, nn.Conv2d) or (layer.kernel_size == (1, 1) and layer.stride == (1, 1)
                                             and layer.padding == (0, 0)):
        return None
    return dict(kernel_size=layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=layer.stride)


def factor_input(x: torch.Tensor, patches: dict | None, conv: bool) -> torch.Tensor:
    """A target layer's input as the rows its factor A reads, channels last: a k x k convolution's patches (B, L,
    C*k*k; ``patches`` from `_patches`), a 1x1 convolution's channels (B, ..., C), a linear layer's input as it is."""
    if patches is not None:
        return F.unfold(x, **patches).transpose(1, 2)
    return x.movedim(1, -1) if conv else x


class _Dispatcher:
    """Hooks on one UNet's target layers, routing each forward to the memory applied at the time."""

    def __init__(self, unet: nn.Module, targets: tuple[str, ...], blocks: tuple[str, ...]):
        self.layers = rule.target_layers(unet, targets, blocks)
        self.patches = [_patches(layer) for _, layer in self.layers]
        self.active: "BatchedTempLoRA | None" = None
        self.rows = 0  # batch size of the current UNet call
        self.handles = [unet.register_forward_pre_hook(self._pre_hook, with_kwargs=True)]
        for index, (_, layer) in enumerate(self.layers):
            self.handles.append(layer.register_forward_hook(self._make_hook(index)))

    def _pre_hook(self, module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        self.rows = sample.shape[0]

    def _make_hook(self, index: int):
        def hook(module, args, output):
            memory = self.active
            if memory is None:
                return None
            x = args[0]
            if self.patches[index] is not None:  # (B, C*k*k, L) -> (B, L, C*k*k): channels last
                delta = memory._delta(index, factor_input(x, self.patches[index], False), self.rows, False)
                return output + delta.transpose(1, 2).reshape(output.shape)
            return output + memory._delta(index, x, self.rows, isinstance(module, nn.Conv2d))

        return hook


def _adapted_blocks(unet: nn.Module, layer_names: Sequence[str]) -> list[nn.Module]:
    """The UNet's top-level blocks (an item of a block list, e.g. ``up_blocks.2``, or a block, ``mid_block``) that hold
    the adapted layers, in order."""
    names: list[str] = []
    for name in layer_names:
        parts = name.split(".")
        block = ".".join(parts[:2] if isinstance(unet.get_submodule(parts[0]), nn.ModuleList) else parts[:1])
        if block not in names:
            names.append(block)
    return [unet.get_submodule(name) for name in names]


def _recompute_units(blocks: Sequence[nn.Module]) -> list[nn.Module]:
    """The units the fast step recomputes under activation checkpointing: each layer of the adapted blocks (a block's
    children, a module list's items: a resnet, a temporal convolution, a spatial or temporal transformer, an
    upsampler). Whole blocks as units saved next to nothing: the backward then holds all of the largest block's
    activations at once, and that block is most of the graph (the default at 16 envs on the CPU, one fast step: +2.9 to
    +3.0 GiB over Temp-LoRA off with whole blocks recomputed or none, +1.3 to +1.4 GiB with its layers; session 53,
    docs/results/fast_step_memory_s53.py)."""
    units: list[nn.Module] = []
    for block in blocks:
        for child in block.children():
            units.extend(child if isinstance(child, nn.ModuleList) else [child])
    return units


@contextlib.contextmanager
def _recomputed(units: Sequence[nn.Module]) -> Iterator[None]:
    """Each of ``units`` runs under activation checkpointing (`torch.utils.checkpoint`, non-reentrant): the backward
    keeps only a unit's inputs and runs its forward again, so the fast step's graph holds one unit's activations at a
    time, not all of them, for one more forward of the adapted blocks. Same values (the forward is deterministic)."""
    saved = [unit.__dict__.get("forward") for unit in units]
    for unit in units:
        # one wrapper per unit, made once: a new one each step made a compiled fast update compile again every step
        # (kept in the unit itself: a cycle the garbage collector frees with it, where a global cache would not)
        if "_recomputed_forward" not in unit.__dict__:
            unit.__dict__["_recomputed_forward"] = functools.partial(checkpoint, type(unit).forward.__get__(unit),
                                                                     use_reentrant=False)
        unit.forward = unit.__dict__["_recomputed_forward"]
    try:
        yield
    finally:
        for unit, forward in zip(units, saved):
            if forward is None:
                del unit.forward
            else:
                unit.forward = forward


def _dispatcher(unet: nn.Module, targets: tuple[str, ...], blocks: tuple[str, ...]) -> _Dispatcher:
    table = unet.__dict__.setdefault(_DISPATCH_ATTR, {})
    if (targets, blocks) not in table:
        table[targets, blocks] = _Dispatcher(unet, targets, blocks)
    return table[targets, blocks]


# ---------------------------------------------------------------------------------------- the memory
class ReusedPass:
    """The sampler's passes of one chunk when Θ's fast step reuses the first (`TempLoRAConfig.reuse_sampler_pass`).

    `sample_new_frames` runs its pass ``index`` inside ``around(index)`` and hands each pass's prediction to
    ``keep``. Pass 0 runs with Θ of the envs as gradient leaves (unmerged, Φ frozen) and its prediction is kept with
    its graph; the later passes apply Θ as sampling does (`BatchedTempLoRA.applied`). `BatchedTempLoRA.update` then
    scores the kept prediction and takes the step: the forward of the usual fast step is not run again.
    """

    def __init__(self, memory: "BatchedTempLoRA", ids: list[int], eager: bool = True):
        self.memory, self.ids, self.eager = memory, ids, eager
        self.leaves: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.prediction: torch.Tensor | None = None
        self.noisy: torch.Tensor | None = None
        self.timestep: torch.Tensor | None = None

    def around(self, index: int) -> contextlib.AbstractContextManager:
        return self._first() if index == 0 else self.memory.applied(self.ids)

    @contextlib.contextmanager
    def _first(self) -> Iterator[None]:
        memory = self.memory
        self.leaves = [(a.detach().requires_grad_(True), b.detach().requires_grad_(True))
                       for a, b in memory._split(memory.theta[torch.tensor(self.ids, device=memory.theta.device)])]
        stance = torch.compiler.set_stance("force_eager") if self.eager else contextlib.nullcontext()
        with torch.enable_grad(), rule.phi_frozen(memory.model.unet), memory._using(self.leaves), stance:
            yield

    def keep(self, index: int, prediction: torch.Tensor, noisy: torch.Tensor, t: torch.Tensor) -> None:
        if index == 0:
            self.prediction, self.noisy, self.timestep = prediction, noisy.detach(), t

    def release(self) -> None:
        """Drop the graph and leaves (the step is taken)."""
        self.leaves, self.prediction = [], None


@dataclass
class _Layout:
    a_offset: int
    b_offset: int
    d_in: int
    d_out: int


class BatchedTempLoRA:
    """N independent Temp-LoRA memories for one model; see the module docstring.

    ``reset(ids)`` forgets chosen envs (Θ_i = 0 so W'_i = Φ exactly, fresh Adam state and history),
    ``update(chunk, ids, generators)`` runs the fast steps for the envs in ``ids`` in one batched
    forward/backward, ``applied(ids)`` makes the UNet use Θ_ids for the samples of a batch.
    """

    def __init__(self, model: Any, num_envs: int, config: TempLoRAConfig | None = None,
                 max_batch: int | None = None, recompute: bool = False):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be >= 1 or None, got {max_batch}")
        # Envs per fast-update forward/backward (None: all at once). Smaller bounds the activation
        # memory of large batches; the result is the same since every env's gradient is its own.
        self.max_batch = max_batch
        # Recompute the adapted blocks' activations layer by layer in the fast step's backward (`_recomputed`): less
        # memory (issue 16: the fast step's graph for 256 envs was most of Temp-LoRA's memory overhead), more time.
        self.recompute = recompute
        self.model = model
        self.num_envs = num_envs
        self.config = config or model.config.temp_lora
        self.scaling = self.config.alpha / self.config.rank
        self._dispatch = _dispatcher(model.unet, self.config.target_modules, self.config.blocks)
        self._recomputed_units = (_recompute_units(_adapted_blocks(model.unet, [n for n, _ in self._dispatch.layers]))
                                  if recompute else [])
        r = self.config.rank
        self.layout: list[_Layout] = []
        offset = 0
        for _, layer in self._dispatch.layers:
            d_in, d_out = _dims(layer)
            self.layout.append(_Layout(offset, offset + d_in * r, d_in, d_out))
            offset += d_in * r + r * d_out
        self.num_parameters_per_env = offset
        device = model.device
        self.theta = torch.zeros(num_envs, offset, device=device)
        self.exp_avg = torch.zeros(num_envs, offset, device=device)
        self.exp_avg_sq = torch.zeros(num_envs, offset, device=device)
        self.adam_steps = torch.zeros(num_envs, dtype=torch.float64)
        self.enabled = True
        self._factors: torch.Tensor | None = None
        # After a differentiable update (`update(..., differentiable=True)`): Θ's dependence on Φ through that
        # update's last fast step, zero in value, added to Θ wherever it is applied (see `update`).
        self.meta: torch.Tensor | None = None
        self.losses = [rule.new_losses() for _ in range(num_envs)]
        self.history: list[collections.deque] = [rule.new_history(self.config) for _ in range(num_envs)]
        self.rollbacks = [0] * num_envs
        self.offered = [0] * num_envs  # chunks each episode has offered to update() since its reset
        self.events = [rule.EventLog() for _ in range(num_envs)]  # write="events": each episode's gate and writes
        self.timesteps = rule.fast_timesteps(self.config, model)  # the t a fast step draws from
        # event_slots: per slot, which of the flat factors it holds (S, P); a write's gradient and step are masked to it
        self.slot_masks = (torch.stack([self._flat_mask(rule.slot_mask(self.config, k, device))
                                        for k in range(self.config.event_slots)])
                           if self.config.event_slots else None)
        # protect: per target layer, the input directions (d_in, k) A is kept orthogonal to (`protect`)
        self.protected: list[torch.Tensor] | None = None
        self.reset()

    # ------------------------------------------------------------------------------------------ state
    def _ids(self, ids: Sequence[int] | torch.Tensor | None) -> list[int]:
        return rule.check_ids(ids, self.num_envs)

    def reset(self, ids: Sequence[int] | None = None,
              generators: Sequence[torch.Generator | None] | None = None) -> None:
        """Forget envs `ids` (all by default): A re-drawn as peft does (kaiming-uniform), B = 0.

        Each env's A is drawn from its generator (the global RNG when None), so a seeded env starts
        from the same factors whatever its position in the batch.
        """
        ids = self._ids(ids)
        generators = list(generators) if generators is not None else [None] * len(ids)
        if len(generators) != len(ids):
            raise ValueError(f"{len(generators)} generators for {len(ids)} envs")
        self.meta = None
        r = self.config.rank
        with torch.no_grad():
            for i, gen in zip(ids, generators):
                row = torch.zeros(self.num_parameters_per_env)
                for lay in self.layout:
                    bound = 1.0 / math.sqrt(lay.d_in)  # kaiming_uniform_(a=sqrt(5)) on (r, d_in)
                    a = torch.empty(r, lay.d_in).uniform_(-bound, bound, generator=gen)
                    row[lay.a_offset: lay.b_offset] = a.t().reshape(-1)
                self.theta[i] = row.to(self.theta.device)
                self.exp_avg[i] = 0
                self.exp_avg_sq[i] = 0
                self.adam_steps[i] = 0
                self.losses[i].clear()
                self.history[i].clear()
                self.rollbacks[i] = 0
                self.offered[i] = 0
                self.events[i] = rule.EventLog()
        self._project(ids)

    def protect(self, bases: Sequence[torch.Tensor]) -> None:
        """Keep every env's A orthogonal to ``bases`` from now on (``TempLoRAConfig.protect``; `memory.protect`):
        per target layer, in `layer_names` order, orthonormal columns (d_in, k) of the input directions ordinary chunks
        use (`protect.ordinary_bases`; k = 0 leaves the layer free). A is projected now, after a reset and after each
        of Adam's steps, so a write moves each layer's output only for inputs off those directions."""
        bases = list(bases)
        if len(bases) != len(self.layout):
            raise ValueError(f"protect: {len(bases)} bases for {len(self.layout)} target layers")
        for name, lay, u in zip(self.layer_names(), self.layout, bases):
            if u.ndim != 2 or u.shape[0] != lay.d_in or u.shape[1] > lay.d_in:
                raise ValueError(f"protect: the basis of {name} is {tuple(u.shape)}, expected ({lay.d_in}, k <= "
                                 f"{lay.d_in})")
        self.protected = [u.to(self.theta) for u in bases]
        self._project(list(range(self.num_envs)))

    @torch.no_grad()
    def _project(self, envs: Sequence[int]) -> None:
        """A <- A - U (U^T A) for each env of ``envs`` and target layer (`protect`); nothing without bases."""
        if self.protected is None or not len(envs):
            return
        r = self.config.rank
        at = torch.as_tensor(list(envs), device=self.theta.device)
        for lay, u in zip(self.layout, self.protected):
            if u.shape[1] == 0:
                continue
            a = self.theta[at, lay.a_offset: lay.b_offset].view(len(envs), lay.d_in, r)
            self.theta[at, lay.a_offset: lay.b_offset] = (a - u @ (u.t() @ a)).reshape(len(envs), -1)

    def set_enabled(self, enabled: bool) -> None:
        """Switch all Θ off (the 'without Temp-LoRA' ablation) or back on, without forgetting them."""
        self.enabled = bool(enabled)

    def fork(self, src_ids: Sequence[int], dst_ids: Sequence[int]) -> None:
        """Env dst_ids[k] becomes a copy of env src_ids[k]: factors, Adam state, recent losses, history."""
        src, dst = rule.check_fork(src_ids, dst_ids, self.num_envs)
        s_idx = torch.tensor(src, device=self.theta.device)
        d_idx = torch.tensor(dst, device=self.theta.device)
        with torch.no_grad():
            for t in (self.theta, self.exp_avg, self.exp_avg_sq):
                t[d_idx] = t[s_idx].clone()
        self.adam_steps[dst] = self.adam_steps[src].clone()
        copies = [(self.losses[i].copy(), list(self.history[i]), self.rollbacks[i], self.offered[i],
                   self.events[i].copy()) for i in src]
        for i, (losses, history, rollbacks, offered, events) in zip(dst, copies):
            self.losses[i] = losses
            self.history[i] = collections.deque(history, maxlen=self.config.max_history)
            self.rollbacks[i] = rollbacks
            self.offered[i] = offered
            self.events[i] = events

    def factors(self, env: int, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of env `env`'s factors of target layer `layer`: A (d_in, r), B (r, d_out)."""
        lay, r = self.layout[layer], self.config.rank
        row = self.theta[env].detach()
        return (row[lay.a_offset: lay.b_offset].view(lay.d_in, r).clone(),
                row[lay.b_offset: lay.b_offset + r * lay.d_out].view(r, lay.d_out).clone())

    def set_factors(self, env: int, layer: int, a: torch.Tensor, b: torch.Tensor) -> None:
        """Overwrite env `env`'s factors of one layer (A (d_in, r), B (r, d_out))."""
        lay, r = self.layout[layer], self.config.rank
        with torch.no_grad():
            self.theta[env, lay.a_offset: lay.b_offset] = a.reshape(-1).to(self.theta)
            self.theta[env, lay.b_offset: lay.b_offset + r * lay.d_out] = b.reshape(-1).to(self.theta)

    def nbytes(self) -> int:
        """Bytes of tensor state held by the memories (factors, Adam moments, per-env history and written events)."""
        n = sum(t.numel() * t.element_size() for t in (self.theta, self.exp_avg, self.exp_avg_sq))
        n += sum(log.nbytes() for log in self.events)
        return n + sum(h.numel() * h.element_size() for hist in self.history for h in hist)

    def layer_names(self) -> list[str]:
        return [name for name, _ in self._dispatch.layers]

    # ---------------------------------------------------------------------------------------- forward
    @contextlib.contextmanager
    def applied(self, ids: Sequence[int] | None = None) -> Iterator[None]:
        """Within the block, UNet sample j uses Θ_{ids[j % len(ids)]} (all envs in order by default)."""
        if not self.enabled:
            yield
            return
        ids = self._ids(ids)
        if len(ids) == 1 and self.meta is None and self.config.merge_for_inference and not torch.is_grad_enabled():
            with self._merged(self.theta[ids[0]]):
                yield
            return
        theta = self.theta if self.meta is None else self.theta + self.meta
        if ids == list(range(self.num_envs)):
            factors = theta
        else:
            factors = theta[torch.tensor(ids, device=self.theta.device)]
        with self._using(factors):
            yield

    def _check_unet_free(self) -> None:
        if self._dispatch.active is not None:
            raise RuntimeError("another batched Temp-LoRA memory is already applied to this UNet")

    @contextlib.contextmanager
    def _merged(self, row: torch.Tensor) -> Iterator[None]:
        """One env's Θ folded into the target layers' weights for the block, W + s (A B)^T, and the weights put back
        after (the same tensors, so no rounding builds up): at one env the sampling passes then run Φ's kernels
        alone instead of two low-rank matmuls beside every target layer (-7% per CPU env step, session 21). Not while
        gradients are taken: Θ's fast step and the slow-fast phase differentiate the factors themselves."""
        self._check_unet_free()
        saved = []
        try:
            for (_, layer), (a, b) in zip(self._dispatch.layers, self._split(row[None])):
                weight = layer.weight
                delta = (a[0] @ b[0]).t() * self.scaling  # (d_out, d_in): x A B = x (A B), and W x is x W^T
                saved.append((weight, weight.data))
                # a conv's weight is (d_out, C, k, k), its patches' order (`F.unfold`: channel, then kernel row)
                weight.data = weight.data + delta.reshape(weight.shape).to(weight.dtype)
            yield
        finally:
            for weight, data in saved:
                weight.data = data

    def _flat_mask(self, rank_mask: torch.Tensor) -> torch.Tensor:
        """A mask over Θ's rank components (r,) spread over the flat factors (P,): A's columns, B's rows."""
        parts = []
        for lay in self.layout:
            parts += [rank_mask.expand(lay.d_in, -1).reshape(-1), rank_mask[:, None].expand(-1, lay.d_out).reshape(-1)]
        return torch.cat(parts)

    def _split(self, factors: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per target layer, views (A (n, d_in, r), B (n, r, d_out)) of flat factors (n, P)."""
        n, r = factors.shape[0], self.config.rank
        return [(factors[:, lay.a_offset: lay.b_offset].view(n, lay.d_in, r),
                 factors[:, lay.b_offset: lay.b_offset + r * lay.d_out].view(n, r, lay.d_out))
                for lay in self.layout]

    @contextlib.contextmanager
    def _using(self, factors: torch.Tensor | list[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
        """Apply flat factors (n, P), or per-layer (A, B) pairs (the fast step's gradient leaves)."""
        self._check_unet_free()
        self._factors = self._split(factors) if isinstance(factors, torch.Tensor) else factors
        self._dispatch.active = self
        try:
            yield
        finally:
            self._dispatch.active = None
            self._factors = None

    def _delta(self, index: int, x: torch.Tensor, rows: int, conv: bool) -> torch.Tensor:
        a, b = self._factors[index]
        n = a.shape[0]
        lay = self.layout[index]
        if rows % n or x.shape[0] % rows:
            raise RuntimeError(f"batched Temp-LoRA: UNet batch {rows} is not a multiple of the {n} applied "
                               f"memories (layer input {tuple(x.shape)})")
        rep = rows // n
        if a.dtype != x.dtype:
            a, b = a.to(x.dtype), b.to(x.dtype)
        h = factor_input(x, None, conv)
        shape = h.shape
        h = h.reshape(rep, n, -1, lay.d_in)
        if rep > 1:
            h = h.transpose(0, 1)
        h = h.reshape(n, -1, lay.d_in)
        out = torch.bmm(torch.bmm(h, a), b)  # (n, rep*m, d_out)
        if self.scaling != 1.0:
            out = out * self.scaling
        if rep > 1:
            out = out.reshape(n, rep, -1, lay.d_out).transpose(0, 1)
        out = out.reshape(*shape[:-1], lay.d_out)
        return out.movedim(-1, 1) if conv else out

    # --------------------------------------------------------------------------------------- learning
    def update(self, chunk: Chunk, ids: Sequence[int] | None = None,
               generators: Sequence[torch.Generator | None] | None = None,
               steps: int | None = None, differentiable: bool = False,
               reused: "ReusedPass | None" = None, own_forward: bool = False) -> list[FastUpdate]:
        """Fast-learn on a batched chunk (row k belongs to env ids[k]); one FastUpdate per env.

        Every fast step is one batched forward/backward over the still-healthy envs' rows (each env's
        `rule.fast_batch`, drawn from its generator); an env whose loss is non-finite or explodes (or
        whose factors turn non-finite) is rolled back to its state before this update and reported, the
        others go on.

        ``differentiable=True`` (the slow-fast phase's meta-gradient) also keeps how the last fast step
        depends on Φ: its gradient is taken with ``create_graph`` and Θ's step is rebuilt as Adam's step
        with its denominator held constant at its root mean square over the env's factors (see `_adam`),
        ``-lr (1 - b1) / bc1 * g(Φ) / rms(denom)``. That
        rebuilt step minus its own value (zero) is `meta`, added to Θ wherever Θ is applied, so the values
        are exactly those of a plain update while a later loss's backward reaches Φ through g: Φ learns to
        write what it will read. Earlier steps stay truncated (first order). The attention then runs on
        PyTorch's math kernel, the one with a second derivative.

        With ``reuse_sampler_pass`` the one fast step is scored on ``reused`` (`reused_pass`), the sampler's first
        pass of this very chunk for the same ``ids``: no forward of its own. ``own_forward``: the usual step instead
        (`Imagination.step` at one denoising pass on a generated chunk, whose reused pass would score exactly 0).
        """
        ids = self._ids(ids)
        learns = self.due(ids)  # update_every: the others' chunks are only remembered
        steps = self.config.steps if steps is None else steps
        if chunk.latents.shape[0] != len(ids):
            raise ValueError(f"chunk has {chunk.latents.shape[0]} rows for {len(ids)} envs")
        if reused is not None and not self.config.reuse_sampler_pass:
            raise ValueError("a reused sampler pass was given to a memory whose rule runs its own forward "
                             "(reuse_sampler_pass=False)")
        if own_forward and reused is not None:
            raise ValueError("own_forward takes the usual step: no reused pass with it")
        if (self.config.reuse_sampler_pass and not own_forward and self.enabled and steps
                and (reused is not None or any(learns))):
            if reused is None or reused.prediction is None:
                raise ValueError("this memory learns from the sampler's first pass (reuse_sampler_pass): fast-learn "
                                 "through Imagination.step, which runs that pass with `reused_pass(ids)`")
            if differentiable or steps != 1:
                raise ValueError("reuse_sampler_pass takes one fast step, not differentiable (the slow-fast phase "
                                 "needs the usual rule)")
            if reused.ids != ids:
                raise ValueError(f"the reused pass ran for envs {reused.ids}, the update is for {ids}")
        generators = list(generators) if generators is not None else [None] * len(ids)
        if self.config.protect and self.protected is None:
            raise ValueError(f"this memory's rule keeps Θ off ordinary inputs (protect={self.config.protect}): give it "
                             "their directions first, memory.protect(protect.ordinary_bases(model, memory.config, "
                             "chunks, memory.config.protect))")
        if differentiable and self.protected is not None:
            raise ValueError("a protected memory has no differentiable update (its projection is not in the "
                             "slow-fast phase's meta-gradient)")
        self.meta = None
        if not self.enabled or steps == 0:
            return [FastUpdate(float("nan"), 0) for _ in ids]
        skip = [not learn for learn in learns]
        for env in ids:
            self.offered[env] += 1
        if self.config.write == "events":
            if differentiable:
                raise ValueError("write='events' has no differentiable update (the slow-fast phase's meta-gradient "
                                 "follows one chunk's steps): use write='every' there")
            return self._learn_events(chunk, ids, generators, steps)
        if not any(skip) and reused is None:
            return self._learn(chunk, ids, generators, steps, differentiable)
        for p in (p for p, s in enumerate(skip) if s):
            rule.remember(self.config, self.history[ids[p]], chunk.row(p))
        due = [p for p, s in enumerate(skip) if not s]
        out = [FastUpdate(float("nan"), 0)] * len(ids)
        if due:
            learned = (self._learn_from_pass(chunk, ids, due, reused) if reused is not None else
                       self._learn(chunk.rows(due), [ids[p] for p in due], [generators[p] for p in due], steps,
                                   differentiable))
            for p, u in zip(due, learned):
                out[p] = u
        return out

    def _learn_events(self, chunk: Chunk, ids: list[int], generators: list, steps: int) -> list[FastUpdate]:
        """`update` with ``write="events"``: each env's windows of the event its chunk completes (`rule.event_writes`,
        none for most chunks), the j-th window of every env that has one in one batched `_learn`, each into its slot."""
        windows = [[(slot, w) for slot, sequence in rule.event_writes(self.config, self.events[env], chunk.row(p))
                    for w in rule.event_windows(sequence, chunk.latents.shape[2])] for p, env in enumerate(ids)]
        done: list[list[FastUpdate]] = [[] for _ in ids]
        for j in range(max(map(len, windows), default=0)):
            at = [p for p in range(len(ids)) if j < len(windows[p])]
            rows = Chunk(chunk.frames[at], torch.cat([windows[p][j][1] for p in at]), chunk.num_context)
            slots = [windows[p][j][0] for p in at] if self.slot_masks is not None else None
            for p, u in zip(at, self._learn(rows, [ids[p] for p in at], [generators[p] for p in at], steps, False,
                                            slots)):
                done[p].append(u)
        return [rule.combined(u) for u in done]

    def _learn(self, chunk: Chunk, ids: list[int], generators: list, steps: int,
               differentiable: bool, slots: list[int] | None = None) -> list[FastUpdate]:
        """`update`'s fast steps for envs `ids` (row k of `chunk` is env ids[k]'s), all of them learning; with
        ``slots`` (``event_slots``), env ids[k] writes slot slots[k] of its Θ alone."""
        device = self.theta.device
        meta_rows: list[tuple[list[int], torch.Tensor]] = []  # (envs, their rebuilt last step)
        # A failed step writes nothing (`_descend`), so one step needs no copy of the state to roll back to; a copy of
        # 256 envs' factors and moments was as large as the state itself (2.5 GiB for the default, issue 16)
        good = self._snapshot(ids) if steps > 1 else None
        alive = list(range(len(ids)))  # positions (into ids) still updating
        totals = [0.0] * len(ids)
        failed: dict[int, float] = {}
        for step in range(steps):
            if not alive:
                break
            with record_function("temp_lora.rows"):
                rows = [rule.fast_batch(self.config, chunk.row(p), self.history[ids[p]], generators[p],
                                        self.timesteps, on_host=True) for p in alive]
            size = self.max_batch or len(alive)
            last = differentiable and step == steps - 1
            for lo in range(0, len(alive), size):
                group = alive[lo: lo + size]
                masks = self.slot_masks[[slots[p] for p in group]] if slots is not None else None
                results = self._fast_step([ids[p] for p in group], rows[lo: lo + size], chunk.num_context,
                                          meta_rows if last else None, masks)
                for p, (value, ok) in zip(group, results):
                    if ok:
                        totals[p] += value
                    else:
                        failed[p] = value
            alive = [p for p in alive if p not in failed]
        with record_function("temp_lora.settle"):
            out = [self._settle(env, chunk.row(p), good, p, failed[p]) if p in failed
                   else self._settle(env, chunk.row(p), good, p, totals[p] / steps, steps)
                   for p, env in enumerate(ids)]
        if meta_rows:  # the rebuilt steps of the envs that were not rolled back
            envs = [env for group, _ in meta_rows for env in group]
            keep = [i for i, env in enumerate(envs) if ids.index(env) not in failed]
            if keep:
                delta = torch.cat([d for _, d in meta_rows])[torch.tensor(keep, device=device)]
                at = torch.tensor([envs[i] for i in keep], device=device)
                self.meta = torch.zeros_like(self.theta).index_put((at,), delta - delta.detach())
        return out

    def _fast_step(self, envs: list[int], rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                   num_context: int, meta_rows: list | None = None, masks: torch.Tensor | None = None
                   ) -> list[tuple[float, bool]]:
        """One batched forward/backward + Adam step for `envs` (rows[k] = env k's `rule.fast_batch`): (loss,
        ok) per env, the loss the mean over its rows; not ok means roll back (non-finite or exploding loss,
        or non-finite factors after the step). With `meta_rows` (a list) the step is also rebuilt as a
        function of Φ and appended as (envs, step (n, P)); see `update`. ``masks`` (n, P): env k's gradient and step
        only where row k is 1 (``event_slots``).

        The UNet batch is row-block-major (batch row i*n + k is env k's row i), the layout `_delta`
        applies factor k to; each env's gradient is its own factor row.
        """
        model, device = self.model, self.theta.device
        n, m = len(envs), rows[0][0].shape[0]
        # the rows' noise and t come from the host: stacked there, one copy each to the device
        latents, noise, t = (torch.stack([r[j] for r in rows], 1).to(device).flatten(0, 1) for j in range(3))
        latents, noise = latents.detach(), noise.to(latents.dtype)
        given = rule.given_frames(self.config, n * m, latents.shape[2], num_context, device)
        null = model.action_encoder.null(n * m).detach()
        idx = torch.tensor(envs, device=device)
        # One gradient leaf per layer factor (not views of one flat leaf: the backward of each view would
        # fill a zero gradient as large as all the factors, ~30% of a CPU fast step); row k is env k's.
        factors = self.theta[idx]
        if masks is not None and self.config.slots_alone:  # the written slot alone in the forward
            factors = factors * masks
        leaves = [(a.detach().requires_grad_(True), b.detach().requires_grad_(True)) for a, b in self._split(factors)]
        meta = meta_rows is not None
        kernels = sdpa_kernel([SDPBackend.MATH]) if meta else contextlib.nullcontext()
        frozen = contextlib.nullcontext() if meta else rule.phi_frozen(model.unet)  # meta: Φ's gradient is read
        recomputed = _recomputed(self._recomputed_units) if self.recompute else contextlib.nullcontext()
        with torch.enable_grad(), self._using(leaves), kernels, frozen, recomputed:
            with record_function("temp_lora.forward"):
                losses = diffusion_loss(model.unet, model.scheduler, latents, given, null, noise, t, per_sample=True)
            return self._descend(envs, leaves, losses.view(m, n), t.view(m, n), meta_rows, masks=masks)

    def _descend(self, envs: list[int], leaves: list[tuple[torch.Tensor, torch.Tensor]], losses: torch.Tensor,
                 t: torch.Tensor, meta_rows: list | None = None, rows: list[int] | None = None,
                 masks: torch.Tensor | None = None) -> list[tuple[float, bool]]:
        """The rest of a fast step once its row losses (m, n) at timesteps t (m, n) are known: the rollback check,
        the gradient of the healthy envs' losses by the factor leaves, Adam's step, the finite check: (loss, ok) per
        env. Leaf row ``rows[k]`` (default k) is env k's."""
        device, n = self.theta.device, len(envs)
        rows = list(range(n)) if rows is None else rows
        meta = meta_rows is not None
        per_env = losses.mean(0)
        # the rollback check and the reported values read every env's losses: one copy to the host, not a GPU
        # sync per env
        with record_function("temp_lora.rollback_check"):
            host_losses, tt = losses.detach().float().cpu(), t.cpu()
            values = host_losses.mean(0).tolist()
            ok = [not rule.rolls_back(self.config, self.losses[e], tt[:, k], host_losses[:, k])
                  for k, e in enumerate(envs)]
        if not any(ok):
            return list(zip(values, ok))
        keep = torch.tensor(ok, device=device)
        with record_function("temp_lora.backward"):
            grads = torch.autograd.grad(torch.where(keep, per_env, 0.0).sum(), [f for ab in leaves for f in ab],
                                        create_graph=meta)
        grad = torch.cat([g.reshape(g.shape[0], -1) for g in grads], dim=1)  # the flat layout: A0, B0, A1, B1, ...
        if rows != list(range(grad.shape[0])):
            grad = grad[torch.tensor(rows, device=device)]
        if masks is not None:
            grad = grad * masks
        good_rows = [k for k, g in enumerate(ok) if g]
        with record_function("temp_lora.adam"):
            taken, scale = self._adam([envs[k] for k in good_rows], grad[good_rows].detach(), meta,
                                      masks[good_rows] if masks is not None else None)
        if meta:
            full = torch.zeros_like(grad)
            full[good_rows] = scale * grad[good_rows]  # Adam's step, its denominator a constant
            meta_rows.append((envs, full))
        for k, took in zip(good_rows, taken):
            ok[k] = took
            if took:
                rule.record(self.losses[envs[k]], tt[:, k], host_losses[:, k])
        return list(zip(values, ok))

    def due(self, ids: Sequence[int] | None = None) -> list[bool]:
        """Whether `update` will learn each env's next chunk (not only remember it: ``update_every``). With
        ``reuse_sampler_pass`` a step where no env is due samples as usual, Θ applied without its gradient: the
        first pass with its graph would be paid for nothing (on the compiled GPU sampler it also runs eager)."""
        return [self.enabled and not rule.skips(self.config, self.offered[env]) for env in self._ids(ids)]

    def reused_pass(self, ids: Sequence[int] | None = None, eager: bool = True) -> "ReusedPass":
        """The sampler's passes of one chunk for envs ``ids`` when Θ learns from the first (``reuse_sampler_pass``):
        hand it to the sampler (`sample_new_frames`' ``passes``), then to `update` with the observed chunk.
        ``eager``: the first pass runs eager under a compiled UNet (as the usual fast update does by default)."""
        return ReusedPass(self, self._ids(ids), eager)

    def _learn_from_pass(self, chunk: Chunk, ids: list[int], positions: list[int], reused: "ReusedPass"
                         ) -> list[FastUpdate]:
        """`update`'s one fast step for the rows ``positions`` of ``ids``, scored on the sampler's first pass: its
        prediction of the new latents against what it should have predicted for the observed ones
        (`diffusion.pass_target`: for a generated chunk the sampler's own result, under teacher forcing the real
        chunk), the mean squared error over the new latents, as `diffusion_loss` scores them."""
        scheduler = self.model.scheduler
        pred, noisy, t = reused.prediction, reused.noisy, reused.timestep
        select = torch.tensor(positions, device=pred.device)
        target = pass_target(scheduler, noisy.float(), chunk.new_latents.detach().float(), t)
        with torch.enable_grad():
            losses = ((pred.float() - target) ** 2).flatten(1).mean(1)[select][None]  # (1, n)
            t_rows = torch.full_like(losses, int(t), dtype=torch.int64).detach()
            results = self._descend([ids[p] for p in positions], reused.leaves, losses, t_rows, rows=positions)
        reused.release()
        return [self._settle(ids[p], chunk.row(p), None, p, value, 1 if ok else None)
                for p, (value, ok) in zip(positions, results)]

    def _snapshot(self, ids: list[int]) -> tuple[torch.Tensor, ...]:
        """Copies of envs ``ids``' factors, Adam moments and step counts (row k: env ids[k]), taken before an update so
        that a failed one can be rolled back (`_settle`)."""
        idx = torch.tensor(ids, device=self.theta.device)
        return (self.theta[idx].clone(), self.exp_avg[idx].clone(), self.exp_avg_sq[idx].clone(),
                self.adam_steps[ids].clone())

    def _settle(self, env: int, row: Chunk, before: tuple[torch.Tensor, ...] | None, k: int, loss: float,
                steps: int | None = None) -> FastUpdate:
        """Env ``env``'s update once its steps are taken: ``steps`` taken, its chunk (``row``) joins its history; None,
        a step failed and the env goes back to row ``k`` of ``before`` (`_snapshot`; None for a one-step update,
        whose failed step wrote nothing), a rollback counted."""
        if steps is not None:
            rule.remember(self.config, self.history[env], row)
            return FastUpdate(loss, steps)
        if before is not None:
            self._restore(env, tuple(s[k] for s in before))
        self.rollbacks[env] += 1
        return FastUpdate(loss, 0, rolled_back=True)

    @torch.no_grad()
    def _adam(self, envs: list[int], grad: torch.Tensor, meta: bool = False, masks: torch.Tensor | None = None
              ) -> tuple[list[bool], torch.Tensor | None]:
        """torch.optim.Adam's update (default betas/eps, its formula), with a step count per env; grad row k is
        envs[k]'s. Returns which rows were taken and, with ``meta``, the scale of a differentiable update (below).
        ``masks`` row k: where env k's factors may move (``event_slots``; the moments elsewhere decay as Adam's do).

        Each env's factors and moments are updated in place through views of their rows, so the step holds one
        temporary as large as the rows (the denominator), not copies of Θ and both moments. A row whose gradient (or
        its square) is not finite is not taken and writes nothing: Adam's step is bounded, so a finite gradient gives
        finite factors, and the caller rolls a row not taken back without a copy of the state.

        The scale is the step's derivative by the gradient with the denominator held constant and replaced by its root
        mean square over the env's factors, ``-lr (1 - b1) / (bc1 * rms(denom))`` (one per row of `envs`, shape (n, 1);
        rows not taken 0): Adam's own per-factor 1 / denom is ~1 / |g| at the first step, which blows up wherever the
        gradient is ~0 and would swamp Φ's gradient with those factors."""
        b1, b2 = _ADAM_BETAS
        taken = torch.isfinite(grad.abs().amax(dim=1).square()).tolist() if len(envs) else []
        rows = [k for k, took in enumerate(taken) if took]
        scale = torch.zeros(len(envs), 1, device=grad.device, dtype=grad.dtype) if meta else None
        if not rows:
            return taken, scale
        stepped = [envs[k] for k in rows]
        self.adam_steps[stepped] += 1
        steps = self.adam_steps[stepped].tolist()
        params = [self.theta[e] for e in stepped]
        moments = [self.exp_avg[e] for e in stepped]
        squares = [self.exp_avg_sq[e] for e in stepped]
        grads = [grad[k] for k in rows]
        torch._foreach_lerp_(moments, grads, 1 - b1)
        torch._foreach_mul_(squares, b2)
        torch._foreach_addcmul_(squares, grads, grads, value=1 - b2)
        bc1 = [1 - b1 ** s for s in steps]
        denoms = torch._foreach_sqrt(squares)
        torch._foreach_div_(denoms, [math.sqrt(1 - b2 ** s) for s in steps])
        torch._foreach_add_(denoms, _ADAM_EPS)
        steered = moments if masks is None else torch._foreach_mul(moments, [masks[k] for k in rows])
        torch._foreach_addcdiv_(params, steered, denoms, [-self.config.lr / c for c in bc1])
        self._project(stepped)
        if meta:
            rms = torch.stack(torch._foreach_norm(denoms)) / math.sqrt(grad.shape[1])
            at = torch.tensor(rows, device=grad.device)
            bias = torch.tensor(bc1, device=grad.device, dtype=grad.dtype)
            scale[at, 0] = -(self.config.lr * (1 - b1)) / (bias * rms)
        return taken, scale

    @torch.no_grad()
    def _restore(self, env: int, state: tuple[torch.Tensor, ...]) -> None:
        theta, m, v, step = state
        self.theta[env] = theta
        self.exp_avg[env] = m
        self.exp_avg_sq[env] = v
        self.adam_steps[env] = step
