"""Slow learning, the slow-fast loop, VAE fitting and few-step distillation, with atomic checkpoints and exact resume.

Phases (run one per `Trainer.fit` call, in this order for a model from scratch):
- `vae`: fit the small AutoencoderKL on frames, then set the latent scaling factor (frozen afterwards).
- `slow`: update Φ (the UNet and action encoder) on chunk windows.
- `slow_fast`: per episode, Θ learns chunk after chunk (inner loop); Φ is updated with Θ frozen on the
  loss of each chunk given the memory of the chunks before it (outer loop), so Φ learns to use Θ. The
  episodes of a batch run together, each with its own Θ (`BatchedTempLoRA`: one forward/backward per
  chunk for all of them). Θ is structurally out of the outer step: a plain tensor, neither a parameter of
  the model nor among the optimizer's, that takes no gradient from the outer loss. The episode windows' length is the data's
  (`experiments.train`'s ``data.episode_chunks``, default 12: a scene memory episode's first visit and
  its revisit, 6-8 chunks apart, fall in one window; 4 never held both).
- `distill`: Φ learns to sample in `student_steps` DDIM passes what the frozen Φ it started from samples in
  `teacher_steps` (`worldmodel.distill`; issue 16's speed), from the latent cache; the model then samples with
  `student_steps`.

Data order depends only on (seed, step), and RNG states are checkpointed, so a resumed run repeats the
uninterrupted run's loss curve.

Several processes (`accelerate launch --num_processes N`) train data-parallel on the same global batch:
each takes every N-th item of the step's batch, draws its own diffusion noise (seeded with seed + rank),
and gradients are averaged before the optimizer step, so all processes keep identical weights. Only the
main process writes files.

The fast slow phase (`latent_cache=True`; `experiments/conf/train_fast.yaml` turns it all on): every
window's latents are encoded once by the frozen VAE and held on the device (`worldmodel.latent_cache`),
a step gathers its windows by index there (the same windows, in the same order, and the same noise draws
as the data-loader path), the loss can be `torch.compile`d, and nothing waits on the GPU between logged
steps (the loss is checked for NaN/inf at every log and checkpoint). In every phase: fused AdamW on CUDA
(`fused_adamw`), an exponential moving average of the trained weights (`ema_decay` > 0) that the
checkpoint keeps beside the weights and that the model holds when `fit` returns (so it is what gets saved
and sampled from), and attention through `worldmodel.attention` (batch-chunked SDPA, `attention` names
the kernels), which runs at every batch size.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import random
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import gather_object
from diffusers.models.attention_processor import AttnProcessor2_0
from torch.utils.data import DataLoader, Dataset, Sampler

from .attention import check_attention, sdpa_backends
from .config import WorldModelConfig
from .diffusion import new_frames_error, revisit_chunks, unet_input
from .distill import SamplerDistillation
from .latent_cache import CachedBatch, LatentCache, encode_cached_action
from .model import Chunk, SlowFastVGen, frames_to_tensor
from .memory import BatchedTempLoRA

logger = get_logger(__name__)  # logs on the main process only
Phase = Literal["vae", "slow", "slow_fast", "distill"]
CHECKPOINT = "last.ckpt"


def check_student(config: "TrainConfig", model_config: WorldModelConfig) -> None:
    """A distilled student (``model_config.distilled_from``) starts no slow, slow_fast or distill phase unless the
    phase sets ``from_student`` (`TrainConfig`): session 45's header had to warn the next lease by hand."""
    taught = model_config.distilled_from
    if config.phase != "vae" and taught is not None and not config.from_student:
        raise ValueError(f"{config.phase}: the model is a student distilled from {taught} passes to "
                         f"{model_config.sample_steps} (its config's distilled_from): start from its teacher, or "
                         f"set from_student=true to train the student itself")


