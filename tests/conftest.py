"""Shared fixtures: a tiny SlowFast-VGen trained once per session on the synthetic panning world.

Run as a script (``python tests/conftest.py OUT``) this file trains that model into OUT: the session starts it
in the background as soon as collection shows a test that needs it, so it trains on the second core while
the other tests run instead of holding up the first test that needs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)  # tiny models: one thread is faster than two fighting over 2 cores


def _synthetic_episodes() -> list[dict]:
    from envs.synthetic import random_episodes

    return random_episodes(64, 6, seed=0, frame_size=32, chunk_len=2, speed=8)


def _chunk_dataset(episodes: list[dict]):
    from envs.data import ChunkDataset

    return ChunkDataset(episodes, context_frames=2, new_frames=2)


@pytest.fixture(scope="session")
def synthetic_episodes():
    return _synthetic_episodes()


@pytest.fixture(scope="session")
def chunk_dataset(synthetic_episodes):
    return _chunk_dataset(synthetic_episodes)


def _train_tiny(out: Path) -> None:
    """A short VAE fit and slow learning of the tiny preset on ``chunk_dataset``'s windows, in a fresh
    process: ``out/model`` and the slow phase's loss history ``out/history.json``."""
    from worldmodel.model import SlowFastVGen
    from worldmodel.train import Trainer, TrainConfig

    chunks = _chunk_dataset(_synthetic_episodes())
    torch.manual_seed(0)
    model = SlowFastVGen.from_preset("tiny")
    Trainer(model, chunks, TrainConfig(phase="vae", steps=120, batch_size=16, lr=2e-3,
                                       out_dir=str(out / "vae"))).fit(progress=False)
    history = Trainer(model, chunks, TrainConfig(phase="slow", steps=150, batch_size=16, lr=1e-3,
                                                 log_every=5, out_dir=str(out / "slow"))).fit(progress=False)
    model.save_pretrained(out / "model")
    (out / "history.json").write_text(json.dumps(history))


_TRAINING: dict = {}  # the background training: its folder and process


@pytest.hookimpl(trylast=True)  # after -k / -m deselection
def pytest_collection_modifyitems(config, items):
    """Start training the tiny model in the background when a selected test needs it."""
    if config.option.collectonly or not any("trained_tiny" in item.fixturenames for item in items):
        return
    out = Path(tempfile.mkdtemp(prefix="trained_tiny-"))
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    with open(out / "log.txt", "w") as log:
        proc = subprocess.Popen([sys.executable, __file__, str(out)], cwd=root, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    _TRAINING.update(out=out, proc=proc)


def pytest_sessionfinish(session, exitstatus):
    if "proc" in _TRAINING:
        _TRAINING["proc"].kill()  # still running only when the session stopped before a test needed it
        _TRAINING["proc"].wait()
        shutil.rmtree(_TRAINING["out"], ignore_errors=True)


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory):
    """Tiny model after a short VAE fit and slow learning; returns (model folder, slow-phase loss history)."""
    if "proc" in _TRAINING:
        out = _TRAINING["out"]
        if _TRAINING["proc"].wait() != 0:
            log = (out / "log.txt").read_text()[-8000:]
            raise RuntimeError(f"training the tiny model failed (python tests/conftest.py {out}):\n{log}")
    else:  # requested without collection seeing it
        out = tmp_path_factory.mktemp("train")
        _train_tiny(out)
    return out / "model", json.loads((out / "history.json").read_text())


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


@pytest.fixture
def kill_at_step(monkeypatch):
    """``kill_at_step(trainer, method, step)``: the trainer's ``method`` raises KeyboardInterrupt once the
    trainer reaches ``step`` (a process killed mid-run; the checkpoint holds the step before)."""

    def arm(trainer, method: str, step: int) -> None:
        real = getattr(trainer, method)

        def crash(*args, **kwargs):
            if trainer.step == step:
                raise KeyboardInterrupt("killed")
            return real(*args, **kwargs)

        monkeypatch.setattr(trainer, method, crash)

    return arm


@pytest.fixture(scope="session")
def torchrun():
    """``torchrun(script, tmp_path, timeout)``: run a test file as the script of two gloo processes
    (`torch.distributed.run`, one thread each) in a fresh subprocess (forked from pytest, they crawled);
    returns what each rank saved as ``tmp_path/rank{r}.pt``."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]

    def run(script: str, tmp_path, timeout: int) -> list:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
                   OMP_NUM_THREADS="1")
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                               script, str(tmp_path)], cwd=root, env=env, capture_output=True, text=True,
                              timeout=timeout)
        assert done.returncode == 0, f"torchrun failed:\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
        return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]

    return run


if __name__ == "__main__":
    # one thread: beside pytest on a 2-core machine (CI), and as fast as two for the tiny preset (measured:
    # 1.31 vs 1.23 s per slow step), so the tests keep the other core
    torch.set_num_threads(1)
    _train_tiny(Path(sys.argv[1]))
