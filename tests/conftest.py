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
