"""Temp-LoRA episodic memory on one episode: W' = Φ + Θ, Θ a peft LoRA trained during the episode.

The learning rule is `worldmodel.memory.rule`'s; this class holds one Θ (``num_envs == 1``) as peft
adapter layers, so the UNet runs unchanged and Θ can be merged into Φ for sampling. Its random draws
(Θ's init at reset, the loss noise, the full_sequence window) come from the global RNG, as peft's own
init does: seed it with ``torch.manual_seed`` for repeatable episodes (the ``generators`` of the memory
interface are accepted and not used). The batched memory (`worldmodel.memory.batched_lora`) keeps one Θ
per env and draws from per-env generators.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from typing import Any, Iterator, Sequence

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer

from ..chunk import Chunk
from ..config import TempLoRAConfig
from ..diffusion import diffusion_loss
from . import rule
from .rule import FastUpdate

logger = logging.getLogger(__name__)
ADAPTER = "temp_lora"


class TempLoRA:
    """Fast weights Θ on the UNet's attention/projection layers (peft), one episode at a time.

    ``model`` is a `SlowFastVGen`. Only Θ gets gradients (Φ is frozen for each fast step, `rule.phi_frozen`); Φ's
    trainability is otherwise left as it was.
    """

    num_envs = 1

    def __init__(self, model: Any, config: TempLoRAConfig | None = None):
        self.model = model
        self.config = config or model.config.temp_lora
        if self.config.reuse_sampler_pass:
            raise ValueError("reuse_sampler_pass is the batched memory's (BatchedTempLoRA, inside Imagination.step); "
                             "the peft memory runs the usual fast step: set reuse_sampler_pass=False")
        if self.config.protect:
            raise ValueError("protect (Θ kept off ordinary inputs) is the batched memory's (BatchedTempLoRA.protect): "
                             "set protect=0 for the peft memory")
        unet = model.unet
        trainable = {n: p.requires_grad for n, p in unet.named_parameters()}
        # the layers by their full names, so peft adapts exactly the layers the batched memory does
        names = [name for name, _ in rule.target_layers(unet, self.config.target_modules, self.config.blocks)]
        lora = LoraConfig(r=self.config.rank, lora_alpha=self.config.alpha, lora_dropout=0.0, target_modules=names)
        inject_adapter_in_model(lora, unet, adapter_name=ADAPTER)
        for n, p in unet.named_parameters():  # peft freezes the base; Φ's trainability is the trainer's call
            base = n.replace(".base_layer.", ".")
            if "lora_" not in n:
                p.requires_grad_(trainable.get(base, trainable.get(n, True)))
        self.layers = [m for m in unet.modules() if isinstance(m, LoraLayer)]
        if not self.layers:
            raise ValueError(f"Temp-LoRA found no target layers among {self.config.target_modules}")
        factors = [(n, p) for n, p in unet.named_parameters() if "lora_" in n]
        self.params = [p for _, p in factors]
        # the dimension of each factor that runs over Θ's rank (A (r, d_in, ...) its first, B (d_out, r, ...) its
        # second): where ``event_slots`` masks a write
        self._rank_dims = [0 if "lora_A" in n else 1 for n, _ in factors]
        for p in self.params:
            p.requires_grad_(True)
        self.timesteps = rule.fast_timesteps(self.config, model)  # the t a fast step draws from
        self.enabled = True
        self.reset()

    # ------------------------------------------------------------------------------------------ state
    def reset(self, ids: Sequence[int] | None = None,
              generators: Sequence[torch.Generator | None] | None = None) -> None:
        """Forget the episode: Θ = 0 (so W' = Φ exactly), fresh optimizer, empty history.

        Θ's A factors are re-drawn by peft from the global RNG (``generators`` are not used here).
        """
        rule.check_ids(ids, 1)
        for layer in self.layers:
            layer.reset_lora_parameters(ADAPTER, True)
        self.optimizer = torch.optim.Adam(self.params, lr=self.config.lr)
        self.history = rule.new_history(self.config)
        self.losses = rule.new_losses()
        self.rollbacks = [0]  # per env, as in BatchedTempLoRA
        self.offered = 0  # chunks offered to update() since the reset (update_every)
        self.events = rule.EventLog()  # write="events": the gate's state and the written events
        self._good = self._snapshot()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.params)

    def set_enabled(self, enabled: bool) -> None:
        """Switch Θ off (the 'without Temp-LoRA' ablation) or back on, without forgetting it."""
        self.enabled = enabled
        for layer in self.layers:
            layer.enable_adapters(enabled)

    def fork(self, src_ids: Sequence[int], dst_ids: Sequence[int]) -> None:
        src, dst = rule.check_fork(src_ids, dst_ids, 1)
        if src != dst:  # pragma: no cover - check_ids allows only env 0
            raise ValueError("the peft TempLoRA holds one Θ; branch with BatchedTempLoRA")

    @contextlib.contextmanager
    def applied(self, ids: Sequence[int] | None = None) -> Iterator[None]:
        """Sample with W' = Φ + Θ: Θ folded into Φ (no extra LoRA matmuls per denoising step) when
        ``merge_for_inference``, else the adapters run beside Φ."""
        rule.check_ids(ids, 1)
        if not (self.enabled and self.config.merge_for_inference and self._nonzero()):
            yield
            return
        for layer in self.layers:
            layer.merge(adapter_names=[ADAPTER])
        try:
            yield
        finally:
            for layer in self.layers:
                layer.unmerge()

    def _nonzero(self) -> bool:
        return any(bool(layer.lora_B[ADAPTER].weight.any()) for layer in self.layers)

    def _snapshot(self) -> tuple[list[torch.Tensor], dict]:
        return [p.detach().clone() for p in self.params], copy.deepcopy(self.optimizer.state_dict())

    def _restore(self, snap: tuple[list[torch.Tensor], dict]) -> None:
        with torch.no_grad():
            for p, v in zip(self.params, snap[0]):
                p.copy_(v)
        self.optimizer.load_state_dict(snap[1])

    # --------------------------------------------------------------------------------------- learning
    def training_sequence(self, chunk: Chunk) -> torch.Tensor:
        """The latents (B, C, F, h, w) that the configured rule trains Θ on for this chunk."""
        return rule.training_sequence(self.config, chunk, self.history)

    def update(self, chunk: Chunk, ids: Sequence[int] | None = None,
               generators: Sequence[torch.Generator | None] | None = None,
               steps: int | None = None) -> list[FastUpdate]:
        """Run k fast steps on the chunk (each one forward over `rule.fast_batch`'s rows); a non-finite or
        exploding loss rolls Θ back and is reported. With ``write="events"``, k steps on each window of the event
        this chunk completes (none for most chunks; `rule.event_writes`), one FastUpdate for them all."""
        rule.check_ids(ids, 1)
        steps = self.config.steps if steps is None else steps
        if not self.enabled or steps == 0:
            return [FastUpdate(float("nan"), 0)]
        offered, self.offered = self.offered, self.offered + 1
        if self.config.write == "events":  # Θ learns the windows of the event the chunk completes, if any
            windows = [(slot, w) for slot, sequence in rule.event_writes(self.config, self.events, chunk)
                       for w in rule.event_windows(sequence, chunk.latents.shape[2])]
            return [rule.combined([self._learn(Chunk(chunk.frames, w, chunk.num_context), steps, slot)
                                   for slot, w in windows])]
        if rule.skips(self.config, offered):  # update_every > 1: this chunk is only remembered
            rule.remember(self.config, self.history, chunk)
            return [FastUpdate(float("nan"), 0)]
        return [self._learn(chunk, steps)]

    def _learn(self, chunk: Chunk, steps: int, slot: int | None = None) -> FastUpdate:
        """`update`'s ``steps`` fast steps on the chunk's training sequence; with a ``slot`` (``event_slots``) only that
        slot's share of Θ's rank moves (its gradient masked, Adam's step on the rest undone); with ``slots_alone`` the
        other slots are off in its forward and back after it."""
        model = self.model
        total = 0.0
        masks = None
        if slot is not None:
            rank_mask = rule.slot_mask(self.config, slot, self.params[0].device)
            masks = [rank_mask.view([-1 if d == dim else 1 for d in range(p.dim())]).expand_as(p).bool()
                     for p, dim in zip(self.params, self._rank_dims)]
        others = None
        if masks is not None and self.config.slots_alone:  # the written slot alone in the forward, the rest after
            others = [p.detach().clone() for p in self.params]
            with torch.no_grad():
                for p, m in zip(self.params, masks):
                    p.mul_(m)
        with torch.enable_grad(), rule.phi_frozen(model.unet, keep=self.params):
            for _ in range(steps):
                latents, noise, t = rule.fast_batch(self.config, chunk, self.history, None, self.timesteps)
                m, f = latents.shape[0], latents.shape[2]
                given = rule.given_frames(self.config, m, f, chunk.num_context, latents.device)
                null = model.action_encoder.null(m).detach()
                losses = diffusion_loss(model.unet, model.scheduler, latents, given, null, noise, t, per_sample=True)
                loss = losses.mean()
                value = float(loss.detach())
                if rule.rolls_back(self.config, self.losses, t, losses):
                    return self._roll_back(value)
                grads = torch.autograd.grad(loss, self.params)
                if masks is not None:
                    grads = [g * m for g, m in zip(grads, masks)]
                    kept = [p.detach().clone() for p in self.params]
                for p, g in zip(self.params, grads):
                    p.grad = g
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                if masks is not None:  # Adam's momentum would move the other slots: they keep their values
                    with torch.no_grad():
                        for p, m, k in zip(self.params, masks, kept):
                            p.copy_(torch.where(m, p, k))
                if not all(torch.isfinite(p).all() for p in self.params):
                    return self._roll_back(value)
                rule.record(self.losses, t, losses)
                total += value
        if others is not None:
            with torch.no_grad():
                for p, m, k in zip(self.params, masks, others):
                    p.copy_(torch.where(m, p, k))
        rule.remember(self.config, self.history, chunk)
        self._good = self._snapshot()
        return FastUpdate(total / steps, steps)

    def _roll_back(self, value: float) -> FastUpdate:
        self._restore(self._good)
        self.rollbacks[0] += 1
        logger.warning("Temp-LoRA fast loss %.4g is non-finite or exploding; Θ rolled back (rollback #%d)",
                       value, self.rollbacks[0])
        return FastUpdate(value, 0, rolled_back=True)
