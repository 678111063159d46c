"""Collect real episodes (OGBench scene or Crafter) into h5 shards, in parallel, resumably.

    python -m experiments.collect out_dir=data/scene num_episodes=2000 workers=16 env.render_backend=egl
    python -m experiments.collect domain=crafter out_dir=data/crafter num_episodes=2000

``domain`` (a Hydra config group, ``conf/domain/*.yaml``) picks the simulator, its task mix and env
options; the episode schema, sharding, resume and manifest are shared. Episode i (0 <= i < num_episodes)
is fully determined by (seed, i): its task is drawn from the task mix and it is rolled out with seed
``seed * 10_000_000 + i``. Episodes are grouped into shards of
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
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from envs import skill_vocabulary
from envs.episodes import EpisodeFileError, episode_key, list_episodes, write_episodes
from envs.real.scene import SceneConfig
from envs.real.tasks import EXPERT_TASKS, get_task

SEED_STRIDE = 10_000_000  # episode seeds: seed * SEED_STRIDE + index (index < SEED_STRIDE)
CRAFTER_TASKS = ("path_and_return", "free_play")
DEFAULT_TASKS: dict[str, dict[str, float]] = {
    "scene": {**dict.fromkeys(EXPERT_TASKS, 1.0), "play": 4.0},
    "crafter": {"path_and_return": 2.0, "free_play": 1.0},
}
"""Task mix per domain; ``play`` / ``free_play`` are random-skill episodes for coverage."""


@dataclass
class SceneOptions:
    """RealSceneEnv options, a Hydra-typed subset of `SceneConfig` whose defaults they take, so that a scene
    default changes in one place (session 20's opaque arm)."""

    width: int = SceneConfig.width
    height: int = SceneConfig.height
    chunk_len: int = SceneConfig.chunk_len
    frame_skip: int = SceneConfig.frame_skip
    max_chunks: int = SceneConfig.max_chunks
    render_backend: str = SceneConfig.render_backend
    fast_render: bool = SceneConfig.fast_render
    transparent_arm: bool = SceneConfig.transparent_arm  # OGBench's pixel_transparent_arm (True: before run 11)
    random_cube_color: bool = SceneConfig.random_cube_color  # memory benchmark: a palette colour per episode
    min_distractors: int = SceneConfig.min_distractors  # memory benchmark: random distractor skills between hiding
    max_distractors: int = SceneConfig.max_distractors  # the cube and reopening the drawer


@dataclass
class CrafterOptions:
    """CrafterEnv options; one move chunk walks ``chunk_len * frame_skip`` tiles."""

    size: int = 64
    chunk_len: int = 4
    frame_skip: int = 1
    n_moves: int = 8  # outward move chunks of a path-and-return episode (the return adds as many)


DOMAIN_OPTIONS = {"scene": SceneOptions, "crafter": CrafterOptions}


@dataclass
class CollectConfig:
    domain: str = "scene"  # scene | crafter
    out_dir: str = "data/scene"
    num_episodes: int = 100
    episodes_per_shard: int = 8
    workers: int = 0
    seed: int = 0
    expert_noise: float = 0.1  # scene only
    max_tries: int = 3  # scene only
    play_chunks: int = 8  # chunks of a random-skill episode
    # scene expert episodes: the chance per chunk of a random skill instead of the plan's (off-plan skills from the
    # states on the way to a goal, for the heads and the model; envs.real.rollout.run_episode)
    deviate: float = 0.0
    compression: str = "lzf"
    tasks: dict[str, float] | None = None  # None: DEFAULT_TASKS[domain]
    env: SceneOptions | CrafterOptions | dict | None = None  # a dict or None: the domain's options
    time_limit_min: float | None = None  # start no shard after this many minutes; rerun to resume

    def __post_init__(self) -> None:
        if self.domain not in DOMAIN_OPTIONS:
            raise ValueError(f"unknown domain {self.domain!r}; expected one of {sorted(DOMAIN_OPTIONS)}")
        options = DOMAIN_OPTIONS[self.domain]
        if not isinstance(self.env, options):
            self.env = options(**(self.env or {}))
        if self.tasks is None:
            self.tasks = dict(DEFAULT_TASKS[self.domain])
        for name in self.tasks:
            if self.domain == "scene":
                get_task(name)
            elif name not in CRAFTER_TASKS:
                raise ValueError(f"unknown task {name!r}; valid crafter tasks: {', '.join(CRAFTER_TASKS)}")
        if not self.tasks or min(self.tasks.values()) < 0 or sum(self.tasks.values()) <= 0:
            raise ValueError(f"task weights must be >= 0 with a positive sum: {self.tasks}")
        if not 0 < self.num_episodes <= SEED_STRIDE or self.episodes_per_shard < 1:
            raise ValueError("need 0 < num_episodes <= 10_000_000 and episodes_per_shard >= 1")
        if not 0 <= self.seed * SEED_STRIDE + self.num_episodes - 1 < 2**32:  # numpy's and MuJoCo's seed range
            raise ValueError(f"seed must be in 0..{(2**32 - self.num_episodes) // SEED_STRIDE} for {self.num_episodes} "
                             f"episodes (episode i is rolled out with seed * {SEED_STRIDE:_} + i < 2**32), got {self.seed}")
        if self.time_limit_min is not None and self.time_limit_min <= 0:
            raise ValueError(f"time_limit_min must be > 0 (or null), got {self.time_limit_min}")

    def manifest(self) -> dict:
        """Everything that fixes episode contents and shard layout (not num_episodes or workers)."""
        d = asdict(self)
        for k in ("num_episodes", "workers", "out_dir", "time_limit_min"):
            d.pop(k)
        d["env"].pop("render_backend", None)  # scene: the GL backend does not change the episodes
        if d["env"].get("transparent_arm") is True:  # every collection before the option: their manifests hold
            d["env"].pop("transparent_arm")
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


def make_episode(cfg: CollectConfig, index: int) -> dict:
    """Episode ``index`` in the shared schema; a pure function of the config and the index."""
    task, seed = episode_plan(cfg, index)
    if cfg.domain == "crafter":
        from envs.real.crafter import free_play_episode, path_and_return_episode

        o = cfg.env
        if task == "path_and_return":
            return path_and_return_episode(seed, o.n_moves, o.chunk_len, o.frame_skip, size=o.size)
        return free_play_episode(seed, cfg.play_chunks, "random", o.chunk_len, o.frame_skip, size=o.size)
    from envs.real.rollout import run_episode

    policy = "random" if task == "play" else "expert"
    return run_episode(_worker_env(cfg), seed, task, policy, num_chunks=cfg.play_chunks, max_tries=cfg.max_tries,
                       deviate=cfg.deviate)


def collect_shard(cfg: CollectConfig, shard: int) -> tuple[int, int]:
    """Roll out and write one shard; return (episodes, frames)."""
    episodes = []
    for index in shard_indices(cfg, shard):
        ep = make_episode(cfg, index)
        ep["attrs"]["index"] = index
        episodes.append((episode_key(index), ep))
    attrs = dict(skills=list(skill_vocabulary(cfg.domain)), shard=shard, manifest=json.dumps(cfg.manifest()))
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
    """Collect the missing shards; return counts and throughput.

    With ``time_limit_min`` no shard starts after the deadline: the shards in flight finish (each is
    written whole), the rest wait for a rerun of the same command, so a time-boxed call (a GPU lease)
    ends with complete shards only.
    """
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_manifest(cfg)
    _remove_stale_temps(out)
    num_shards = -(-cfg.num_episodes // cfg.episodes_per_shard)
    todo = [s for s in range(num_shards) if not shard_complete(cfg, s)]
    done_eps = cfg.num_episodes - sum(len(shard_indices(cfg, s)) for s in todo)
    workers = min(cfg.workers or os.cpu_count() or 1, max(len(todo), 1))
    start, frames, new_eps = time.time(), 0, 0
    deadline = start + 60 * cfg.time_limit_min if cfg.time_limit_min else None
    queue = list(reversed(todo))  # pop() takes the lowest shard first

    def may_start() -> bool:
        return bool(queue) and (deadline is None or time.time() < deadline)

    bar = tqdm(total=cfg.num_episodes, initial=done_eps, unit="ep", desc="collect", dynamic_ncols=True)

    def record(result: tuple[int, int]) -> None:
        nonlocal frames, new_eps
        new_eps, frames = new_eps + result[0], frames + result[1]
        bar.update(result[0])
        bar.set_postfix(fps=f"{frames / max(time.time() - start, 1e-9):.1f}")

    try:
        if workers <= 1:
            while may_start():
                record(collect_shard(cfg, queue.pop()))
        else:
            # spawn: each scene worker imports mujoco afresh with the chosen GL backend
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                running = set()
                try:
                    while may_start() or running:
                        while may_start() and len(running) < workers:
                            running.add(pool.submit(collect_shard, cfg, queue.pop()))
                        finished, running = wait(running, return_when=FIRST_COMPLETED)
                        for future in finished:
                            record(future.result())
                except BaseException:
                    for future in running:  # stop at the first failure; finished shards stay
                        future.cancel()
                    raise
    finally:
        bar.close()
    seconds = time.time() - start
    return dict(
        episodes=cfg.num_episodes,
        new_episodes=new_eps,
        skipped_episodes=done_eps,
        missing_episodes=sum(len(shard_indices(cfg, s)) for s in queue),
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
