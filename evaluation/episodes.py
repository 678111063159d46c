"""Held-out episodes at the evaluation stride: h5 episodes (`envs.episodes`) or synthetic loops."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

# Episodes with revisit pairs: the scene's memory tasks and Crafter's path-and-return walks.
MEMORY_TASKS: tuple[str, ...] = ("memory_drawer", "memory_drawer_locked", "memory_cube_return", "path_and_return")


@dataclass
class EvalEpisode:
    """One episode at the evaluation stride: frames (T, H, W, 3), T = 1 + K*L; actions (T-1, A)."""

    name: str
    task: str
    frames: np.ndarray
    actions: np.ndarray
    language: list[str]
    chunk_len: int
    revisits: np.ndarray  # (R, 2) frame pairs (i, j) at this stride
    # The scene memory benchmark's records at this stride (episodes collected with them): sim_state,
    # cube_pixel, cube colour and the recorded frame width, for `evaluation.memory_probe.cube_recall`.
    cube: dict | None = None

    def num_model_chunks(self, new_frames: int) -> int:
        return math.ceil((len(self.frames) - 1) / new_frames)

    def chunk_action(self, c: int, new_frames: int) -> tuple[str, np.ndarray]:
        """Language and action vectors (new_frames, A) behind model chunk c's frames (past the end the
        last action repeats: such frames are cut off afterwards)."""
        first = c * new_frames  # actions[t - 1] is behind frame t; chunk c makes frames 1 + first ...
        rows = np.clip(np.arange(first, first + new_frames), 0, len(self.actions) - 1)
        k = min(first // self.chunk_len, len(self.language) - 1)
        return self.language[k], self.actions[rows]


def out_of_context_revisits(revisits: np.ndarray, context_frames: int, new_frames: int) -> np.ndarray:
    """The revisit pairs (i, j) whose first visit i is not in the model's view when it makes frame j:
    neither in j's chunk nor in that chunk's ``context_frames`` given frames (frame 0 is the start, chunk
    c makes frames 1 + c * new_frames ...). Only memory can bring those back."""
    pairs = np.asarray(revisits, np.int64).reshape(-1, 2)
    chunk_start = 1 + ((pairs[:, 1] - 1) // new_frames) * new_frames
    return pairs[(pairs[:, 1] >= 1) & (pairs[:, 0] < chunk_start - context_frames)]


def teacher_chunks(episode: EvalEpisode, mode: str, context_frames: int, new_frames: int) -> int:
    """How many leading chunks of the episode are teacher-forced in ``mode``: none (free), all
    (teacher), or (recall) up to the chunk holding the last first visit of an out-of-context revisit
    pair (none without such pairs)."""
    if mode != "recall":
        return episode.num_model_chunks(new_frames) if mode == "teacher" else 0
    pairs = out_of_context_revisits(episode.revisits, context_frames, new_frames)
    last = int(pairs[:, 0].max()) if len(pairs) else 0
    return (last - 1) // new_frames + 1 if last >= 1 else 0


def stride_episode(episode: dict, frame_skip: int, name: str) -> EvalEpisode:
    """An ``envs.episodes`` dict at stride ``frame_skip`` (``envs.data`` convention: within each chunk the
    last frame of every group of ``frame_skip`` is kept, actions are averaged over the group; revisit
    pairs map to the nearest kept frame)."""
    L = int(episode["attrs"]["chunk_len"])
    if frame_skip < 1 or L % frame_skip:
        raise ValueError(f"{name}: chunk_len {L} is not divisible by --frame-skip {frame_skip}")
    frames, actions = np.asarray(episode["frames"]), np.asarray(episode["actions"], np.float32)
    s = frame_skip
    kept = np.arange(0, len(frames), s)
    cube = None
    if "cube_pixel" in episode and "sim_state" in episode and "cube_color" in episode["attrs"]:
        cube = {"sim_state": np.asarray(episode["sim_state"])[kept], "cube_pixel": np.asarray(episode["cube_pixel"])[kept],
                "color": str(episode["attrs"]["cube_color"]), "width": int(frames.shape[2])}
    if s > 1:
        frames = frames[kept]
        actions = actions.reshape(-1, s, actions.shape[-1]).mean(axis=1)
    pairs = np.rint(np.asarray(episode["revisits"], np.float64).reshape(-1, 2) / s).astype(np.int64)
    pairs = pairs[(pairs[:, 0] < pairs[:, 1])] if len(pairs) else pairs.reshape(0, 2)
    pairs = np.unique(pairs, axis=0) if len(pairs) else pairs
    return EvalEpisode(name, str(episode["attrs"].get("task", "")), frames, actions, list(episode["language"]),
                       L // s, pairs.reshape(-1, 2).astype(np.int64), cube)


def load_h5_episodes(source: str, tasks: Sequence[str] | None, limit: int, frame_skip: int) -> list[EvalEpisode]:
    """The first ``limit`` episodes (files and keys in sorted order) whose task is in ``tasks``."""
    import h5py

    from envs.episodes import h5_files, list_episodes, read_episode

    files = h5_files(source)
    if not files:
        raise FileNotFoundError(f"no h5 episode files at {source!r}")
    chosen = []
    for path in files:
        keys = list_episodes(path)
        with h5py.File(path, "r") as f:
            for key in keys:
                task = f[key].attrs.get("task", "")
                task = task.decode() if isinstance(task, bytes) else str(task)
                if tasks is None or task in tasks:
                    chosen.append((path, key))
                if len(chosen) >= limit:
                    break
        if len(chosen) >= limit:
            break
    return [stride_episode(read_episode(p, k), frame_skip, f"{Path(p).name}:{k}") for p, k in chosen]


def synthetic_episodes(num: int, seed: int, frame_size: int, chunk_len: int, lap_chunks: int) -> list[EvalEpisode]:
    """Two-lap panning loops: the second lap revisits the first (``envs.synthetic.loop_episode``)."""
    from envs.synthetic import loop_episode

    return [stride_episode(loop_episode(seed * 10_007 + i, lap_chunks, laps=2, frame_size=frame_size,
                                        chunk_len=chunk_len), 1, f"synthetic:{seed * 10_007 + i}")
            for i in range(num)]
