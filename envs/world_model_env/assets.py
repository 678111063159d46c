"""What a model folder ships for the env beside its weights: start frames, skill vocabulary, reward heads."""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from worldmodel.heads import RewardHeads

from .options import normalize_text

START_FRAMES_FILE = "start_frames.npz"
SKILLS_FILE = "skills.json"
HEADS_DIR = "heads"
MAX_H5_STARTS = 64


def copy_model_extras(source: Path, dest: Path) -> None:
    """Copy what `source` ships beside its weights (heads, start frames, skills) into the folder `dest`."""
    for extra in (HEADS_DIR, START_FRAMES_FILE, SKILLS_FILE):
        if (source / extra).is_dir():
            shutil.copytree(source / extra, dest / extra, dirs_exist_ok=True)
        elif (source / extra).is_file():
            shutil.copy2(source / extra, dest / extra)


def save_keeping_extras(model: Any, source: Path | None, dest: Path, **save_kwargs: Any) -> None:
    """``model.save_pretrained(dest, **save_kwargs)`` with what the model folder ``source`` ships beside its
    weights copied in: a model trained, exported or rebuilt from another (`experiments.train`, `export_checkpoint`,
    `deepen`) keeps its reward heads (they read real frames, not the UNet; without them every env reward is 0),
    start frames and skills. They are copied aside first, since saving replaces ``dest``, which may be ``source``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.extras.", dir=dest.parent) as staged:
        if source is not None:
            copy_model_extras(Path(source), Path(staged))
        model.save_pretrained(dest, **save_kwargs)
        copy_model_extras(Path(staged), dest)


def frames_set(frames: Any, frame_size: int, name: str) -> np.ndarray:
    """Validate uint8 start frames -> (M, T, H, W, 3)."""
    arr = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if arr.dtype != np.uint8:
        raise TypeError(f"{name} must be uint8 frames, got dtype {arr.dtype}")
    while arr.ndim < 5:
        arr = arr[None]
    if arr.ndim != 5 or arr.shape[-1] != 3 or arr.shape[2:4] != (frame_size, frame_size) or 0 in arr.shape:
        raise ValueError(f"{name} must be (H, W, 3), (T, H, W, 3) or (M, T, H, W, 3) uint8 frames at the model's "
                         f"{frame_size}x{frame_size}, got shape {tuple(np.shape(frames))}")
    return arr


def episode_start_frames(path: str | Path, key: str | None = None) -> np.ndarray:
    """First frame(s) of h5 episodes (``envs.episodes`` schema): (M, 1, H, W, 3)."""
    from envs.episodes import list_episodes, read_episode

    keys = [key] if key is not None else list_episodes(path)[:MAX_H5_STARTS]
    if not keys:
        raise ValueError(f"{path}: no episodes")
    return np.stack([read_episode(path, k)["frames"][:1] for k in keys])


def synthetic_start_frames(frame_size: int, num: int = 16, seed: int = 0) -> np.ndarray:
    """First frames of synthetic panning-world episodes (for models without shipped start frames)."""
    from envs.synthetic import panning_episode

    return np.stack([panning_episode(seed + i, ["stay"], frame_size=frame_size, chunk_len=1)["frames"][:1]
                     for i in range(num)])


@dataclass
class StartSet:
    frames: np.ndarray  # (M, T, H, W, 3) uint8
    tasks: np.ndarray | None = None  # (M,) task names, when the set records them
    source: str = ""


def load_start_set(spec: Any, folder: Path | None, frame_size: int) -> StartSet:
    if spec is None:
        if folder is not None and (folder / START_FRAMES_FILE).is_file():
            spec = folder / START_FRAMES_FILE
        else:
            if folder is not None:
                warnings.warn(f"{folder} has no {START_FRAMES_FILE}: episodes start from synthetic panning-world "
                              "frames; pass start_frames=... (frames, .npz or .h5) for real ones", stacklevel=3)
            return StartSet(synthetic_start_frames(frame_size), None, "synthetic")
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"start frames file not found: {path}")
        if path.suffix in (".h5", ".hdf5"):
            return StartSet(frames_set(episode_start_frames(path), frame_size, str(path)), None, str(path))
        with np.load(path, allow_pickle=False) as data:
            if "frames" not in data:
                raise ValueError(f"{path} has no 'frames' array (uint8 (N, T, H, W, 3))")
            tasks = np.asarray(data["tasks"]).astype(str) if "tasks" in data else None
            return StartSet(frames_set(data["frames"], frame_size, str(path)), tasks, str(path))
    return StartSet(frames_set(spec, frame_size, "start_frames"), None, "user")


def resolve_skills(skills: Sequence[str] | None, folder: Path | None) -> tuple[str, ...]:
    """The skill vocabulary: given, else the model folder's, else the real scene's SKILLS."""
    if skills is None and folder is not None:
        if (folder / SKILLS_FILE).is_file():
            skills = json.loads((folder / SKILLS_FILE).read_text())
        elif (folder / START_FRAMES_FILE).is_file():
            with np.load(folder / START_FRAMES_FILE, allow_pickle=False) as data:
                if "skills" in data:
                    skills = [str(s) for s in data["skills"]]
    if skills is None:
        try:
            from envs.real.skills import SKILLS
        except ImportError as err:
            raise ValueError("no skill vocabulary: the model has none saved and envs.real is unavailable; "
                             "pass skills=[...]") from err
        skills = SKILLS
    skills = tuple(skills)
    if not skills or not all(isinstance(s, str) and s.strip() for s in skills):
        raise ValueError(f"skills must be a non-empty sequence of non-empty strings, got {skills!r}")
    if len({normalize_text(s) for s in skills}) != len(skills):
        raise ValueError("skills must be distinct (ignoring case and spacing)")
    return skills


def resolve_heads(spec: Any, folder: Path | None, device: torch.device) -> RewardHeads | None:
    if spec is False:
        return None
    if spec is None:
        if folder is not None and (folder / HEADS_DIR).is_dir():
            return RewardHeads.from_pretrained(folder / HEADS_DIR, device)
        return None
    if isinstance(spec, RewardHeads):
        return spec.to(device)
    return RewardHeads.from_pretrained(spec, device)


def task_spec(name: str, seed: int):
    try:
        from envs.real.tasks import get_task
    except ImportError as err:
        raise ValueError(f"task {name!r} needs the real task suite (envs.real), which is unavailable; "
                         "pass instruction=... instead") from err
    return get_task(name).build(np.random.default_rng(seed))
