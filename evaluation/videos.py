"""Frames people look at: captioned frames, side-by-side grids, mp4 files (and a PNG sheet without moviepy)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .episodes import EvalEpisode
from .report import SHORT

LINE_HEIGHT = 12


def caption_frame(frame: np.ndarray, lines: list[str], scale: int) -> np.ndarray:
    """Upscale a frame and put caption lines in a black band under it."""
    big = frame.repeat(scale, 0).repeat(scale, 1)
    band = Image.new("RGB", (big.shape[1], LINE_HEIGHT * len(lines) + 4), (0, 0, 0))
    draw, font = ImageDraw.Draw(band), ImageFont.load_default()
    for i, line in enumerate(lines):
        draw.text((3, 2 + i * LINE_HEIGHT), line, fill=(255, 255, 255), font=font)
    return np.concatenate([big, np.asarray(band)], axis=0)


def wrap_text(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + [line] if line else lines


def fixed_lines(lines: list[str], n: int) -> list[str]:
    """Exactly n lines, so every captioned frame has the same height."""
    return (lines + [""] * n)[:n]


def write_mp4(path: str | Path, frames: Sequence[np.ndarray], fps: int) -> None:
    """An H.264 mp4 (moviepy with the ffmpeg that imageio-ffmpeg bundles)."""
    from moviepy import ImageSequenceClip

    ImageSequenceClip(list(frames), fps=fps).write_videofile(str(path), codec="libx264", audio=False, logger=None)


def frame_sheet(frames: Sequence[np.ndarray], num: int = 8) -> np.ndarray:
    """``num`` evenly spaced frames stacked top to bottom: a PNG-able look at a video."""
    return np.concatenate(list(frames)[:: max(1, len(frames) // num)][:num], axis=0)


def grid_frames(episode: EvalEpisode, videos: dict[str, np.ndarray], new_frames: int,
                scale: int) -> list[np.ndarray]:
    """Real video beside every variant, captioned with name, frame index, context/generated and revisits."""
    revisit_of = {int(j): int(i) for i, j in episode.revisits}
    columns = {"real video": episode.frames, **{SHORT[k]: v for k, v in videos.items()}}
    out = []
    for t in range(len(episode.frames)):
        status = "start (real)" if t == 0 else f"chunk {(t - 1) // new_frames + 1}"  # model chunks
        mark = f"revisits t={revisit_of[t]}" if t in revisit_of else ""
        tiles = [caption_frame(v[t], [name[:24], f"t={t} {status}", mark], scale) for name, v in columns.items()]
        sep = np.full((tiles[0].shape[0], 2, 3), 128, np.uint8)
        row = np.concatenate([x for tile in tiles for x in (tile, sep)][:-1], axis=1)
        out.append(np.pad(row, ((0, row.shape[0] % 2), (0, row.shape[1] % 2), (0, 0))))  # even sizes for x264
    return out


def comparison_sheet(episode: EvalEpisode, videos: dict[str, np.ndarray], new_frames: int, num: int = 8,
                     scale: int = 2) -> np.ndarray:
    """A still of one episode: columns are ``num`` evenly spaced frames (start frame first), rows the real
    video and then every variant's, each tile captioned with its row, frame index and the model chunk's
    instruction (a PNG to look at)."""
    T = len(episode.frames)
    times = np.unique(np.linspace(0, T - 1, num).round().astype(int))
    rows = {"real video": episode.frames, **{SHORT.get(k, k): v for k, v in videos.items()}}
    out = []
    for name, video in rows.items():
        tiles = []
        for t in times:
            text = "start (real)" if t == 0 else episode.chunk_action((t - 1) // new_frames, new_frames)[0]
            lines = fixed_lines([f"{name[:14]} t={t}", *wrap_text(text, 5 * scale)[:3]], 4)
            tiles.append(caption_frame(video[t], lines, scale))
            tiles.append(np.full((tiles[-1].shape[0], 2, 3), 128, np.uint8))
        out.append(np.concatenate(tiles[:-1], axis=1))
        out.append(np.full((2, out[-1].shape[1], 3), 128, np.uint8))
    return np.concatenate(out[:-1], axis=0)


def write_grid(path: Path, frames: list[np.ndarray], fps: int, notes: list[str]) -> str | None:
    """mp4 with moviepy; without moviepy a PNG sheet of 8 frames instead (a note says so)."""
    try:
        import moviepy  # noqa: F401
    except ImportError:
        png = path.with_suffix(".png")
        Image.fromarray(frame_sheet(frames)).save(png)
        notes.append("moviepy is not installed: the grid is a PNG sheet of 8 frames")
        return png.name
    write_mp4(path, frames, fps)
    return path.name
