"""Torch datasets of chunk windows over episodes (h5 files from ``envs.episodes`` or dicts).

Frame stride: ``frame_skip`` here subsamples the *stored* frames (on top of the collection's own
frame skip). Within each chunk of L stored frames it keeps the last frame of every group of
``frame_skip`` (L must be divisible by it), matching how collection keeps frames, and averages the
actions of each group; frames[0] is always kept. Below, frames, chunk length L' = L / frame_skip
and actions refer to this strided episode, with T' = 1 + K*L'.

Files are opened lazily, once per process, so DataLoader workers (fork or spawn) are safe.

``ChunkDataset`` items also carry the cube's image location in every window frame (``object_pixels``,
from the episodes' optional ``cube_pixel`` record, indexed exactly as the frames are) and the width of
the frames those pixels refer to (``frame_width``), for the slow phase's cube-weighted loss
(``TrainConfig.object_weight``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Sequence

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from envs.episodes import EpisodeFileError, h5_files, list_episodes, validate_episode
from envs.real.objects import CUBE_PIXEL_FIELDS

Source = str | os.PathLike | Sequence[str | os.PathLike] | Sequence[Mapping]
OBJECT_FIELDS = ("x", "y", "visible")  # the ``cube_pixel`` columns an item's ``object_pixels`` holds, in this order


def _cube_columns(fields: object, num_columns: int) -> tuple[int, ...]:
    """Where x, y and visible sit in a ``cube_pixel`` record whose ``cube_pixel_fields`` attr is ``fields``
    (None: ``CUBE_PIXEL_FIELDS``, whose first four columns older 4-column records share). ValueError if absent."""
    if fields is None:
        names = CUBE_PIXEL_FIELDS
    else:
        names = tuple((fields.decode("utf-8") if isinstance(fields, bytes) else str(fields)).split(","))
    missing = [f for f in OBJECT_FIELDS if f not in names]
    if missing:
        raise ValueError(f"cube_pixel_fields {names} lack {missing}")
    columns = tuple(names.index(f) for f in OBJECT_FIELDS)
    if max(columns) >= num_columns:
        raise ValueError(f"cube_pixel has {num_columns} columns but its fields {names} need {max(columns) + 1}")
    return columns


@dataclass(frozen=True)
class _Ref:
    """Where one episode lives and what the index needs to know about it."""

    file: str | None  # None: in-memory episode ``index``
    key: str
    index: int
    num_chunks: int
    chunk_len: int  # stored L
    language: tuple[str, ...]
    cube_columns: tuple[int, ...] | None = None  # x, y, visible columns of ``cube_pixel``; None: no record
    frame_width: int = 0  # the stored frames' width, which ``cube_pixel``'s pixels refer to


class _Episodes:
    """Episode index plus lazy, per-process frame/action reads."""

    def __init__(self, source: Source):
        items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
        self._memory = [dict(e) for e in items if isinstance(e, Mapping)]
        if self._memory and len(self._memory) != len(items):
            raise ValueError("source mixes in-memory episodes and paths")
        self.refs = self._index_memory() if self._memory else self._index_files(h5_files(items))
        if not self.refs:
            raise ValueError(f"no episodes found in {source!r}")
        self._handles: dict[str, h5py.File] = {}
        self._pid = os.getpid()

    def _index_memory(self) -> list[_Ref]:
        refs = []
        for i, ep in enumerate(self._memory):
            K, L = validate_episode(ep, f"episode {i}")
            columns = None
            if "cube_pixel" in ep:
                try:
                    columns = _cube_columns(ep["attrs"].get("cube_pixel_fields"), np.shape(ep["cube_pixel"])[1])
                except ValueError as err:
                    raise ValueError(f"episode {i}: {err}") from err
            refs.append(_Ref(None, str(i), i, K, L, tuple(ep["language"]), columns, np.shape(ep["frames"])[2]))
        return refs

    @staticmethod
    def _index_files(files: list[str]) -> list[_Ref]:
        refs = []
        for path in files:
            keys = list_episodes(path)
            with h5py.File(path, "r") as f:
                for key in keys:
                    refs.append(_Episodes._index_group(path, f, key))
        return refs

    @staticmethod
    def _index_group(path: str, f: h5py.File, key: str) -> _Ref:
        try:
            g = f[key]
            missing = [n for n in ("frames", "actions", "skill_ids", "language") if n not in g]
            if missing:
                raise EpisodeFileError(path, key, f"missing fields {missing}")
            L, K = int(g.attrs["chunk_len"]), len(g["skill_ids"])
            T, n_actions = g["frames"].shape[0], g["actions"].shape[0]
            language = tuple(s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in g["language"][()])
            width = int(g["frames"].shape[2])
            cube_shape = g["cube_pixel"].shape if "cube_pixel" in g else None
            columns = None
            if cube_shape is not None:
                if len(cube_shape) != 2 or cube_shape[0] != T:
                    raise EpisodeFileError(path, key, f"cube_pixel shape {cube_shape}, expected ({T}, D)")
                columns = _cube_columns(g.attrs.get("cube_pixel_fields"), cube_shape[1])
        except EpisodeFileError:
            raise
        except (OSError, KeyError, RuntimeError, ValueError) as err:
            raise EpisodeFileError(path, key, f"corrupt episode: {err}") from err
        if T != 1 + K * L or n_actions != T - 1 or len(language) != K:
            raise EpisodeFileError(
                path, key, f"inconsistent lengths: {T} frames, {n_actions} actions, {len(language)} texts, K={K}, L={L}"
            )
        return _Ref(path, key, 0, K, L, language, columns, width)

    def _group(self, ref: _Ref) -> h5py.Group:
        if os.getpid() != self._pid:  # forked worker: never reuse the parent's handles
            self._handles, self._pid = {}, os.getpid()
        if ref.file not in self._handles:
            try:
                self._handles[ref.file] = h5py.File(ref.file, "r")
            except OSError as err:
                raise EpisodeFileError(ref.file, ref.key, f"cannot open (truncated or corrupt?): {err}") from err
        return self._handles[ref.file][ref.key]

    def read(self, ref: _Ref, field: str, lo: int, hi: int) -> np.ndarray:
        """Rows lo..hi-1 of ``frames``, ``actions`` or a per-frame record (``cube_pixel``)."""
        if ref.file is None:
            return np.asarray(self._memory[ref.index][field][lo:hi])
        try:
            rows = self._group(ref)[field][lo:hi]
        except EpisodeFileError:
            raise
        except (OSError, KeyError, RuntimeError, ValueError) as err:
            raise EpisodeFileError(ref.file, ref.key, f"cannot read {field}[{lo}:{hi}]: {err}") from err
        if len(rows) != hi - lo:
            raise EpisodeFileError(ref.file, ref.key, f"{field} truncated: wanted rows {lo}..{hi - 1}")
        return rows

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": {}}


class _StridedWindows(Dataset):
    """Shared strided indexing for the two datasets."""

    def __init__(self, source: Source, context_frames: int, new_frames: int, frame_skip: int):
        if context_frames < 0 or new_frames < 1 or frame_skip < 1:
            raise ValueError("need context_frames >= 0, new_frames >= 1, frame_skip >= 1")
        self.context_frames, self.new_frames, self.frame_skip = context_frames, new_frames, frame_skip
        self._episodes = _Episodes(source)
        for ref in self._episodes.refs:
            if ref.chunk_len % frame_skip:
                where = f"{ref.file}, episode {ref.key!r}" if ref.file else f"episode {ref.key}"
                raise ValueError(f"{where}: chunk_len {ref.chunk_len} is not divisible by frame_skip {frame_skip}")

    def _chunk_len(self, ref: _Ref) -> int:
        return ref.chunk_len // self.frame_skip

    def _stored_index(self, idx: np.ndarray) -> np.ndarray:
        """The stored rows of strided frame indices ``idx`` (>= 0): frames and per-frame records alike."""
        return np.where(idx == 0, 0, idx * self.frame_skip)  # strided t >= 1 -> stored 1 + (t-1)*s + s-1 = t*s

    def _rows(self, ref: _Ref, field: str, idx: np.ndarray) -> np.ndarray:
        """Rows of per-frame ``field`` at strided frame indices ``idx``, one read."""
        stored = self._stored_index(idx)
        lo, hi = int(stored.min()), int(stored.max()) + 1
        return self._episodes.read(ref, field, lo, hi)[stored - lo]

    def _object_pixels(self, ref: _Ref, idx: np.ndarray) -> np.ndarray:
        """float32 (len(idx), 3): the cube's (x, y, visible) at strided frame indices ``idx`` (the frames' own
        rows: the same context padding and stride); NaN x, y and visible 0 when the episode has no record."""
        if ref.cube_columns is None:
            out = np.full((len(idx), len(OBJECT_FIELDS)), np.nan, np.float32)
            out[:, OBJECT_FIELDS.index("visible")] = 0.0
            return out
        return self._rows(ref, "cube_pixel", idx)[:, list(ref.cube_columns)].astype(np.float32)

    def _frames_actions(self, ref: _Ref, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Strided frames at indices ``idx`` (>= 0) and the actions behind them (idx >= 1 only)."""
        s = self.frame_skip
        frames = self._rows(ref, "frames", idx)
        act_idx = idx[idx >= 1]
        if act_idx.size == 0:
            return frames, np.zeros((0, 0), np.float32)
        a_lo, a_hi = int(act_idx.min() - 1) * s, int(act_idx.max()) * s
        acts = self._episodes.read(ref, "actions", a_lo, a_hi).astype(np.float32)
        groups = acts.reshape(-1, s, acts.shape[-1]).mean(axis=1)  # group g = strided frame a_lo/s + g + 1
        return frames, groups[act_idx - 1 - a_lo // s]

    def _context_index(self, start: int) -> np.ndarray:
        """The context_frames indices before ``start``, repeating frame 0 past the episode start."""
        return np.maximum(np.arange(start - self.context_frames, start), 0)


class ChunkDataset(_StridedWindows):
    """(context, target) windows whose target starts at a chunk boundary.

    For chunk k (boundary b = 1 + k*L') with b + new_frames <= T': ``target`` = frames[b : b+Tn]
    (may span later chunks when Tn > L'), ``context`` = the Tc frames before b (frames[0] repeated
    when the episode start is reached), ``text`` = language[k] (the chunk the target starts in),
    ``action`` = the (Tn, A) actions behind the target frames, ``object_pixels`` = float32 (Tc + Tn, 3)
    the cube's (x, y, visible) in the context then the target frames (``envs.real.objects.CUBE_PIXEL_FIELDS``;
    NaN x, y and visible 0 without a ``cube_pixel`` record), ``frame_width`` = the width in pixels of the
    episode's frames, which those coordinates refer to.
    """

    def __init__(self, source: Source, context_frames: int, new_frames: int, frame_skip: int = 1):
        super().__init__(source, context_frames, new_frames, frame_skip)
        self._items = [
            (ref, k)
            for ref in self._episodes.refs
            for k in range(ref.num_chunks)
            if 1 + k * self._chunk_len(ref) + new_frames <= 1 + ref.num_chunks * self._chunk_len(ref)
        ]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> dict:
        ref, k = self._items[i]
        start = 1 + k * self._chunk_len(ref)
        target = np.arange(start, start + self.new_frames)
        idx = np.concatenate([self._context_index(start), target])
        frames, actions = self._frames_actions(ref, idx)
        return dict(
            context=torch.from_numpy(np.ascontiguousarray(frames[: self.context_frames])),
            target=torch.from_numpy(np.ascontiguousarray(frames[self.context_frames :])),
            text=ref.language[k],
            action=torch.from_numpy(np.ascontiguousarray(actions[-self.new_frames :])),
            object_pixels=torch.from_numpy(np.ascontiguousarray(self._object_pixels(ref, idx))),
            frame_width=ref.frame_width,
        )


class EpisodeDataset(_StridedWindows):
    """Runs of ``num_chunks`` consecutive chunk windows of one episode, for the slow-fast loop.

    Items end at the episode's last chunk: runs start at chunks T - num_chunks, T - 2*num_chunks, ... >= 0 for an
    episode of T chunks (non-overlapping; needs new_frames <= L'). The last run always holds the episode's end,
    where a memory episode revisits what it hid: the scene's drawer reopen is the last chunk, 7-10 chunks after
    the cube is hidden, in episodes of 13-18 chunks. Of 16 held-out memory episodes, 12-chunk runs from chunk 0
    held the hiding and the reopen in 1; runs that end at the last chunk hold both in 15 (the 16th never reopens).
    For a run starting at chunk k0 (boundary b_c = 1 + (k0+c)*L'):

    - ``frames`` (Tc + num_chunks*Tn, H, W, 3) = the Tc frames before b_0 (frame 0 repeated past the
      start), then the first Tn frames of each chunk: frames[Tc + c*Tn : Tc + (c+1)*Tn] is chunk
      k0+c's target, and its context is frames[c*Tn : c*Tn + Tc] (for any Tc). With Tn == L' this
      is contiguous real video; with Tn < L' each chunk's last L'-Tn frames are skipped.
    - ``texts``: the num_chunks chunk instructions; ``actions``: (num_chunks, Tn, A).
    - ``object_pixels`` (Tc + num_chunks*Tn, 3): the cube's (x, y, visible) in each of ``frames`` (rows
      c*Tn : c*Tn + Tc + Tn are chunk k0+c's, as ``ChunkDataset`` gives them), ``frame_width`` as there: the
      slow-fast loss weights the cube's cells as the slow phase's does.

    torch's default_collate turns ``texts`` into num_chunks lists of batch-size strings.
    """

    def __init__(self, source: Source, context_frames: int, new_frames: int, num_chunks: int, frame_skip: int = 1,
                 anchor: str = "end"):
        """``anchor="start"``: runs start at chunks 0, num_chunks, ... instead (an episode's first chunks, as
        ``experiments.fast_update`` measures them)."""
        super().__init__(source, context_frames, new_frames, frame_skip)
        if num_chunks < 1:
            raise ValueError("num_chunks must be >= 1")
        if anchor not in ("end", "start"):
            raise ValueError(f"anchor must be 'end' or 'start', got {anchor!r}")
        self.num_chunks = num_chunks
        for ref in self._episodes.refs:
            if new_frames > self._chunk_len(ref):
                raise ValueError(f"new_frames {new_frames} exceeds the strided chunk length {self._chunk_len(ref)}")
        self._items = [
            (ref, k0)
            for ref in self._episodes.refs
            for k0 in (range(ref.num_chunks - num_chunks, -1, -num_chunks) if anchor == "end"
                       else range(0, ref.num_chunks - num_chunks + 1, num_chunks))
        ]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> dict:
        ref, k0 = self._items[i]
        L, Tn = self._chunk_len(ref), self.new_frames
        starts = [1 + (k0 + c) * L for c in range(self.num_chunks)]
        targets = np.concatenate([np.arange(b, b + Tn) for b in starts])
        idx = np.concatenate([self._context_index(starts[0]), targets])
        frames, actions = self._frames_actions(ref, idx)
        return dict(
            frames=torch.from_numpy(np.ascontiguousarray(frames)),
            texts=list(ref.language[k0 : k0 + self.num_chunks]),
            actions=torch.from_numpy(np.ascontiguousarray(actions[-len(targets) :].reshape(self.num_chunks, Tn, -1))),
            object_pixels=torch.from_numpy(np.ascontiguousarray(self._object_pixels(ref, idx))),
            frame_width=ref.frame_width,
        )
