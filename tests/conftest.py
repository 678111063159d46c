"""Shared fixtures: a tiny SlowFast-VGen trained once per session on the synthetic panning world.

Run as a script (``python tests/conftest.py OUT``) this file trains that model into OUT: the session starts it
in the background as soon as collection shows a test that needs it, so it trains beside the other tests
instead of holding up the first test that needs it; those tests run last. Under pytest-xdist (``-n 2`` in
pyproject.toml's addopts) one worker starts it and every worker waits for the same folder, and a test marked
``alone`` runs while no other worker runs a test.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from pathlib import Path

import numpy as np
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


_TRAINING: dict = {}  # the background training: its folder, and its process where this process started it


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """pytest-xdist's controller, for each worker: one folder for all of them, for one training (started by the
    first worker that needs it) that serves every worker, and for the lock of the ``alone`` tests."""
    if "out" not in _TRAINING:
        _TRAINING["out"] = Path(tempfile.mkdtemp(prefix="trained_tiny-"))
    node.workerinput["shared_dir"] = str(_TRAINING["out"])


def pytest_configure(config):
    config.addinivalue_line("markers", "alone: under pytest-xdist, no other worker runs a test meanwhile (for a "
                                       "test that reads this machine's load)")


def _seed(name: str) -> None:
    seed = zlib.crc32(name.encode())
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@pytest.hookimpl(tryfirst=True)
def pytest_fixture_setup(fixturedef, request):
    """Each fixture, then each test (below), starts from its own random state, whichever tests ran before it in
    this process: under pytest-xdist those differ from run to run."""
    _seed(f"{request.node.nodeid}::{fixturedef.argname}")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    _seed(item.nodeid)


@pytest.fixture(autouse=True)
def envs_take_one_thread(monkeypatch):
    """An env made with ``cpu_threads="auto"`` (the default) takes the cores not busy at that moment; beside the
    other pytest-xdist worker and the background training that varies from one env to the next within a test, so
    two runs that must agree bit for bit summed in different orders (test_memories_are_independent failed so in a
    clean clone). The tests run on one thread (above): here "auto" means 1. `worldmodel.loading`'s own tests call
    its functions directly."""
    import envs.world_model_env.batch as batch

    real = batch.set_cpu_threads
    monkeypatch.setattr(batch, "set_cpu_threads", lambda threads: real(1 if threads == "auto" else threads))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Under pytest-xdist, every test (setup to teardown) holds a shared lock, an ``alone`` test an exclusive one;
    a test waiting for the exclusive one holds the gate meanwhile, so that no new test starts before it."""
    shared = getattr(item.config, "workerinput", {}).get("shared_dir")
    if not shared:
        return (yield)
    import fcntl

    with open(Path(shared) / "gate.lock", "a") as gate, open(Path(shared) / "tests.lock", "a") as tests:
        fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(tests, fcntl.LOCK_EX if item.get_closest_marker("alone") else fcntl.LOCK_SH)
        fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            return (yield)
        finally:
            fcntl.flock(tests, fcntl.LOCK_UN)


@pytest.hookimpl(trylast=True)  # after -k / -m deselection
def pytest_collection_modifyitems(config, items):
    """Start training the tiny model in the background when a selected test needs it (under pytest-xdist, in
    the first worker that needs it, into the folder the controller gave all workers), and run the tests that
    need it last, to give it the most time."""
    items.sort(key=lambda item: "trained_tiny" in item.fixturenames)  # stable: the same order in every worker
    if config.option.collectonly or not any("trained_tiny" in item.fixturenames for item in items):
        return
    shared = getattr(config, "workerinput", {}).get("shared_dir")
    if shared:
        out = _TRAINING["out"] = Path(shared)
        try:
            (out / "started").mkdir()
        except FileExistsError:
            return  # another worker trains it
    else:
        out = Path(tempfile.mkdtemp(prefix="trained_tiny-"))
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    with open(out / "log.txt", "w") as log:
        proc = subprocess.Popen([sys.executable, __file__, str(out)], cwd=root, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    (out / "pid.tmp").write_text(str(proc.pid))
    (out / "pid.tmp").rename(out / "pid")  # whole, for the other workers
    _TRAINING.update(out=out, proc=proc)


def _training_ended(out: Path) -> bool:
    """Whether the training process in ``out`` has exited (this process's child, or another worker's)."""
    if "proc" in _TRAINING:
        return _TRAINING["proc"].poll() is not None
    pid = int((out / "pid").read_text())
    if not Path("/proc/self/stat").exists():  # not Linux: whether the pid is still taken
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"  # exited, not reaped
    except FileNotFoundError:
        return True


def pytest_sessionfinish(session, exitstatus):
    """Stop the training if it still runs (only when the session stopped before a test needed it) and remove its
    folder: in the one process, or under pytest-xdist in the controller, after all workers have finished."""
    if hasattr(session.config, "workerinput"):
        return
    out = _TRAINING.get("out")
    if "proc" in _TRAINING:
        _TRAINING["proc"].kill()
        _TRAINING["proc"].wait()
    elif out is not None and (out / "pid").exists() and not (out / "rc").exists():  # a worker's
        pid = int((out / "pid").read_text())
        try:
            if str(out) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory):
    """Tiny model after a short VAE fit and slow learning; returns (model folder, slow-phase loss history)."""
    if "out" in _TRAINING:
        out, waited = _TRAINING["out"], time.monotonic()
        while not (out / "rc").exists():
            if (out / "pid").exists() and _training_ended(out) and not (out / "rc").exists():
                break  # killed
            if not (out / "pid").exists() and time.monotonic() - waited > 120:
                raise RuntimeError(f"no worker started training the tiny model in {out}")
            time.sleep(0.5)
        rc = (out / "rc").read_text() if (out / "rc").exists() else "killed"
        if rc != "0":
            log = (out / "log.txt").read_text()[-8000:]
            raise RuntimeError(f"training the tiny model failed ({rc}; python tests/conftest.py {out}):\n{log}")
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
    try:
        _train_tiny(Path(sys.argv[1]))
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        (Path(sys.argv[1]) / "rc").write_text("1")  # the waiting test reads the log above
        raise
    (Path(sys.argv[1]) / "rc").write_text("0")
