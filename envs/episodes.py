"""Episode schema and h5py storage shared by collection, datasets and the learned env.

An episode is a dict (K chunks of L kept frames each):

- ``frames``: uint8 (T, H, W, 3), T = 1 + K*L; frames[0] is the reset observation.
- ``actions``: float32 (T-1, A); ``actions[t-1]`` is the low-level action behind ``frames[t]``
  (with frame skip: the mean over the skipped steps).
- ``skill_ids``: int64 (K,); ``language``: K str; ``reward``: float32 (K,); ``success``: bool (K,).
- ``revisits``: int64 (R, 2) frame pairs (i, j), i < j: frame j revisits the scene of frame i.
- ``attrs``: dict with at least ``seed, task, domain, instruction, chunk_len, frame_skip``
  (str/int/float/bool values).
- optional ``goal``: uint8 (H, W, 3) image of the task's goal scene.
- optional per-frame simulator records (OGBench scene; ``envs.real.objects`` names the columns):
  ``sim_state`` float32 (T, S) object state at each frame, ``cube_pixel`` float32 (T, 4) the cube's
  projected image location, half-size and visible fraction; ``camera`` float64 (3, 4), the projection
  of world points onto the frames. Their column names are in ``attrs`` (``sim_state_fields``,
  ``cube_pixel_fields``, comma-separated). Files without them stay valid.

On disk each episode is one h5 group (frames chunked and compressed, language as UTF-8
variable-length strings, attrs as h5 attrs; frames and actions carry Fletcher-32 checksums).
Files are only ever written whole, to a temporary name that is then renamed, so a file that
exists is complete.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import h5py
import numpy as np

REQUIRED_ATTRS = ("seed", "task", "domain", "instruction", "chunk_len", "frame_skip")
ARRAY_FIELDS = ("frames", "actions", "skill_ids", "reward", "success", "revisits")
_DTYPES = {
    "frames": np.uint8,
    "actions": np.float32,
    "skill_ids": np.int64,
    "reward": np.float32,
    "success": np.bool_,
    "revisits": np.int64,
}
# Optional fields: per-frame records (T rows) and the camera; absent from older files.
PER_FRAME_FIELDS = ("sim_state", "cube_pixel")
OPTIONAL_FIELDS = ("goal", *PER_FRAME_FIELDS, "camera")
_DTYPES.update(sim_state=np.float32, cube_pixel=np.float32, camera=np.float64)
EPISODE_PREFIX = "episode_"


class EpisodeFileError(ValueError):
    """A missing, truncated or corrupt episode file or field; the message names file and episode."""

    def __init__(self, path: str | os.PathLike, key: str | None, reason: str):
        self.path, self.key = str(path), key
        where = f"{path}" + (f", episode {key!r}" if key else "")
        super().__init__(f"{where}: {reason}")


def episode_key(index: int) -> str:
    """Group name of the episode with global index ``index`` (sortable)."""
    return f"{EPISODE_PREFIX}{index:07d}"


def validate_episode(episode: Mapping, name: str = "episode") -> tuple[int, int]:
    """Check fields, dtypes and shapes against the schema; return (K, L). Raises ValueError."""
    missing = [f for f in (*ARRAY_FIELDS, "language", "attrs") if f not in episode]
    if missing:
        raise ValueError(f"{name}: missing fields {missing}")
    attrs = episode["attrs"]
    lacking = [a for a in REQUIRED_ATTRS if a not in attrs]
    if lacking:
        raise ValueError(f"{name}: attrs lack {lacking}")
    for field in ARRAY_FIELDS:
        dtype = np.asarray(episode[field]).dtype
        if dtype != _DTYPES[field]:
            raise ValueError(f"{name}: {field} has dtype {dtype}, expected {np.dtype(_DTYPES[field])}")
    frames, actions = np.asarray(episode["frames"]), np.asarray(episode["actions"])
    K, L = len(episode["skill_ids"]), int(attrs["chunk_len"])
    T = 1 + K * L
    checks = [
        (frames.ndim == 4 and frames.shape[-1] == 3, f"frames shape {frames.shape} is not (T, H, W, 3)"),
        (frames.shape[0] == T, f"{frames.shape[0]} frames but 1 + K*L = {T} (K={K}, L={L})"),
        (actions.ndim == 2 and actions.shape[0] == T - 1, f"actions shape {actions.shape}, expected ({T - 1}, A)"),
        (len(episode["language"]) == K, f"{len(episode['language'])} language strings for {K} chunks"),
        (all(isinstance(s, str) for s in episode["language"]), "language entries must be str"),
        (np.shape(episode["reward"]) == (K,), f"reward shape {np.shape(episode['reward'])} != ({K},)"),
        (np.shape(episode["success"]) == (K,), f"success shape {np.shape(episode['success'])} != ({K},)"),
    ]
    revisits = np.asarray(episode["revisits"])
    checks += [
        (revisits.ndim == 2 and revisits.shape[1] == 2, f"revisits shape {revisits.shape} is not (R, 2)"),
        (revisits.size == 0 or (revisits.min() >= 0 and revisits.max() < T), "revisit index out of range"),
    ]
    if "goal" in episode:
        goal = np.asarray(episode["goal"])
        checks.append((goal.dtype == np.uint8 and goal.shape == frames.shape[1:], f"goal {goal.shape} {goal.dtype}"))
    for field in PER_FRAME_FIELDS:
        if field in episode:
            arr = np.asarray(episode[field])
            checks.append((arr.dtype == _DTYPES[field], f"{field} has dtype {arr.dtype}, expected {np.dtype(_DTYPES[field])}"))
            checks.append((arr.ndim == 2 and arr.shape[0] == T, f"{field} shape {arr.shape}, expected ({T}, D)"))
    if "camera" in episode:
        camera = np.asarray(episode["camera"])
        checks.append((camera.dtype == np.float64 and camera.shape == (3, 4), f"camera {camera.shape} {camera.dtype}"))
    for ok, message in checks:
        if not ok:
            raise ValueError(f"{name}: {message}")
    return K, L


def _write_group(group: h5py.Group, episode: Mapping, compression: str) -> None:
    frames = np.asarray(episode["frames"])
    chunk = (max(1, min(len(frames), int(episode["attrs"]["chunk_len"]))), *frames.shape[1:])
    # Fletcher-32 checksums turn silently corrupted chunks into read errors.
    group.create_dataset("frames", data=frames, chunks=chunk, compression=compression, fletcher32=True)
    group.create_dataset("actions", data=np.asarray(episode["actions"], np.float32), fletcher32=True)
    for field in ARRAY_FIELDS[2:]:
        group.create_dataset(field, data=np.asarray(episode[field], _DTYPES[field]))
    group.create_dataset("language", data=list(episode["language"]), dtype=h5py.string_dtype("utf-8"))
    if "goal" in episode:
        goal = np.asarray(episode["goal"], np.uint8)
        group.create_dataset("goal", data=goal, compression=compression, fletcher32=True)
    for field in (*PER_FRAME_FIELDS, "camera"):
        if field in episode:
            group.create_dataset(field, data=np.asarray(episode[field], _DTYPES[field]), fletcher32=True)
    for name, value in episode["attrs"].items():
        group.attrs[name] = value


def write_episodes(
    path: str | os.PathLike,
    episodes: Iterable[tuple[str, Mapping]] | Mapping[str, Mapping],
    *,
    append: bool = False,
    file_attrs: Mapping | None = None,
    compression: str = "lzf",
) -> list[str]:
    """Write (key, episode) pairs to ``path`` atomically; return the keys written.

    The file is built under a temporary name and renamed into place, so readers and an interrupted
    writer never see a partial file. ``append`` copies an existing file first (O(file size)); it is
    an error to write a key that is already there. Episodes are validated before writing.
    """
    path = Path(path)
    items = list(episodes.items() if isinstance(episodes, Mapping) else episodes)
    for key, episode in items:
        validate_episode(episode, f"{path}, episode {key!r}")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if append and path.exists():
            shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a" if append else "w") as f:
            for name, value in (file_attrs or {}).items():
                f.attrs[name] = value
            for key, episode in items:
                if key in f:
                    raise ValueError(f"{path}: episode {key!r} already exists")
                _write_group(f.create_group(key), episode, compression)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return [key for key, _ in items]


def h5_files(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Expand a file, a directory (its ``*.h5``, temp files skipped) or a list of them."""
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    files: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files += [str(f) for f in sorted(p.glob("*.h5")) if not f.name.startswith(".")]
        else:
            files.append(str(p))
    return files


