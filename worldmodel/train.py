"""Slow learning, the slow-fast loop, and VAE fitting, with atomic checkpoints and exact resume.

Phases (run one per `Trainer.fit` call, in this order for a model from scratch):
- `vae`: fit the small AutoencoderKL on frames, then set the latent scaling factor (frozen afterwards).
- `slow`: update Φ (the UNet and action encoder) on chunk windows.
- `slow_fast`: per episode, Θ learns chunk after chunk (inner loop); Φ is updated with Θ frozen on the
  loss of each chunk given the memory of the chunks before it (outer loop), so Φ learns to use Θ.

Data order depends only on (seed, step), and RNG states are checkpointed, so a resumed run repeats the
uninterrupted run's loss curve.

Several processes (`accelerate launch --num_processes N`) train data-parallel on the same global batch:
each takes every N-th item of the step's batch, draws its own diffusion noise (seeded with seed + rank),
and gradients are averaged before the optimizer step, so all processes keep identical weights. Only the
main process writes files.
"""

from __future__ import annotations

import csv
import math
import os
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import gather_object
from torch.utils.data import DataLoader, Dataset, Sampler

from .model import Chunk, SlowFastVGen, frames_to_tensor
from .memory import TempLoRA

logger = get_logger(__name__)  # logs on the main process only
Phase = Literal["vae", "slow", "slow_fast"]
CHECKPOINT = "last.ckpt"


@dataclass
class TrainConfig:
    phase: Phase = "slow"
    steps: int = 1000
    batch_size: int = 8
    lr: float = 5e-6  # the paper's slow learning rate; from-scratch runs use larger
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    warmup_steps: int = 0
    mixed_precision: Literal["no", "bf16", "fp16"] | None = None  # None: bf16 on GPU, no on CPU
    seed: int = 0
    num_workers: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    out_dir: str = "runs/train"
    vae_kl_weight: float = 1e-6
    deadline: float | None = None  # time.time() at which to checkpoint and stop (a rerun resumes)

    def __post_init__(self) -> None:
        if self.phase not in ("vae", "slow", "slow_fast"):
            raise ValueError(f"unknown phase {self.phase!r}; expected 'vae', 'slow' or 'slow_fast'")


def check_batch_size(batch_size: int, num_processes: int, phase: str) -> None:
    """`batch_size` is the global batch: every process must get an equal share of it."""
    if batch_size % num_processes:
        raise ValueError(f"{phase}: batch_size {batch_size} is the global batch and must be divisible by the "
                         f"{num_processes} processes; change batch_size or the number of processes")


