"""Train a SlowFast-VGen world model: VAE fit, slow learning, the slow-fast loop, then few-step distillation.

    python -m experiments.train                                   # tiny model on the synthetic world (CPU)
    python -m experiments.train preset=small data.source=data/scene out_dir=runs/small
    python -m experiments.train preset=small data.source=data/scene phases.slow.steps=0   # skip a phase
    python -m experiments.train --config-name train_fast init_from=default data.source=data/scene \
        phases.slow.steps=0 phases.distill.steps=2000 out_dir=runs/distilled   # sample in 1 DDIM pass, not 8
    python -m experiments.train preset=crafter data.source=data/crafter out_dir=runs/crafter
    accelerate launch --num_processes 8 -m experiments.train preset=small data.source=data/scene   # 8 GPUs

Each phase checkpoints atomically into `out_dir/<phase>/last.ckpt`; rerunning the same command resumes
where it stopped (a finished phase is skipped), so a run can be split across several calls. The final
weights go to `out_dir/model` (safetensors shards < 16 MiB + config.json + a model card). Under
`accelerate launch` every process runs this script; `batch_size` stays the global batch, split evenly
over the processes, and only the main process writes files.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from accelerate import PartialState
from accelerate.logging import get_logger
from omegaconf import DictConfig, OmegaConf

from envs.data import ChunkDataset, EpisodeDataset
from envs.world_model_env.assets import save_keeping_extras
from worldmodel.config import WorldModelConfig
from worldmodel.loading import load_model, model_folder
from worldmodel.model import SlowFastVGen
from worldmodel.train import TrainConfig, Trainer, check_batch_size, check_student

logger = get_logger("experiments.train")  # logs on the main process only
PHASES = ("vae", "slow", "slow_fast", "distill")


def load_source(data: DictConfig, frame_size: int) -> Any:
    """h5 files/folder, or freshly generated synthetic panning episodes."""
    if data.source == "synthetic":
        from envs.synthetic import random_episodes

        return random_episodes(data.synthetic_episodes, data.synthetic_chunks, seed=data.seed,
                               frame_size=frame_size, chunk_len=data.synthetic_chunk_len)
    return data.source


def slow_fast_windows(source: Any, mc: Any, data: DictConfig) -> EpisodeDataset:
    """The slow-fast phase's episode windows of ``data.episode_chunks`` chunks; an error when no episode is
    that long (shorter episodes are skipped)."""
    windows = EpisodeDataset(source, mc.context_frames, mc.new_frames, data.episode_chunks, frame_skip=data.frame_skip)
    if len(windows) == 0:
        raise ValueError(f"slow_fast: no episode has data.episode_chunks={data.episode_chunks} chunks; "
                         "collect longer episodes or lower data.episode_chunks")
    return windows


def build_model(cfg: DictConfig) -> SlowFastVGen:
    """``init_from`` (a model folder or 'default') or a fresh ``preset`` (drawn from the seeded global RNG),
    with ``model`` config overrides; ``text_cache``: instruction embeddings, so no text model is needed."""
    overrides = OmegaConf.to_container(cfg.model, resolve=True) or {}
    model, _ = load_model(cfg.init_from or cfg.preset, "cpu", text_cache=cfg.text_cache or None, seed=None,
                          **overrides)
    return model


def check_data(mc: WorldModelConfig, chunks: ChunkDataset) -> None:
    """Fail before any training when the data's frames or action vectors do not fit the model."""
    item = chunks[0]
    size = tuple(item["target"].shape[1:3])
    if size != (mc.frame_size, mc.frame_size):
        raise ValueError(f"the data has {size[0]}x{size[1]} frames but the model makes "
                         f"{mc.frame_size}x{mc.frame_size} ones; collect at that size or pick another preset")
    dim = item["action"].shape[-1]
    if mc.action_type != "text" and dim != mc.action_dim:
        raise ValueError(f"the data has {dim}-d action vectors but the model takes action_dim={mc.action_dim}; "
                         "for Crafter use preset=crafter (language actions) or +model.action_type=text")


def run(cfg: DictConfig) -> Path:
    state = PartialState(cpu=not torch.cuda.is_available())  # one of `accelerate launch`'s processes, or alone
    out = Path(cfg.out_dir)
    deadline = time.time() + 60 * cfg.time_limit_min if cfg.time_limit_min else None
    configs = [TrainConfig(phase=phase, out_dir=str(out / phase), seed=cfg.seed, num_workers=cfg.num_workers,
                           deadline=deadline, **OmegaConf.to_container(cfg.phases[phase], resolve=True))
               for phase in PHASES]
    configs = [tc for tc in configs if tc.steps > 0]
    for tc in configs:  # fail now, not after the earlier phases have trained
        check_batch_size(tc.batch_size, state.num_processes, tc.phase)
    torch.manual_seed(cfg.seed)  # the same initial model on every process
    model = build_model(cfg)
    mc = model.config
    for tc in configs:  # a distilled student as the start of a phase that would undo it
        check_student(tc, mc)
    source = load_source(cfg.data, mc.frame_size)
    chunks = ChunkDataset(source, mc.context_frames, mc.new_frames, frame_skip=cfg.data.frame_skip)
    check_data(mc, chunks)
    timings = {}
    finished = True
    for tc in configs:
        dataset = chunks
        if tc.phase == "slow_fast":
            dataset = slow_fast_windows(source, mc, cfg.data)
        start = time.perf_counter()
        trainer = Trainer(model, dataset, tc)
        history = trainer.fit(progress=cfg.progress)
        timings[tc.phase] = {"seconds_this_run": round(time.perf_counter() - start, 1), "step": trainer.step,
                             "of": tc.steps, "final_loss": history[-1]["loss"] if history else None}
        if not trainer.finished:
            finished = False
            logger.info("time limit reached in phase %s; rerun the same command to resume", tc.phase)
            break
    if state.is_main_process:
        card = model_card(cfg, timings, len(chunks), finished, state.num_processes)
        init_folder = model_folder(cfg.init_from) if cfg.init_from else None
        save_keeping_extras(model, init_folder, out / "model", card=card, dtype=getattr(torch, cfg.save_dtype))
        (out / "train_summary.json").write_text(json.dumps(timings, indent=2))
        logger.info("saved %s", out / "model")
    state.wait_for_everyone()  # every process returns once the model is on disk
    return out / "model"


def model_card(cfg: DictConfig, timings: dict, num_windows: int, finished: bool, num_processes: int) -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    if num_processes > 1:
        device = f"{num_processes} processes on {device}"
    return "\n".join([
        "# SlowFast-VGen weights",
        "",
        f"- status: {'all phases finished' if finished else 'partial (time limit reached; rerun to resume)'}",
        f"- preset: `{cfg.preset}`; data: `{cfg.data.source}` ({num_windows} chunk windows)",
        f"- device: {device}; date: {time.strftime('%Y-%m-%d')}",
        "- phases (seconds of this run, final logged loss):",
        *[f"  - {p}: {t}" for p, t in timings.items()],
        "",
        "## Config",
        "```yaml",
        OmegaConf.to_yaml(cfg),
        "```",
    ])


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    print(run(cfg))


if __name__ == "__main__":
    main()
