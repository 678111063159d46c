"""Collect OGBench scene episodes into h5 shards, in parallel, resumably.

    python -m experiments.collect out_dir=data/scene num_episodes=2000 workers=16 env.render_backend=egl

Episode i (0 <= i < num_episodes) is fully determined by (seed, i): its task is drawn from the task
mix and it is rolled out with seed ``seed * 10_000_000 + i``. Episodes are grouped into shards of
``episodes_per_shard``; a worker writes each shard whole, atomically (temp file + rename), so a
shard file that exists is complete. Rerunning the same command skips complete shards and redoes
only missing ones, so an interrupted collection neither duplicates nor loses episodes. A
``manifest.json`` pins everything but ``num_episodes``; a conflicting rerun is refused.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from envs.episodes import EpisodeFileError, episode_key, list_episodes, write_episodes
from envs.real.skills import SKILLS
from envs.real.tasks import EXPERT_TASKS, get_task

SEED_STRIDE = 10_000_000  # episode seeds: seed * SEED_STRIDE + index (index < SEED_STRIDE)


@dataclass
class EnvOptions:
    width: int = 64
    height: int = 64
    chunk_len: int = 8
    frame_skip: int = 4
    max_chunks: int = 32
    render_backend: str = "auto"
    fast_render: bool = True


@dataclass
class CollectConfig:
    out_dir: str = "data/scene"
    num_episodes: int = 100
    episodes_per_shard: int = 8
    workers: int = 0
    seed: int = 0
    expert_noise: float = 0.1
    max_tries: int = 3
    play_chunks: int = 8
    compression: str = "lzf"
    tasks: dict[str, float] = field(default_factory=lambda: {**dict.fromkeys(EXPERT_TASKS, 1.0), "play": 4.0})
    env: EnvOptions = field(default_factory=EnvOptions)

    def __post_init__(self) -> None:
        if isinstance(self.env, dict):
            self.env = EnvOptions(**self.env)
        for name in self.tasks:
            get_task(name)
        if not self.tasks or min(self.tasks.values()) < 0 or sum(self.tasks.values()) <= 0:
            raise ValueError(f"task weights must be >= 0 with a positive sum: {self.tasks}")
        if not 0 < self.num_episodes <= SEED_STRIDE or self.episodes_per_shard < 1:
            raise ValueError("need 0 < num_episodes <= 10_000_000 and episodes_per_shard >= 1")

    def manifest(self) -> dict:
        """Everything that fixes episode contents and shard layout (not num_episodes or workers)."""
        d = asdict(self)
        for k in ("num_episodes", "workers", "out_dir"):
            d.pop(k)
        d["env"].pop("render_backend")
        return d


def episode_plan(cfg: CollectConfig, index: int) -> tuple[str, int]:
    """(task, seed) of episode ``index``; depends only on (cfg.seed, index, cfg.tasks)."""
    names = sorted(cfg.tasks)
    p = np.array([cfg.tasks[n] for n in names], np.float64)
    task = names[np.random.default_rng([cfg.seed, index]).choice(len(names), p=p / p.sum())]
    return task, cfg.seed * SEED_STRIDE + index


def shard_path(out_dir: str | Path, shard: int) -> Path:
    return Path(out_dir) / f"shard_{shard:05d}.h5"


def shard_indices(cfg: CollectConfig, shard: int) -> range:
    lo = shard * cfg.episodes_per_shard
    return range(lo, min(lo + cfg.episodes_per_shard, cfg.num_episodes))


def shard_complete(cfg: CollectConfig, shard: int) -> bool:
    """A shard counts as done when its file reads and holds exactly its episodes."""
    path = shard_path(cfg.out_dir, shard)
    if not path.exists():
        return False
    try:
        return list_episodes(path) == [episode_key(i) for i in shard_indices(cfg, shard)]
    except EpisodeFileError as err:
        tqdm.write(f"redoing unreadable shard: {err}")
        return False


_ENV: tuple[tuple, object] | None = None  # (options, env): one env per process (building takes ~2 s)


def _worker_env(cfg: CollectConfig):
    global _ENV
    options = (*asdict(cfg.env).items(), ("skill_noise", cfg.expert_noise))
    if _ENV is None or _ENV[0] != options:
        from envs.real.scene import RealSceneEnv

        if _ENV is not None:
            _ENV[1].close()
        env = RealSceneEnv(**dict(options))
        atexit.register(env.close)  # free the GL context before interpreter teardown
        _ENV = (options, env)
    return _ENV[1]


def collect_shard(cfg: CollectConfig, shard: int) -> tuple[int, int]:
    """Roll out and write one shard; return (episodes, frames)."""
    from envs.real.rollout import run_episode

    env = _worker_env(cfg)
    episodes = []
    for index in shard_indices(cfg, shard):
        task, seed = episode_plan(cfg, index)
        policy = "random" if task == "play" else "expert"
        ep = run_episode(env, seed, task, policy, num_chunks=cfg.play_chunks, max_tries=cfg.max_tries)
        ep["attrs"]["index"] = index
        episodes.append((episode_key(index), ep))
    attrs = dict(skills=list(SKILLS), shard=shard, manifest=json.dumps(cfg.manifest()))
    write_episodes(shard_path(cfg.out_dir, shard), episodes, file_attrs=attrs, compression=cfg.compression)
    return len(episodes), sum(len(ep["frames"]) for _, ep in episodes)


def _check_manifest(cfg: CollectConfig) -> None:
    path = Path(cfg.out_dir) / "manifest.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != cfg.manifest():
            raise ValueError(
                f"{cfg.out_dir} holds a collection with other settings ({path}); "
                "use another out_dir or the same settings (only num_episodes may change)"
            )
    else:
        path.write_text(json.dumps(cfg.manifest(), indent=1))


def _remove_stale_temps(out_dir: Path) -> None:
    """Temp files of killed writers (a live collection into the same dir is not supported)."""
    for tmp in out_dir.glob(".shard_*.h5.tmp-*"):
        tmp.unlink(missing_ok=True)


def collect(cfg: CollectConfig) -> dict:
    """Collect all missing shards; return counts and throughput."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_manifest(cfg)
    _remove_stale_temps(out)
    num_shards = -(-cfg.num_episodes // cfg.episodes_per_shard)
    todo = [s for s in range(num_shards) if not shard_complete(cfg, s)]
    done_eps = cfg.num_episodes - sum(len(shard_indices(cfg, s)) for s in todo)
    workers = min(cfg.workers or os.cpu_count() or 1, max(len(todo), 1))
    start, frames, new_eps = time.time(), 0, 0
    bar = tqdm(total=cfg.num_episodes, initial=done_eps, unit="ep", desc="collect", dynamic_ncols=True)

    def record(result: tuple[int, int]) -> None:
        nonlocal frames, new_eps
        new_eps, frames = new_eps + result[0], frames + result[1]
        bar.update(result[0])
        bar.set_postfix(fps=f"{frames / max(time.time() - start, 1e-9):.1f}")

    try:
        if workers <= 1:
            for s in todo:
                record(collect_shard(cfg, s))
        else:
            # spawn: each worker imports mujoco afresh with the chosen GL backend
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(collect_shard, cfg, s) for s in todo]
                try:
                    for future in as_completed(futures):
                        record(future.result())
                except BaseException:
                    for future in futures:  # stop at the first failure; finished shards stay
                        future.cancel()
                    raise
    finally:
        bar.close()
    seconds = time.time() - start
    return dict(
        episodes=cfg.num_episodes,
        new_episodes=new_eps,
        skipped_episodes=done_eps,
        frames=frames,
        seconds=round(seconds, 1),
        frames_per_s=round(frames / max(seconds, 1e-9), 1),
        workers=workers,
    )


@hydra.main(config_path="conf", config_name="collect", version_base="1.3")
def main(cfg: DictConfig) -> None:
    config = CollectConfig(**OmegaConf.to_container(cfg, resolve=True))
    print(json.dumps(collect(config)))


if __name__ == "__main__":
    main()
