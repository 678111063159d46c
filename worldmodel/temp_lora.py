"""Temp-LoRA episodic memory: W' = Φ + Θ, Θ a LoRA trained during one episode and reset at its end."""

from __future__ import annotations

import collections
import contextlib
import copy
import logging
import math
from dataclasses import dataclass
from typing import Iterator

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer

from .config import TempLoRAConfig
from .diffusion import diffusion_loss
from .model import Chunk, SlowFastVGen

logger = logging.getLogger(__name__)
ADAPTER = "temp_lora"


@dataclass
class FastUpdate:
    """What one fast-learning update did; `rolled_back` means Θ was restored to its last good state."""

    loss: float
    steps: int
    rolled_back: bool = False


class TempLoRA:
    """Fast weights Θ on the UNet's attention/projection layers, with a local learning rule.

    Variants (the paper's ablation): `local` trains on this chunk's input -> output pair (previous-chunk
    latents + new latents, noised together), `full_sequence` samples windows over everything generated so
    far, `original` trains on the generated chunk alone. Updates are unconditioned (null action tokens),
    as in the paper. Only Θ gets gradients; Φ is never touched.
    """

    def __init__(self, model: SlowFastVGen, config: TempLoRAConfig | None = None):
        self.model = model
        self.config = config or model.config.temp_lora
        unet = model.unet
        trainable = {n: p.requires_grad for n, p in unet.named_parameters()}
        lora = LoraConfig(r=self.config.rank, lora_alpha=self.config.alpha, lora_dropout=0.0,
                          target_modules=list(self.config.target_modules))
        inject_adapter_in_model(lora, unet, adapter_name=ADAPTER)
        for n, p in unet.named_parameters():  # peft freezes the base; Φ's trainability is the trainer's call
            base = n.replace(".base_layer.", ".")
            if "lora_" not in n:
                p.requires_grad_(trainable.get(base, trainable.get(n, True)))
        self.layers = [m for m in unet.modules() if isinstance(m, LoraLayer)]
        if not self.layers:
            raise ValueError(f"Temp-LoRA found no target layers among {self.config.target_modules}")
        self.params = [p for n, p in unet.named_parameters() if "lora_" in n]
        for p in self.params:
            p.requires_grad_(True)
        self.enabled = True
        self.reset()

    # ------------------------------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget the episode: Θ = 0 (so W' = Φ exactly), fresh optimizer, empty history."""
        for layer in self.layers:
            layer.reset_lora_parameters(ADAPTER, True)
        self.optimizer = torch.optim.Adam(self.params, lr=self.config.lr)
        self.history: collections.deque[torch.Tensor] = collections.deque(maxlen=self.config.max_history)
        self.losses: collections.deque[float] = collections.deque(maxlen=32)
        self.rollbacks = 0
        self._good = self._snapshot()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.params)

    def set_enabled(self, enabled: bool) -> None:
        """Switch Θ off (the 'without Temp-LoRA' ablation) or back on, without forgetting it."""
        self.enabled = enabled
        for layer in self.layers:
            layer.enable_adapters(enabled)

    @contextlib.contextmanager
    def merged(self) -> Iterator[None]:
        """Fold Θ into Φ for sampling (no extra LoRA matmuls per denoising step), then unfold it."""
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
        """The latents (B, C, F, h, w) that the configured learning rule trains Θ on."""
        variant = self.config.variant
        if variant == "local":
            return chunk.latents
        if variant == "original":
            return chunk.new_latents
        self.history.append(chunk.new_latents.detach())
        seq = torch.cat([chunk.latents[:, :, : chunk.num_context], *self.history], dim=2)
        window = chunk.latents.shape[2]
        start = int(torch.randint(0, seq.shape[2] - window + 1, ()).item())
        return seq[:, :, start : start + window]

    def update(self, chunk: Chunk, steps: int | None = None) -> FastUpdate:
        """Run k fast steps on the chunk; a non-finite or exploding loss rolls Θ back and is reported."""
        steps = self.config.steps if steps is None else steps
        if not self.enabled or steps == 0:
            return FastUpdate(float("nan"), 0)
        model = self.model
        total = 0.0
        for _ in range(steps):
            latents = self.training_sequence(chunk).detach()
            b, f = latents.shape[0], latents.shape[2]
            given = torch.zeros(b, f, dtype=torch.bool, device=latents.device)
            if self.config.objective == "conditional" and self.config.variant != "original":
                given[:, : chunk.num_context] = True
            null = model.action_encoder.null(b).detach()
            loss = diffusion_loss(model.unet, model.scheduler, latents, given, null)
            value = float(loss.detach())
            if not math.isfinite(value) or self._exploding(value):
                return self._roll_back(value)
            grads = torch.autograd.grad(loss, self.params)
            for p, g in zip(self.params, grads):
                p.grad = g
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if not all(torch.isfinite(p).all() for p in self.params):
                return self._roll_back(value)
            self.losses.append(value)
            total += value
        self._good = self._snapshot()
        return FastUpdate(total / steps, steps)

    def _exploding(self, value: float) -> bool:
        if len(self.losses) < 3:
            return False
        median = sorted(self.losses)[len(self.losses) // 2]
        return value > self.config.explode_factor * max(median, 1e-8)

    def _roll_back(self, value: float) -> FastUpdate:
        self._restore(self._good)
        self.rollbacks += 1
        logger.warning("Temp-LoRA fast loss %.4g is non-finite or exploding; Θ rolled back (rollback #%d)",
                       value, self.rollbacks)
        return FastUpdate(value, 0, rolled_back=True)