@dataclass
class TrainConfig:
    phase: Phase = "slow"
    steps: int = 1000
    batch_size: int = 8
    lr: float = 5e-6  # the paper's slow learning rate; from-scratch runs use larger
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    warmup_steps: int = 0
    # After the warm-up: "constant" keeps lr; "cosine" decays it to lr * min_lr_ratio at `steps` (a run that
    # continues a model sets `steps` to where this run ends, so the decay lands inside the run).
    lr_schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = 0.1
    # cosine with a deadline: decay over whichever ends first, `steps` or the deadline, so a run the time limit
    # stops still ends at the low lr (session 10's run 6 stopped at step 840 of 1,500 with lr near 3e-4 and was no
    # better than its start). The schedule's progress is saved, so a rerun continues from where the decay was.
    decay_by_deadline: bool = False
    mixed_precision: Literal["no", "bf16", "fp16"] | None = None  # None: bf16 on GPU, no on CPU
    seed: int = 0
    num_workers: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    out_dir: str = "runs/train"
    vae_kl_weight: float = 1e-6
    deadline: float | None = None  # time.time() at which to checkpoint and stop (a rerun resumes)
    # Speed (see the module docstring). The latent cache applies to the slow and distill phases only.
    latent_cache: bool = False  # encode every window once with the frozen VAE; keep the latents on the device
    cache_dtype: Literal["float32", "bfloat16"] = "float32"  # bfloat16 halves the cache's memory
    cache_batch_size: int = 256  # windows per VAE encode while building the cache
    compile: bool = False  # torch.compile the cached slow step's loss (forward; backward follows)
    attention: str = "auto"  # SDPA kernels: auto | flash | efficient | cudnn | math | default (worldmodel.attention)
    fused_adamw: bool | None = None  # None: fused on CUDA, the default foreach kernels elsewhere
    ema_decay: float = 0.0  # 0: no EMA; else the decay of the weights' moving average (saved and sampled)
    ema_warmup: bool = True  # decay min(ema_decay, (1 + step) / (10 + step)): short runs average fewer steps
    # slow_fast: the weight of Φ's gradient through each chunk's last fast step into the later chunks' losses (second
    # order, `BatchedTempLoRA.update(differentiable=True)`), so Φ learns to write into Θ what a later chunk reads;
    # 0: first order (Θ a constant to the outer loss). About 2x a step's compute on the CPU. On the shipped default
    # at a fast lr of 2e-3 the full term (1.0) was 3.3x the first-order gradient's norm, at cosine -0.41 with it
    # (one CPU batch, 2 episodes x 4 chunks): a weight below 1 keeps the ordinary gradient in the mix.
    meta_gradient: float = 0.0
    # slow_fast with meta_gradient > 0: how many of the latest fast updates each chunk's outer loss differentiates.
    # 0 (default): every earlier update of the window, so the loss at a drawer's reopen reaches Φ through the update on
    # the chunk that hid the cube, 6-10 chunks before; 1: the last update alone (sessions 8-9: it cannot span that gap).
    # Each kept update holds its fast step's graph until its readers are scored: memory grows with the count.
    meta_updates: int = 0
    # slow, slow_fast and vae phases: the loss weight of the latent cells along the cube's path (within `object_radius`
    # cells, Chebyshev, of the cube in the window's last context frame or any new frame that shows it; the episodes'
    # `cube_pixel` record), 1 + object_weight against 1 elsewhere, as a weighted mean: the OGBench cube is ~3 px of a
    # 64 px frame, so the plain mean barely scores where generated chunks put it. 0: the plain mean, exactly as
    # before. Windows without a record (synthetic, Crafter) weigh 1 everywhere. In slow_fast it weighs the outer loss
    # of every chunk (the cube at a drawer's reopen is what memory has to bring back); the fast update's own loss
    # stays plain. In the vae phase it weighs the reconstruction's pixels by the same map, frame by frame
    # (`SlowFastVGen.frame_object_weights`): the round trip alone read the cube's colour at the reopen in 10 of 15
    # local episodes (session 17), a cap on any memory of it.
    object_weight: float = 0.0
    object_radius: int = 1
    # slow_fast: each episode's outer loss at a chunk that brings the cube back (`diffusion.revisit_chunks`: seen
    # before, hidden in the whole context, seen in a new frame: a drawer's reopen) counts 1 + revisit_weight times
    # (`SlowFastVGen.latent_loss`'s sample_weights). Such a chunk is 1 of a 12-chunk window's 12 and the cube a few
    # cells of it, so without the weight the outer gradient is nearly the ordinary slow one. Episodes without a
    # record count once. 0: as before. (Session 18: 20 on run 10 for 100 steps lost 0.6-1.0 dB, recall at chance.)
    revisit_weight: float = 0.0
    # distill (`worldmodel.distill`): the frozen teacher's DDIM passes, and the student's (what the model then samples
    # with). The phase trains from the latent cache (latent_cache=True) and `compile` compiles the teacher too.
    teacher_steps: int = 8
    student_steps: int = 1
    # slow, slow_fast and distill phases on a distilled student (its config's `distilled_from`): refused unless true.
    # Distil from its teacher instead; the slow phases' diffusion loss trains it back toward many passes.
    from_student: bool = False

    def __post_init__(self) -> None:
        if self.phase not in ("vae", "slow", "slow_fast", "distill"):
            raise ValueError(f"unknown phase {self.phase!r}; expected 'vae', 'slow', 'slow_fast' or 'distill'")
        for name in ("teacher_steps", "student_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.phase == "distill":
            if self.student_steps >= self.teacher_steps:
                raise ValueError(f"distill: student_steps ({self.student_steps}) must be fewer than teacher_steps "
                                 f"({self.teacher_steps})")
            if not self.latent_cache:
                raise ValueError("distill trains from the latent cache: set latent_cache=true")
        if self.meta_gradient < 0:
            raise ValueError(f"meta_gradient must be >= 0, got {self.meta_gradient}")
        if isinstance(self.meta_updates, bool) or not isinstance(self.meta_updates, int) or self.meta_updates < 0:
            raise ValueError(f"meta_updates must be an integer >= 0 (0: every update of the window), "
                             f"got {self.meta_updates!r}")
        for name in ("object_weight", "revisit_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
            setattr(self, name, float(value))
        if isinstance(self.object_radius, bool) or not isinstance(self.object_radius, int) or self.object_radius < 0:
            raise ValueError(f"object_radius must be an integer >= 0 (latent cells), got {self.object_radius!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.cache_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"cache_dtype must be 'float32' or 'bfloat16', got {self.cache_dtype!r}")
        check_attention(self.attention)


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
            yield step_indices(self.n, self.bs, self.seed, step, self.rank, self.world).tolist()

    def _index(self, k: int) -> int:
        epoch, pos = divmod(k, self.n)
        return int(_epoch_perm(self.n, self.seed, epoch)[pos])

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)


@functools.lru_cache(maxsize=4)
def _epoch_perm(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the `n` items in one epoch (a step's batch can span two epochs)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))


def step_indices(n: int, batch_size: int, seed: int, step: int, rank: int = 0, num_processes: int = 1) -> torch.Tensor:
    """Items of `step`'s global batch that process `rank` takes (positions rank, rank + N, ...), as a tensor."""
    k = torch.arange(step * batch_size + rank, (step + 1) * batch_size, num_processes)
    epoch, pos = k // n, k % n
    out = torch.empty_like(k)
    for e in epoch.unique().tolist():
        sel = epoch == e
        out[sel] = _epoch_perm(n, seed, e)[pos[sel]]
    return out


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


def checkpointed_weights(path: Path) -> tuple[dict[str, torch.Tensor], int, dict[str, Any]]:
    """(weights, step, model config) of the model a run would save if it ended at its checkpoint `path`.

    The saved model holds the moving average where the run keeps one (`fit` puts it into the model before
    `save_pretrained`), so the EMA's tensors replace the trained ones. A run whose machine may be taken
    before it ends (a device lease) can so be brought back from its last checkpoint
    (`experiments.export_checkpoint`).
    """
    state = load_checkpoint(path)
    weights = dict(state["model"])
    weights.update(state.get("ema") or {})
    return weights, int(state["step"]), state["model_config"]


class Trainer:
    """Runs one phase for `config.steps` optimizer steps, resuming from `out_dir/last.ckpt` if present."""

    def __init__(self, model: SlowFastVGen, dataset: Dataset, config: TrainConfig):
        self.model, self.dataset, self.config = model, dataset, config
        check_student(config, model.config)
        mp = config.mixed_precision or ("bf16" if torch.cuda.is_available() else "no")
        self.accelerator = Accelerator(mixed_precision=mp, cpu=not torch.cuda.is_available())
        check_batch_size(config.batch_size, self.accelerator.num_processes, config.phase)
        self.out = Path(config.out_dir)
        # one Θ per episode of this process's share of the batch, made where the model trains: Θ is built on the
        # model's device (a slow_fast run of its own found Φ on the GPU and Θ on the CPU)
        episodes = config.batch_size // self.accelerator.num_processes
        model.to(self.accelerator.device)
        self.memory = BatchedTempLoRA(model, episodes) if config.phase == "slow_fast" else None
        self.distillation = SamplerDistillation(model, config.teacher_steps, config.student_steps, config.compile) \
            if config.phase == "distill" else None
        self.param_names, self.params = self._trainable()
        self.check_theta_outside()
        fused = torch.cuda.is_available() if config.fused_adamw is None else config.fused_adamw
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay,
                                           **({"fused": True} if fused else {}))
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.ema: list[torch.Tensor] | None = None  # one float32 tensor per trained parameter
        self._ema_state: dict[str, torch.Tensor] | None = None  # from a checkpoint, until fit places it
        self.cache: LatentCache | None = None
        self.cache_seconds = 0.0
        self._loss_fn: Any = None  # the (compiled) cached loss, made at the first cached step
        self._alphas: torch.Tensor | None = None  # the noise schedule's alphas_cumprod on the device
        self._loss_acc = [0.0, 0]  # cached path: sum and count of the losses since the last logged row
        self.decay_progress = 0.0  # decay_by_deadline: the cosine's progress by the clock so far (checkpointed)
        self._decay_start: tuple[float, float] | None = None  # (time, progress) where this run's decay began

    @property
    def cached(self) -> bool:
        """Whether this phase trains from the on-device latent cache."""
        return self.config.latent_cache and self.config.phase in ("slow", "distill")

    def _trainable(self) -> tuple[list[str], list[torch.nn.Parameter]]:
        m = self.model
        m.requires_grad_(False)
        if self.config.phase == "vae":
            m.vae.requires_grad_(True)
            named = [(f"vae.{n}", p) for n, p in m.vae.named_parameters()]
        else:
            groups = {"unet": m.unet, "action_encoder": m.action_encoder}
            for g in groups.values():
                g.requires_grad_(True)
            named = [(f"{gn}.{n.replace('.base_layer.', '.')}", p) for gn, g in groups.items()
                     for n, p in g.named_parameters() if p.requires_grad and "lora_" not in n]
        return [n for n, _ in named], [p for _, p in named]

    def check_theta_outside(self) -> None:
        """Θ is the inner loop's alone: never among the outer optimizer's parameters, never a gradient leaf."""
        if self.memory is not None and (any(p is self.memory.theta for p in self.params)
                                        or self.memory.theta.requires_grad):
            raise RuntimeError("slow_fast: Temp-LoRA's Θ is among the outer optimizer's parameters")

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
            "decay_progress": self.decay_progress,
        }
        if self.ema is not None:
            state["ema"] = {n: e.detach().cpu() for n, e in zip(self.param_names, self.ema)}
        if self.cached:
            state["loss_acc"] = list(self._loss_acc)
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
        self.decay_progress, self._decay_start = float(state.get("decay_progress", 0.0)), None
        self._ema_state = state.get("ema")
        self._loss_acc = list(state.get("loss_acc", [0.0, 0]))
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
        """Train up to `config.steps`; returns the loss history (one row per logged step).

        With `ema_decay` > 0 the model holds the moving average of its weights when this returns.
        """
        cfg = self.config
        acc = self.accelerator
        if not self.maybe_resume():
            _seed_all(cfg.seed + acc.process_index)  # the model is already built: only the noise differs per rank
        self.model.to(acc.device)
        self._broadcast_params()
        self._init_ema()
        if cfg.attention == "default":  # diffusers' own processor, unchunked (the model is built chunked)
            self.model.unet.set_attn_processor(AttnProcessor2_0())
        self.model.train()
        self.model.vae.eval()
        optimizer = acc.prepare(self.optimizer)
        bar = None
        if progress and acc.is_main_process:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train[{cfg.phase}]", unit="step")
        if self.cached:
            self._fit_cached(optimizer, bar)
        else:
            self._fit_loader(optimizer, bar)
        if bar is not None:
            bar.close()
        self.apply_ema()
        if cfg.phase == "vae" and self.finished:
            self.calibrate_vae_scale()
        if cfg.phase == "distill" and self.step > 0:  # what the student learnt to sample with
            self.model.config.sample_steps = cfg.student_steps
            self.model.config.distilled_from = cfg.teacher_steps
            if self.model.config.temp_lora.timesteps == "sampler":  # Θ keeps learning on the teacher's passes
                self.model.config.temp_lora = replace(self.model.config.temp_lora, timesteps=cfg.teacher_steps)
        self.model.eval()
        return self.history

    def _fit_loader(self, optimizer: Any, bar: Any) -> None:
        """One batch from the DataLoader per step; the loss is read (and checked) at every step."""
        cfg, acc = self.config, self.accelerator
        for batch in self._loader():
            if cfg.deadline is not None and self._on_any_process(time.time() > cfg.deadline):
                logger.info("%s stopped at step %d by the deadline; rerun to resume", cfg.phase, self.step)
                self.save_checkpoint()
                break
            lr = self._set_lr(optimizer)
            with acc.autocast(), sdpa_backends(cfg.attention):
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
            self._update_ema()
            self.step += 1
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                self.history.append({"step": self.step, "loss": loss, "lr": lr})
                logger.info("%s step %d loss %.5f", cfg.phase, self.step, loss)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.save_checkpoint()

    def _fit_cached(self, optimizer: Any, bar: Any) -> None:
        """Slow learning from the on-device latent cache; the GPU is waited on only at logs and checkpoints.

        Each logged row holds the mean loss of the steps since the previous row and the global windows per
        second over them (the first row after a start includes `torch.compile`'s compilation).
        """
        cfg, acc = self.config, self.accelerator
        if self.finished:
            return
        self.build_cache()
        world = acc.num_processes
        loss_sum = torch.zeros((), device=acc.device)
        first_bad = torch.full((), -1, dtype=torch.long, device=acc.device)  # first step with a non-finite loss
        since, since_step = time.perf_counter(), self.step
        for step in range(self.step, cfg.steps):
            if cfg.deadline is not None and (world == 1 or step % cfg.log_every == 0) and \
                    self._on_any_process(time.time() > cfg.deadline):
                logger.info("%s stopped at step %d by the deadline; rerun to resume", cfg.phase, self.step)
                self._flush_losses(loss_sum, first_bad)
                loss_sum.zero_()
                self.save_checkpoint()
                break
            lr = self._set_lr(optimizer)
            loss = self.cached_step(optimizer, step)
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
            self._update_ema()
            self.step += 1
            loss_sum += loss
            self._loss_acc[1] += 1
            if bar is not None:
                bar.update(1)
            logged = self.step % cfg.log_every == 0 or self.step == cfg.steps
            if logged or self.step % cfg.checkpoint_every == 0:
                self._flush_losses(loss_sum, first_bad)
                loss_sum.zero_()
            if logged:
                now = time.perf_counter()
                rate = (self.step - since_step) * cfg.batch_size / max(now - since, 1e-9)
                mean = self._loss_acc[0] / max(self._loss_acc[1], 1)
                self.history.append({"step": self.step, "loss": mean, "lr": lr, "windows_per_s": round(rate, 1)})
                self._loss_acc = [0.0, 0]
                logger.info("%s step %d loss %.5f (%.0f windows/s)", cfg.phase, self.step, mean, rate)
                if bar is not None:
                    bar.set_postfix(loss=f"{mean:.4f}")
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.save_checkpoint()
            if logged:
                since, since_step = time.perf_counter(), self.step

    def build_cache(self) -> LatentCache:
        """Encode the dataset's windows into `self.cache` once (collective with several processes)."""
        if self.cache is None:
            cfg, acc = self.config, self.accelerator
            self.model.to(acc.device)
            start = time.perf_counter()
            devices = [acc.device] if acc.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):  # loading the text model draws random numbers
                self.cache = LatentCache.build(
                    self.model, self.dataset, acc.device, batch_size=cfg.cache_batch_size,
                    num_workers=cfg.num_workers, dtype=getattr(torch, cfg.cache_dtype), rank=acc.process_index,
                    num_processes=acc.num_processes)
            self.cache_seconds = time.perf_counter() - start
            logger.info("latent cache: %d windows, %.1f MiB on %s, built in %.1f s", len(self.cache),
                        self.cache.nbytes / 2**20, acc.device, self.cache_seconds)
            if cfg.object_weight and self.cache.object_pixels is None:
                logger.warning("object_weight=%s but no window of the data has a visible cube record (cube_pixel): "
                               "the loss is the plain mean", cfg.object_weight)
        return self.cache

    def cached_step(self, optimizer: Any, step: int) -> torch.Tensor:
        """Forward, backward, gradient all-reduce and optimizer step of `step`'s batch; returns the mean
        loss over processes as a tensor (nothing waits on the GPU)."""
        cfg, acc = self.config, self.accelerator
        if self._loss_fn is None:
            fn = self._cached_loss if self.distillation is None else self.distillation.student_loss
            self._loss_fn = torch.compile(fn, dynamic=False) if cfg.compile else fn
            self._alphas = self.model.scheduler.alphas_cumprod.to(acc.device, torch.float32)
        index = step_indices(len(self.cache), cfg.batch_size, cfg.seed, step, acc.process_index, acc.num_processes)
        batch = self.cache.batch(index)
        if self.distillation is not None:  # its own draws: noise, the student's passes, the teacher's samples
            with acc.autocast(), sdpa_backends(cfg.attention):
                loss = self.distillation.loss(batch, self._loss_fn, self._alphas, self._object_weights(batch))
        else:
            drop, noise, t = self._draw_noise(batch)
            weights = self._object_weights(batch)
            with acc.autocast(), sdpa_backends(cfg.attention):
                loss = self._loss_fn(batch.latents, batch.text_emb, batch.vectors, drop, noise, t, self._alphas,
                                     weights)
        acc.backward(loss)
        loss = self._all_reduce_gradients(loss.detach().float())
        if cfg.grad_clip:
            acc.clip_grad_norm_(self.params, cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    def _flush_losses(self, loss_sum: torch.Tensor, first_bad: torch.Tensor) -> None:
        """Move the on-device loss sum into `_loss_acc` (one wait on the GPU); raise if a loss was not finite."""
        bad = int(first_bad)
        if bad >= 0:
            raise FloatingPointError(
                f"{self.config.phase} loss is not finite at step {bad}; last good checkpoint kept at "
                f"{self.checkpoint_path}. Lower the learning rate or check the data.")
        self._loss_acc[0] += float(loss_sum)

    def _draw_noise(self, batch: CachedBatch) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Condition dropout, noise and timesteps, drawn in the order `SlowFastVGen.training_loss` draws them."""
        mc, lat = self.model.config, batch.latents
        drop = None
        if mc.cond_dropout > 0:
            drop = torch.rand(lat.shape[0], self.model.action_encoder.num_parts, device=lat.device) < mc.cond_dropout
        noise = torch.randn_like(lat)
        t = torch.randint(0, self.model.scheduler.config.num_train_timesteps, (lat.shape[0],), device=lat.device)
        return drop, noise, t

    def _object_weights(self, batch: CachedBatch) -> torch.Tensor | None:
        """The cached batch's loss weights, built by the eager loss's own `SlowFastVGen.object_weights` on the
        device outside the compiled loss; None (the plain mean) at object_weight 0 or with no records."""
        records = {"object_pixels": batch.object_pixels, "frame_width": batch.frame_width}
        return self.model.object_weights(records, self.config.object_weight, self.config.object_radius,
                                         batch.latents.device)

    def _cached_loss(self, latents: torch.Tensor, text_emb: torch.Tensor | None, vectors: torch.Tensor | None,
                     drop: torch.Tensor | None, noise: torch.Tensor, t: torch.Tensor,
                     alphas_cumprod: torch.Tensor | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
        """`SlowFastVGen.latent_loss` on a cached batch with the noise given (the part `compile` traces).

        The same computation as `diffusion_loss` (DDPMScheduler's `add_noise` / `get_velocity` formulas on
        `alphas_cumprod`, passed in on the device), with the loss written for context-first windows: the
        mean over the new frames, or with `weights` ((B, 1, 1, h, w) from `_object_weights`) the weighted mean
        sum(weight * err^2) / sum(weight) over them, as `masked_mse` computes it. Left out of the traced code:
        the scheduler, which moves its table to the device on its first call (a second compilation), and
        `masked_mse`'s data-dependent check (a graph break and a wait on the GPU).
        """
        m, tc = self.model, self.model.config.context_frames
        b = latents.shape[0]
        cond = encode_cached_action(m.action_encoder, text_emb, vectors, drop, b)
        given = torch.zeros(b, latents.shape[2], dtype=torch.bool, device=latents.device)
        given[:, :tc] = True
        table = m.scheduler.alphas_cumprod if alphas_cumprod is None else alphas_cumprod
        a = table.to(latents.device, latents.dtype)[t].view(b, 1, 1, 1, 1)
        sqrt_a, sqrt_1ma = a ** 0.5, (1 - a) ** 0.5
        noisy = sqrt_a * latents + sqrt_1ma * noise
        pred = m.unet(unet_input(noisy, latents, given), t, encoder_hidden_states=cond).sample
        target = sqrt_a * noise - sqrt_1ma * latents if m.config.prediction_type == "v_prediction" else noise
        return new_frames_error(pred[:, :, tc:], target[:, :, tc:], weights)

    def lr_at(self, step: int, progress: float | None = None) -> float:
        """The learning rate of optimizer step ``step`` (0-based): linear warm-up, then the schedule; ``progress``
        (in [0, 1]) replaces the cosine's step-based progress when it is further along."""
        cfg = self.config
        lr = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
        if cfg.lr_schedule == "cosine" and step >= cfg.warmup_steps:
            done = min(1.0, (step + 1 - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1))
            done = max(done, min(1.0, progress or 0.0))
            lr *= cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * done))
        return lr

    def _clock_progress(self) -> float | None:
        """`decay_by_deadline`: the cosine's progress by the clock, from where this run's decay began (the saved
        progress of an earlier run, or 0) to 1 at the deadline. The same on every process: with several, the clock
        is read at log steps only and the furthest process's reading is taken."""
        cfg = self.config
        if not (cfg.decay_by_deadline and cfg.lr_schedule == "cosine" and cfg.deadline is not None) \
                or self.step < cfg.warmup_steps:
            return None
        now = time.time()
        if self._decay_start is None:  # the decay's first step in this run: it runs from here to the deadline
            self._decay_start = (now, self.decay_progress)
        if self.accelerator.num_processes > 1 and self.step % cfg.log_every:
            return self.decay_progress
        t0, p0 = self._decay_start
        p = p0 + (1.0 - p0) * (now - t0) / max(cfg.deadline - t0, 1e-9)
        if self.accelerator.num_processes > 1:
            t = torch.tensor([p], device=self.accelerator.device, dtype=torch.float64)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            p = float(t.item())
        self.decay_progress = max(self.decay_progress, min(1.0, p))
        return self.decay_progress

    def _set_lr(self, optimizer: Any) -> float:
        lr = self.lr_at(self.step, self._clock_progress())
        for g in optimizer.param_groups:
            g["lr"] = lr
        return lr

    # --------------------------------------------------------------------------------------------- EMA
    def _init_ema(self) -> None:
        """A float32 copy of the trained weights on their device (from the checkpoint when resuming)."""
        if not self.config.ema_decay:
            return
        state = self._ema_state
        if state is not None and list(state) != self.param_names:
            logger.warning("the checkpoint's EMA does not match the trained parameters: EMA restarts from the weights")
            state = None
        if state is None:
            self.ema = [p.detach().float().clone() for p in self.params]
        else:
            self.ema = [state[n].to(p.device, torch.float32) for n, p in zip(self.param_names, self.params)]
        self._ema_state = None

    def ema_decay_at(self, step: int) -> float:
        """The decay of the update after `step` optimizer steps (`step` >= 1)."""
        d = self.config.ema_decay
        return min(d, (1 + step) / (10 + step)) if self.config.ema_warmup else d

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        weight = 1.0 - self.ema_decay_at(self.step + 1)
        torch._foreach_lerp_(self.ema, [p.detach().float() if p.dtype != torch.float32 else p.detach()
                                        for p in self.params], weight)

    @torch.no_grad()
    def apply_ema(self) -> None:
        """Put the moving average into the model's weights (what is then saved and sampled from)."""
        if self.ema is None:
            return
        for p, e in zip(self.params, self.ema):
            p.copy_(e)

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

    def _all_reduce_gradients(self, loss: torch.Tensor) -> torch.Tensor:
        """`_average_gradients` without waiting on the GPU: the loss stays a tensor.

        Every process runs the same graph here, so the same parameters have gradients on all of them.
        """
        world = self.accelerator.num_processes
        if world == 1:
            return loss
        params = [p for p in self.params if p.grad is not None]
        flat = torch.cat([*(p.grad.reshape(-1).float() for p in params), loss.reshape(1)])
        dist.all_reduce(flat)
        flat /= world
        *grads, mean_loss = flat.split([p.numel() for p in params] + [1])
        for p, g in zip(params, grads):
            p.grad = g.view_as(p).to(p.dtype)
        return mean_loss[0]

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
            loss = self.model.training_loss(batch, self.config.object_weight, self.config.object_radius)
            self.accelerator.backward(loss)
            return float(loss.detach())
        return self._slow_fast_episode(batch)

    def _vae_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        frames = frames_to_tensor(batch["target"], self.model.config.frame_size, "target")
        x = frames.to(self.accelerator.device).flatten(0, 1).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        posterior = self.model.vae.encode(x).latent_dist
        recon = self.model.vae.decode(posterior.sample()).sample
        kl = self.config.vae_kl_weight * posterior.kl().mean()
        weights = self.model.frame_object_weights(batch, self.config.object_weight, self.config.object_radius, x.device)
        if weights is None:
            return torch.nn.functional.mse_loss(recon.float(), x) + kl
        return ((recon.float() - x) ** 2 * weights).sum() / (weights.sum() * x.shape[1]) + kl

    def _slow_fast_episode(self, batch: dict[str, Any]) -> float:
        """Inner loop: each episode's Θ learns each chunk after Φ+Θ is scored on it; outer: Φ's gradient
        over the episodes. The episodes run together, each with its own Θ (row e of the memory).

        With ``meta_gradient`` each fast update also leaves its step rebuilt as a function of Φ (`update`'s
        ``differentiable``, zero in value). A chunk's loss sees Θ plus a zero probe; the probe's gradient is that
        loss's gradient by Θ. After the last chunk one backward sends, into each kept update's step, the sum of
        the probe gradients of the chunks that read it (the next ``meta_updates``, or all later ones): each fast
        step's second-order graph is walked once however many chunks read it."""
        cfg = self.model.config
        frames = frames_to_tensor(batch["frames"], cfg.frame_size, "frames")
        actions = batch["actions"]
        num_episodes, num_chunks = actions.shape[:2]
        if num_episodes != self.memory.num_envs:
            raise ValueError(f"slow_fast: a batch of {num_episodes} episodes for {self.memory.num_envs} memories")
        tc, tn = cfg.context_frames, cfg.new_frames
        ids = list(range(num_episodes))
        self.memory.reset(ids)
        reach = self.config.meta_updates or num_chunks  # update j is read by chunks j+1 .. j+reach
        steps: list[tuple[int, torch.Tensor]] = []  # (chunk, its update's rebuilt step x meta_gradient), not yet read
        reads: dict[int, torch.Tensor] = {}  # chunk -> its loss's gradient by Θ (the probe's)
        total = 0.0
        for k in range(num_chunks):
            chunk_batch = {
                "context": frames[:, k * tn : k * tn + tc],
                "target": frames[:, tc + k * tn : tc + (k + 1) * tn],
                "text": list(batch["texts"][k]),  # default collate: chunks x episodes
                "action": actions[:, k],
            }
            if "object_pixels" in batch:  # the chunk's rows: its context, then its new frames
                chunk_batch["object_pixels"] = batch["object_pixels"][:, k * tn : k * tn + tc + tn]
                chunk_batch["frame_width"] = batch["frame_width"]
            probe = torch.zeros_like(self.memory.theta, requires_grad=True) if steps else None
            self.memory.meta = probe
            with self.memory.applied(ids):  # Θ applied, a plain tensor: the outer loss gives it no gradient
                latents = self.model.batch_latents(chunk_batch)
                loss = self.model.latent_loss(latents, chunk_batch, self.config.object_weight,
                                              self.config.object_radius,
                                              self._revisit_weights(batch, k * tn, tc, tn)) / num_chunks
                self.accelerator.backward(loss)
            self.memory.meta = None
            if probe is not None and probe.grad is not None:
                reads[k] = probe.grad
            total += float(loss.detach())
            steps = self._meta_backward(steps, reads, k, reach, last=k == num_chunks - 1)
            meta = self.config.meta_gradient if k < num_chunks - 1 else 0.0  # no later chunk reads the last update
            self.memory.update(Chunk(chunk_batch["target"], latents.detach(), tc), ids, differentiable=meta > 0)
            if self.memory.meta is not None:
                steps.append((k, self.memory.meta if meta == 1.0 else meta * self.memory.meta))
            self.memory.meta = None
        return total

    def _revisit_weights(self, batch: dict[str, Any], start: int, tc: int, tn: int) -> torch.Tensor | None:
        """(B,) 1 + revisit_weight for the episodes whose chunk at frame `start` is a revisit, 1 for the others;
        None (the loss as before) when the weight is 0 or the runs have no cube record."""
        if self.config.revisit_weight == 0 or batch.get("object_pixels") is None:
            return None
        revisit = revisit_chunks(torch.as_tensor(batch["object_pixels"])[..., 2], start, tc, tn)
        return 1.0 + self.config.revisit_weight * revisit.float()

    @staticmethod
    def _meta_backward(steps: list[tuple[int, torch.Tensor]], reads: dict[int, torch.Tensor], k: int, reach: int,
                       last: bool) -> list[tuple[int, torch.Tensor]]:
        """After chunk k's loss: one backward into each kept update whose readers (the next `reach` chunks, or the
        rest of the window) have all been scored, with the sum of their gradients by Θ; the others stay kept.
        The probe gradients already carry any loss scaling of `accelerator.backward`."""
        outs, grads, kept = [], [], []
        for j, step in steps:
            if not (last or j + reach <= k):
                kept.append((j, step))
                continue
            read = [reads[i] for i in range(j + 1, min(j + reach, k) + 1) if i in reads]
            if read:
                outs.append(step)
                grads.append(torch.stack(read).sum(0) if len(read) > 1 else read[0])
        if outs:
            torch.autograd.backward(outs, grads)
        return kept

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
        fields = ["step", "loss", "lr"] + (["windows_per_s"] if any("windows_per_s" in r for r in self.history) else [])
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.history)
        os.replace(tmp, path)