def _open(path: str | os.PathLike, key: str | None = None) -> h5py.File:
    if not Path(path).is_file():
        raise EpisodeFileError(path, key, "no such file")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise EpisodeFileError(path, key, f"cannot open as HDF5 (truncated or corrupt?): {err}") from err


def list_episodes(path: str | os.PathLike) -> list[str]:
    """Sorted episode keys in a file."""
    with _open(path) as f:
        try:
            return sorted(k for k in f.keys() if isinstance(f[k], h5py.Group))
        except (OSError, KeyError, RuntimeError) as err:
            raise EpisodeFileError(path, None, f"cannot list episodes: {err}") from err


def file_attrs(path: str | os.PathLike) -> dict:
    """Attributes stored on the file itself (e.g. the skill vocabulary)."""
    with _open(path) as f:
        return {k: _plain(v) for k, v in f.attrs.items()}


def _plain(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.dtype.kind in "OS" else value
    return value


def _read_group(path: str | os.PathLike, group: h5py.Group, key: str) -> dict:
    """Read and validate an open episode group; EpisodeFileError on missing or corrupt data."""
    episode: dict = {}
    try:
        for field in (*ARRAY_FIELDS, "language"):
            if field not in group:
                raise EpisodeFileError(path, key, f"missing field {field!r}")
        for field in (*ARRAY_FIELDS, *OPTIONAL_FIELDS):
            if field in group:
                episode[field] = group[field][()]
        episode["language"] = [_plain(s) for s in group["language"][()]]
        episode["attrs"] = {k: _plain(v) for k, v in group.attrs.items()}
    except EpisodeFileError:
        raise
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as err:
        raise EpisodeFileError(path, key, f"corrupt data: {err}") from err
    try:
        validate_episode(episode, "episode")
    except ValueError as err:
        raise EpisodeFileError(path, key, str(err).removeprefix("episode: ")) from err
    return episode


def read_episode(path: str | os.PathLike, key: str) -> dict:
    """Read and validate one episode; EpisodeFileError names file and episode on any problem."""
    with _open(path, key) as f:
        if key not in f:
            raise EpisodeFileError(path, key, "no such episode")
        return _read_group(path, f[key], key)


def dummy_episode(num_chunks: int = 3, chunk_len: int = 4, size: int = 8, action_dim: int = 5, seed: int = 0) -> dict:
    """A schema-valid synthetic episode (no simulator) for tests and smoke runs.

    Frame t has value t % 256 at pixel (0, 0, channel 0) and action t-1 equals t in every entry,
    so windows can be checked against their indices.
    """
    rng = np.random.default_rng(seed)
    T = 1 + num_chunks * chunk_len
    frames = rng.integers(0, 256, (T, size, size, 3), dtype=np.uint8)
    frames[:, 0, 0, 0] = np.arange(T) % 256
    actions = np.repeat(np.arange(1, T, dtype=np.float32)[:, None], action_dim, axis=1)
    return dict(
        frames=frames,
        actions=actions,
        skill_ids=np.arange(num_chunks, dtype=np.int64),
        language=[f"skill number {k}" for k in range(num_chunks)],
        reward=-np.ones(num_chunks, np.float32),
        success=np.ones(num_chunks, bool),
        revisits=np.array([[0, T - 1]], np.int64),
        attrs=dict(
            seed=seed, task="dummy", domain="dummy", instruction="do the dummy task",
            chunk_len=chunk_len, frame_skip=1,
        ),
    )