class StepBatchSampler(Sampler[list[int]]):
    """Batches as a pure function of (seed, step): resuming at step s yields exactly the batches after s.

    `batch_size` is the global batch; process `rank` of `num_processes` gets items rank, rank + N, ... of it.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, start_step: int, num_steps: int,
                 rank: int = 0, num_processes: int = 1):
        if num_items == 0:
            raise ValueError("the training dataset is empty")
        self.n, self.bs, self.seed, self.start, self.stop = num_items, batch_size, seed, start_step, num_steps
        self.rank, self.world = rank, num_processes

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield [self._index(step * self.bs + i) for i in range(self.rank, self.bs, self.world)]

    def _index(self, k: int) -> int:
        epoch, pos = divmod(k, self.n)
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
        return int(perm[pos])

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several types for truncated/corrupt zip files
        raise ValueError(f"corrupt or truncated checkpoint {path}: {err}. Delete it to restart the phase.") from err


class Trainer:
    """Runs one phase for `config.steps` optimizer steps, resuming from `out_dir/last.ckpt` if present."""

    def __init__(self, model: SlowFastVGen, dataset: Dataset, config: TrainConfig):
        self.model, self.dataset, self.config = model, dataset, config
        mp = config.mixed_precision or ("bf16" if torch.cuda.is_available() else "no")
        self.accelerator = Accelerator(mixed_precision=mp, cpu=not torch.cuda.is_available())
        check_batch_size(config.batch_size, self.accelerator.num_processes, config.phase)
        self.out = Path(config.out_dir)
        self.memory = TempLoRA(model) if config.phase == "slow_fast" else None
        self.params = self._trainable()
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        self.step = 0
        self.history: list[dict[str, float]] = []

    def _trainable(self) -> list[torch.nn.Parameter]:
        m = self.model
        m.requires_grad_(False)
        if self.config.phase == "vae":
            m.vae.requires_grad_(True)
            return list(m.vae.parameters())
        groups = [m.unet, m.action_encoder]
        for g in groups:
            g.requires_grad_(True)
        params = [p for g in groups for n, p in g.named_parameters() if p.requires_grad and "lora_" not in n]
        if self.memory is not None:
            for p in self.memory.params:
                p.requires_grad_(True)
        return params

    # ------------------------------------------------------------------------------------- checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT

    def save_checkpoint(self) -> None:
        """Collective: every process calls it; the main process writes, with each process's RNG state."""
        rng = gather_object([_rng_state()])  # one per process, in rank order
        if self.accelerator.is_main_process:
            self._write_checkpoint(rng)
        self.accelerator.wait_for_everyone()

    def _write_checkpoint(self, rng: list[dict[str, Any]]) -> None:
        state = {
            "step": self.step,
            "phase": self.config.phase,
            "model": self.model.weights_state_dict(),
            "model_config": self.model.config.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng,
            "history": self.history,
            "train_config": asdict(self.config),
        }
        atomic_torch_save(state, self.checkpoint_path)
        self._write_log()

    def maybe_resume(self) -> bool:
        if not self.checkpoint_path.exists():
            return False
        state = load_checkpoint(self.checkpoint_path)
        if state.get("phase") != self.config.phase:
            raise ValueError(f"checkpoint {self.checkpoint_path} is for phase {state.get('phase')!r}, "
                             f"not {self.config.phase!r}; use another out_dir")
        own = self.model.state_dict()
        weights = state["model"]
        remapped = {}
        for k in own:
            plain = k.replace(".base_layer.", ".")
            if plain in weights:
                remapped[k] = weights[plain]
        self.model.load_state_dict(remapped, strict=False)
        self.model.config.vae_scaling_factor = state["model_config"]["vae_scaling_factor"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.history = state["step"], state["history"]
        rng = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]  # older checkpoints: one state
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        if len(rng) == world:
            _set_rng_state(rng[rank])
        else:  # the data split changed too: training goes on, but not bit-exact with the uninterrupted run
            logger.warning("checkpoint of %d processes resumed on %d: RNG reseeded", len(rng), world)
            _seed_all(self.config.seed + rank + 10_000 * self.step)
        logger.info("resumed %s at step %d from %s", self.config.phase, self.step, self.checkpoint_path)
        return True

    # ---------------------------------------------------------------------------------------- training
    def _loader(self) -> DataLoader:
        sampler = StepBatchSampler(len(self.dataset), self.config.batch_size, self.config.seed, self.step,
                                   self.config.steps, self.accelerator.process_index, self.accelerator.num_processes)
        # A private generator keeps DataLoader start-up from consuming the global RNG (exact resume).
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.config.num_workers,
                          generator=torch.Generator(), persistent_workers=False)

    def fit(self, progress: bool = True) -> list[dict[str, float]]:
        """Train up to `config.steps`; returns the loss history (one row per logged step)."""
        cfg = self.config
        acc = self.accelerator
        if not self.maybe_resume():
            _seed_all(cfg.seed + acc.process_index)  # the model is already built: only the noise differs per rank
        self.model.to(acc.device)
        self._broadcast_params()
        self.model.train()
        self.model.vae.eval()
        optimizer = acc.prepare(self.optimizer)
        it = self._loader()
        bar = None
        if progress and acc.is_main_process:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train[{cfg.phase}]", unit="step")
        for batch in it:
            if cfg.deadline is not None and self._on_any_process(time.time() > cfg.deadline):
                logger.info("%s stopped at step %d by the deadline; rerun to resume", cfg.phase, self.step)
                self.save_checkpoint()
                break
            lr = cfg.lr * min(1.0, (self.step + 1) / max(cfg.warmup_steps, 1))
            for g in optimizer.param_groups:
                g["lr"] = lr
            with acc.autocast():
                loss = self._phase_loss(batch)
            loss = self._average_gradients(loss)
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"{cfg.phase} loss is {loss} at step {self.step}; last good checkpoint kept at "
                    f"{self.checkpoint_path}. Lower the learning rate or check the data."
                )
            if cfg.grad_clip:
                acc.clip_grad_norm_(self.params, cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            self.step += 1
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                self.history.append({"step": self.step, "loss": loss, "lr": lr})
                logger.info("%s step %d loss %.5f", cfg.phase, self.step, loss)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.save_checkpoint()
        if bar is not None:
            bar.close()
        if cfg.phase == "vae" and self.finished:
            self.calibrate_vae_scale()
        self.model.eval()
        return self.history

    def _broadcast_params(self) -> None:
        """Start every process from the main process's model (as DDP does), whatever each one built."""
        if self.accelerator.num_processes > 1:
            for p in self.model.parameters():
                dist.broadcast(p.data, src=0)

    def _average_gradients(self, loss: float) -> float:
        """Average gradients and the loss over processes in one all-reduce; returns the mean loss.

        A gradient that is None on every process stays None (AdamW skips it, as in a one-process run);
        one missing on some processes counts as zeros there, as in DDP. Runs before clipping, so every
        process clips and steps the same averaged gradient.
        """
        world = self.accelerator.num_processes
        if world == 1:
            return loss
        device = self.accelerator.device
        used = torch.tensor([float(p.grad is not None) for p in self.params], device=device)
        flat = torch.cat([
            *(p.grad.reshape(-1).float() if p.grad is not None else torch.zeros(p.numel(), device=device)
              for p in self.params),
            used,
            torch.tensor([loss], device=device),
        ])
        dist.all_reduce(flat)
        flat /= world
        *grads, used, mean_loss = flat.split([p.numel() for p in self.params] + [len(self.params), 1])
        for p, g, u in zip(self.params, grads, used.tolist()):
            p.grad = g.view_as(p).to(p.dtype) if u > 0 else None
        return float(mean_loss)

    def _on_any_process(self, flag: bool) -> bool:
        """Whether `flag` holds on any process, so that all of them take the same branch."""
        if self.accelerator.num_processes == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.accelerator.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    @property
    def finished(self) -> bool:
        return self.step >= self.config.steps

    def _phase_loss(self, batch: dict[str, Any]) -> float:
        """Forward + backward for one batch; returns the loss value."""
        if self.config.phase == "vae":
            loss = self._vae_loss(batch)
            self.accelerator.backward(loss)
            return float(loss.detach())
        if self.config.phase == "slow":
            loss = self.model.training_loss(batch)
            self.accelerator.backward(loss)
            return float(loss.detach())
        return self._slow_fast_episode(batch)

    def _vae_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        frames = frames_to_tensor(batch["target"], self.model.config.frame_size, "target")
        x = frames.to(self.accelerator.device).flatten(0, 1).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        posterior = self.model.vae.encode(x).latent_dist
        recon = self.model.vae.decode(posterior.sample()).sample
        return torch.nn.functional.mse_loss(recon.float(), x) + self.config.vae_kl_weight * posterior.kl().mean()

    def _slow_fast_episode(self, batch: dict[str, Any]) -> float:
        """Inner loop: Θ learns each chunk after Φ+Θ is scored on it; outer: Φ's gradient over the episodes.

        Every episode gets its own fresh Θ, so episodes of a batch run one after another.
        """
        cfg = self.model.config
        frames = frames_to_tensor(batch["frames"], cfg.frame_size, "frames")
        actions = batch["actions"]
        num_episodes, num_chunks = actions.shape[:2]
        tc, tn = cfg.context_frames, cfg.new_frames
        total = 0.0
        for e in range(num_episodes):
            self.memory.reset()
            for k in range(num_chunks):
                chunk_batch = {
                    "context": frames[e : e + 1, k * tn : k * tn + tc],
                    "target": frames[e : e + 1, tc + k * tn : tc + (k + 1) * tn],
                    "text": [batch["texts"][k][e]],  # default collate: chunks x episodes
                    "action": actions[e : e + 1, k],
                }
                latents = self.model.batch_latents(chunk_batch)
                loss = self.model.latent_loss(latents, chunk_batch) / (num_chunks * num_episodes)
                self.accelerator.backward(loss)
                total += float(loss.detach())
                for p in self.memory.params:  # Θ is frozen for the outer update
                    p.grad = None
                self.memory.update(Chunk(chunk_batch["target"], latents, tc))
        return total

    def calibrate_vae_scale(self, num_batches: int = 4) -> float:
        """Set the latent scaling factor to 1/std of the latents, as Stable Diffusion's VAE does."""
        sampler = StepBatchSampler(len(self.dataset), self.config.batch_size, self.config.seed, 0, num_batches)
        lat = []
        with torch.no_grad():
            for batch in DataLoader(self.dataset, batch_sampler=sampler, generator=torch.Generator()):
                frames = frames_to_tensor(batch["target"], self.model.config.frame_size, "target")
                self.model.config.vae_scaling_factor = 1.0
                lat.append(self.model.encode_frames(frames).float().cpu())
        scale = float(1.0 / torch.cat(lat).std())
        self.model.config.vae_scaling_factor = scale
        self.model.vae.register_to_config(scaling_factor=scale)
        return scale

    def _write_log(self) -> None:
        """Rewrite the CSV loss log from the checkpointed history (so a resumed run never repeats rows)."""
        path = self.out / f"{self.config.phase}_log.csv"
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["step", "loss", "lr"])
            writer.writeheader()
            writer.writerows(self.history)
        os.replace(tmp, path)
