"""Collection end to end: episodes readable through the datasets, and resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.data import ChunkDataset, EpisodeDataset
from envs.episodes import EpisodeFileError, episode_key, list_episodes, read_episode
from envs.real import SKILLS
from envs.real.objects import CUBE_COLOR_NAMES
from experiments.collect import CollectConfig, collect, episode_plan, shard_path

ROOT = Path(__file__).resolve().parents[1]
SMALL_ENV = dict(width=32, height=32, chunk_len=2, frame_skip=4, max_chunks=6)


def _config(out_dir, **overrides) -> CollectConfig:
    base = dict(
        out_dir=str(out_dir), num_episodes=2, episodes_per_shard=1, workers=1, seed=7,
        expert_noise=0.0, play_chunks=2, tasks={"task1_open": 1, "play": 1}, env=dict(SMALL_ENV),
    )
    return CollectConfig(**{**base, **overrides})


def _all_keys(out_dir) -> list[str]:
    return sorted(k for f in sorted(Path(out_dir).glob("shard_*.h5")) for k in list_episodes(f))


def test_collect_two_episodes_and_read_back(tmp_path):
    summary = collect(_config(tmp_path))
    assert summary["new_episodes"] == 2 and summary["frames"] > 0
    assert _all_keys(tmp_path) == [episode_key(0), episode_key(1)]
    ep = read_episode(shard_path(tmp_path, 0), episode_key(0))
    assert ep["attrs"]["task"] == episode_plan(_config(tmp_path), 0)[0]
    assert ep["frames"].dtype == np.uint8 and ep["frames"].shape[1:] == (32, 32, 3) and ep["frames"].any()
    # memory-benchmark records on every scene episode (a palette colour by default)
    assert ep["attrs"]["cube_color"] in CUBE_COLOR_NAMES and ep["camera"].shape == (3, 4)
    assert ep["sim_state"].shape[0] == ep["cube_pixel"].shape[0] == len(ep["frames"])

    ds = ChunkDataset(tmp_path, context_frames=3, new_frames=2)
    item = ds[0]
    assert item["context"].shape == (3, 32, 32, 3) and item["target"].dtype == torch.uint8
    assert item["action"].shape == (2, 5) and item["action"].dtype == torch.float32
    assert all(ds[i]["text"] in SKILLS for i in range(len(ds)))
    eps = EpisodeDataset(tmp_path, context_frames=2, new_frames=2, num_chunks=2)
    assert eps[0]["frames"].shape == (6, 32, 32, 3) and all(t in SKILLS for t in eps[0]["texts"])

    assert collect(_config(tmp_path))["new_episodes"] == 0  # all complete: nothing redone
    with pytest.raises(ValueError, match="other settings"):
        collect(_config(tmp_path, seed=8))
    with pytest.raises(ValueError, match="unknown task"):
        _config(tmp_path, tasks={"nope": 1})
    with pytest.raises(ValueError, match=r"seed must be in 0\.\.429"):  # seed 1028's episodes overflow numpy's seeds
        _config(tmp_path, seed=1028)
    assert episode_plan(_config(tmp_path, seed=429), 1)[1] < 2**32
    assert _config(tmp_path).manifest()["env"]["random_cube_color"] is True


def test_resume_after_kill_neither_duplicates_nor_loses(tmp_path):
    overrides = [f"out_dir={tmp_path}", "num_episodes=3", "episodes_per_shard=1", "workers=1", "seed=7",
                 "expert_noise=0.0", "play_chunks=2", "~tasks", "+tasks={task1_open: 1, play: 1}"]
    overrides += [f"env.{k}={v}" for k, v in SMALL_ENV.items()]
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.collect", *overrides], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    first = shard_path(tmp_path, 0)
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # interrupt mid-collection
    proc.wait()
    assert first.exists(), "the first shard was never written"
    stamp = first.stat().st_mtime_ns

    cfg = _config(tmp_path, num_episodes=3)
    assert json.loads((tmp_path / "manifest.json").read_text()) == cfg.manifest()
    shard_path(tmp_path, 2).write_bytes(b"not an h5 file")  # a broken shard gets redone too
    summary = collect(cfg)
    assert summary["skipped_episodes"] >= 1 and first.stat().st_mtime_ns == stamp
    assert _all_keys(tmp_path) == [episode_key(i) for i in range(3)]
    assert not list(tmp_path.glob(".*tmp*"))
    for i in range(3):  # each episode is the one its (seed, index) defines
        ep = read_episode(shard_path(tmp_path, i), episode_key(i))
        assert (ep["attrs"]["task"], ep["attrs"]["seed"]) == episode_plan(cfg, i)
    with pytest.raises(EpisodeFileError):
        list_episodes(tmp_path / "missing.h5")


def test_time_limit_starts_no_shard_after_the_deadline(tmp_path, monkeypatch):
    """A time-boxed call ends with whole shards; the missing ones are counted for the rerun."""
    import experiments.collect as collect_module

    clock = {"now": 1000.0}
    started = []

    def fake_shard(cfg, shard):  # each shard takes 30 s of the fake clock
        started.append(shard)
        clock["now"] += 30.0
        return 1, 5

    monkeypatch.setattr(collect_module, "collect_shard", fake_shard)
    monkeypatch.setattr(collect_module.time, "time", lambda: clock["now"])
    summary = collect(_config(tmp_path, num_episodes=4, time_limit_min=1.0))
    assert started == [0, 1]  # shard 2 would start at the deadline
    assert summary["new_episodes"] == 2 and summary["missing_episodes"] == 2
    assert "time_limit_min" not in _config(tmp_path, time_limit_min=1.0).manifest()  # a rerun may change it
    with pytest.raises(ValueError, match="time_limit_min"):
        _config(tmp_path, time_limit_min=0)


def test_scene_option_defaults_agree_with_the_scene():
    """The scene's options are declared three times (`SceneConfig`, collect's `SceneOptions`, which takes its
    defaults from it, and the Hydra domain config): their defaults must agree, or `experiments.collect` records
    episodes of another scene than the one the env, the agents and the outcome checks build (session 20 switched
    `transparent_arm` to false)."""
    from dataclasses import fields

    from omegaconf import OmegaConf

    from envs.real.scene import SceneConfig
    from experiments.collect import SceneOptions

    scene = {f.name: f.default for f in fields(SceneConfig)}
    yaml_env = OmegaConf.to_container(OmegaConf.load(ROOT / "experiments/conf/domain/scene.yaml").env)
    for f in fields(SceneOptions):
        assert f.name in scene, f"SceneOptions.{f.name} is not a SceneConfig option"
        assert f.default == scene[f.name], f"{f.name}: SceneOptions {f.default!r} != SceneConfig {scene[f.name]!r}"
        assert yaml_env.get(f.name) == scene[f.name], f"{f.name}: scene.yaml {yaml_env.get(f.name)!r}"
