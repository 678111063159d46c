"""Shared fixtures: a tiny SlowFast-VGen trained once per session on the synthetic panning world."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)  # tiny models: one thread is faster than two fighting over 2 cores


@pytest.fixture(scope="session")
def synthetic_episodes():
    from envs.synthetic import random_episodes

    return random_episodes(64, 6, seed=0, frame_size=32, chunk_len=2, speed=8)


@pytest.fixture(scope="session")
def chunk_dataset(synthetic_episodes):
    from envs.data import ChunkDataset

    return ChunkDataset(synthetic_episodes, context_frames=2, new_frames=2)


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory, chunk_dataset):
    """Tiny model after a short VAE fit and slow learning; returns (model, slow-phase loss history)."""
    from worldmodel.model import SlowFastVGen
    from worldmodel.train import Trainer, TrainConfig

    torch.manual_seed(0)
    model = SlowFastVGen.from_preset("tiny")
    out = tmp_path_factory.mktemp("train")
    Trainer(model, chunk_dataset, TrainConfig(phase="vae", steps=120, batch_size=16, lr=2e-3,
                                              out_dir=str(out / "vae"))).fit(progress=False)
    history = Trainer(model, chunk_dataset, TrainConfig(phase="slow", steps=150, batch_size=16, lr=1e-3,
                                                        log_every=5, out_dir=str(out / "slow"))).fit(progress=False)
    path = out / "model"
    model.save_pretrained(path)
    return path, history


def _micro_model(frame_size: int = 16, blocks: tuple[int, ...] = (16, 16), **overrides):
    from worldmodel import SlowFastVGen, from_preset

    cfg = from_preset("tiny", frame_size=frame_size, vae_block_out_channels=(8, 8), unet_block_out_channels=blocks,
                      attention_head_dim=8, cross_attention_dim=16, norm_num_groups=8,
                      temp_lora=overrides.pop("temp_lora", dict(rank=2, alpha=2.0)), **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return SlowFastVGen(cfg).eval()


@pytest.fixture(scope="session")
def micro_model():
    """Builder of a seeded tiny-preset variant (16x16 frames, 8-channel VAE) small enough for hundreds of
    env steps in a test: ``micro_model(frame_size=..., blocks=..., temp_lora=dict(...), **config)``."""
    return _micro_model
