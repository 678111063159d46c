"""Cube-recall probe of the scene memory benchmark: does a (generated) frame show the hidden cube, in
its colour, where the real cube is, when the drawer is reopened?

Pure functions on arrays (numpy only). They read what collection records per episode
(``envs.episodes``): ``cube_pixel`` (the cube's image location from the simulator, not from
pixels), ``sim_state`` and ``attrs["cube_color"]`` (one of ``envs.real.objects.CUBE_COLOR_NAMES``).

How a frame is judged (:func:`classify_frame`): every pixel in a disc of radius ``half_size +
search_margin`` around the visible part of the cube (``visible_x``, ``visible_y``) gets a colour
label from its hue, when its chroma (distance from grey) is at least ``min_chroma`` (``min_chroma_blue``
for blue: the scene itself is bluish, so a faint blue cube reads as none) and its hue lies within
``max_hue_distance`` of the nearest palette hue (the purple arm does not), else none. The
frame shows the colour with the most such pixels if it has at least ``min_pixels`` of them, else
:data:`NO_CUBE`. Hue is what lighting keeps (the cube's lit top and shaded sides share it), and the
scene behind the cube (navy floor, white-cyan drawer, grey metal) has little chroma. Reference hues
were measured on rendered cubes of each palette colour (module constant :data:`REFERENCE_HUES`).

The memory score (:func:`cube_recall`): the frames of the drawer reopen in which the real cube is
visible again after being hidden in the closed drawer (:func:`reopen_frames`); the episode counts as
recalled when its true colour wins the vote over those frames. Chance for a model that draws a cube
of a guessed colour is ``1 / len(CUBE_COLOR_NAMES)`` (:func:`chance_level`); one that draws an empty
drawer scores 0 (its rate of :data:`NO_CUBE` verdicts is reported too).

Validated on real rendered frames (64x64; docs/RESULTS.md): every frame with the cube at least 20%
visible reads as its colour; with the cube painted out (its disc filled with the surrounding
drawer colour) the reopen reads as none, and with its hue turned to the next palette colour, as that
colour. Known blind spot: while the drawer is locked, its red handle lies on the hidden cube's image
location (at the image's left edge), so those frames read red; only reopen frames are scored.

Revisit pairs that do not need memory (the state is named by the action or visible in context:
window, buttons, the drawer alone, the cube put back) are listed by :func:`control_pairs` as the
in-context control.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from envs.real.objects import CUBE_COLOR_NAMES, CUBE_PIXEL_FIELDS, MIN_VISIBLE, SIM_STATE_FIELDS, reopen_frames

NO_CUBE = "none"
COLOR_NAMES: tuple[str, ...] = CUBE_COLOR_NAMES
# Hue (degrees, see hue_chroma) of each palette colour as rendered: the median over the visible cube
# pixels of 10 memory_drawer episodes at 64x64 (OSMesa, fast render), whose 1st-99th percentiles were
# red 0-0, orange 26-40, yellow 60-72, green 132-135, blue 229-234.
REFERENCE_HUES: dict[str, float] = {"red": 0.0, "orange": 32.0, "yellow": 67.0, "green": 133.0, "blue": 231.0}

_X, _Y, _HALF, _VISIBLE, _VX, _VY = (CUBE_PIXEL_FIELDS.index(f) for f in
                                      ("x", "y", "half_size", "visible", "visible_x", "visible_y"))
_IN_DRAWER = SIM_STATE_FIELDS.index("cube_in_drawer")


@dataclass(frozen=True)
class ProbeConfig:
    """Thresholds of the probe (pixel units are those of the frames being judged)."""

    min_chroma: float = 35.0  # 0-255 scale; the navy floor and the white-cyan drawer are below ~31
    min_chroma_blue: float = 100.0  # blue hues: the bluish scene reaches 62 (99.9th percentile), at most 79
    max_hue_distance: float = 15.0  # degrees from the nearest reference hue (the purple arm starts ~20 from blue)
    search_margin: float = 1.5  # pixels beyond the cube's projected half-size
    min_pixels: int = 2  # cube-coloured pixels needed to see a cube
    min_visible: float = MIN_VISIBLE  # real visible fraction for a reopen frame to be scored


def chance_level(num_colors: int = len(COLOR_NAMES)) -> float:
    """Recall of a model that draws a cube of a uniformly guessed colour."""
    return 1.0 / num_colors


def hue_chroma(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hue in degrees [0, 360) and chroma (0-255 scale) of uint8/float RGB values (..., 3): the angle
    and length of the colour's projection onto the plane orthogonal to grey (red at 0, green at 120,
    blue at 240)."""
    rgb = np.asarray(rgb, np.float64)
    a = rgb[..., 0] - 0.5 * (rgb[..., 1] + rgb[..., 2])
    b = np.sqrt(3.0) / 2.0 * (rgb[..., 1] - rgb[..., 2])
    return np.degrees(np.arctan2(b, a)) % 360.0, np.hypot(a, b)


def pixel_labels(rgb: np.ndarray, config: ProbeConfig = ProbeConfig()) -> np.ndarray:
    """Palette index (into :data:`COLOR_NAMES`) of each pixel (..., 3), or -1 for none."""
    hue, chroma = hue_chroma(rgb)
    refs = np.array([REFERENCE_HUES[name] for name in COLOR_NAMES])
    dist = np.abs((hue[..., None] - refs + 180.0) % 360.0 - 180.0)
    nearest = dist.argmin(-1)
    floor = np.where(nearest == COLOR_NAMES.index("blue"), config.min_chroma_blue, config.min_chroma)
    ok = (chroma >= floor) & (np.take_along_axis(dist, nearest[..., None], -1)[..., 0] <= config.max_hue_distance)
    return np.where(ok, nearest, -1)


def _disc(shape: tuple[int, int], cx: float, cy: float, radius: float) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return (cols + 0.5 - cx) ** 2 + (rows + 0.5 - cy) ** 2 <= radius**2


def cube_window(frame_shape: Sequence[int], cube_pixel: np.ndarray, scale: float = 1.0,
                config: ProbeConfig = ProbeConfig()) -> np.ndarray:
    """Boolean (H, W) mask of the pixels the probe looks at for one frame: a disc around the visible
    part of the cube. ``scale`` maps recorded pixel coordinates onto this frame (its width over the
    recorded frames' width)."""
    row = np.asarray(cube_pixel, np.float64)
    radius = row[_HALF] * scale + config.search_margin
    return _disc(tuple(frame_shape[:2]), row[_VX] * scale, row[_VY] * scale, radius)


def classify_frame(frame: np.ndarray, cube_pixel: np.ndarray, scale: float = 1.0,
                   config: ProbeConfig = ProbeConfig()) -> str:
    """Palette colour name of the cube the frame shows at the recorded cube location, or
    :data:`NO_CUBE`. ``cube_pixel`` is the frame's row of the episode's ``cube_pixel`` record."""
    frame = np.asarray(frame)
    labels = pixel_labels(frame[cube_window(frame.shape, cube_pixel, scale, config)], config)
    counts = np.bincount(labels[labels >= 0], minlength=len(COLOR_NAMES))
    best = int(counts.argmax())
    return COLOR_NAMES[best] if counts[best] >= config.min_pixels else NO_CUBE


def frame_chunks(frame_indices: Sequence[int], chunk_len: int) -> np.ndarray:
    """Chunk index of each frame (frame 0 is the reset frame; chunk k holds frames k*L+1 .. (k+1)*L)."""
    return np.unique((np.asarray(frame_indices, np.int64) - 1) // int(chunk_len))


def cube_recall(frames: np.ndarray, cube_pixel: np.ndarray, sim_state: np.ndarray, color: str,
                config: ProbeConfig = ProbeConfig(), recorded_width: int | None = None) -> dict:
    """Score one episode's (generated) ``frames`` at the drawer reopen.

    ``frames``: (T, H, W, 3) aligned with the episode's frames (same indices; any resolution when
    ``recorded_width`` gives the width the ``cube_pixel`` record refers to). Returns ``frames`` (the
    scored frame indices), ``labels`` (verdict per scored frame), ``label`` (the vote's winner, ties
    broken by palette order, :data:`NO_CUBE` last), ``correct`` (the true colour got strictly more
    votes than any other verdict), ``frame_accuracy`` (share of scored frames showing the true
    colour) and ``color``. With no scored frame: ``correct`` False and ``label`` None.
    """
    if color not in COLOR_NAMES:
        raise ValueError(f"cube colour {color!r} is not in the palette {COLOR_NAMES}")
    frames = np.asarray(frames)
    scale = 1.0 if recorded_width is None else frames.shape[2] / float(recorded_width)
    indices = reopen_frames(sim_state, cube_pixel, config.min_visible)
    indices = indices[indices < len(frames)]
    labels = [classify_frame(frames[t], cube_pixel[t], scale, config) for t in indices]
    if not labels:
        return dict(frames=indices, labels=[], label=None, correct=False, frame_accuracy=float("nan"), color=color)
    votes = Counter(labels)
    order = (*COLOR_NAMES, NO_CUBE)
    label = max(order, key=lambda name: (votes[name], -order.index(name)))
    others = max((n for name, n in votes.items() if name != color), default=0)
    return dict(
        frames=indices,
        labels=labels,
        label=label,
        correct=votes[color] > others,
        frame_accuracy=votes[color] / len(labels),
        color=color,
    )


def probe_episode(frames: np.ndarray, episode: Mapping, config: ProbeConfig = ProbeConfig()) -> dict:
    """:func:`cube_recall` of ``frames`` (aligned with ``episode``'s frames) using the episode's own
    records (``cube_pixel``, ``sim_state``, ``attrs["cube_color"]``, its frame width)."""
    missing = [k for k in ("cube_pixel", "sim_state") if k not in episode]
    if missing or "cube_color" not in episode["attrs"]:
        raise ValueError(f"episode lacks the memory-benchmark records {missing or ['attrs.cube_color']}; "
                         "collect it with this version of experiments.collect")
    return cube_recall(frames, episode["cube_pixel"], episode["sim_state"], str(episode["attrs"]["cube_color"]),
                       config, recorded_width=np.asarray(episode["frames"]).shape[2])


def summarize(results: Sequence[Mapping]) -> dict:
    """Recall over episodes (only those with scored frames), their count, chance, the rate of
    'no cube' verdicts and the mean frame accuracy."""
    scored = [r for r in results if r["label"] is not None]
    n = len(scored)
    return dict(
        recall=float(np.mean([r["correct"] for r in scored])) if n else float("nan"),
        episodes=n,
        chance=chance_level(),
        no_cube_rate=float(np.mean([r["label"] == NO_CUBE for r in scored])) if n else float("nan"),
        frame_accuracy=float(np.mean([r["frame_accuracy"] for r in scored])) if n else float("nan"),
    )


# Revisit pairs whose in-between change is one of these kinds; "cube_hidden" pairs need memory.
PAIR_KINDS = ("cube_hidden", "cube_return", "drawer", "window", "button")
_CUBE_MOVED, _JOINT_MOVED = 0.05, 0.02  # metres: the revisit matching tolerances of envs.real.rollout


def control_pairs(revisits: np.ndarray, sim_state: np.ndarray, cube_pixel: np.ndarray) -> list[dict]:
    """Each revisit pair (i, j) with what happened between its frames, ``kind`` (first that applies,
    in :data:`PAIR_KINDS` order): ``cube_hidden`` (the cube lay hidden in the closed drawer in
    between and shows at both ends: the memory pairs), ``cube_return`` (the cube moved away and came
    back), ``drawer``, ``window``, ``button`` (that object changed and changed back). ``memory`` is
    True for ``cube_hidden`` only; the others are the in-context control (their state is named by
    the actions or visible in the context frames)."""
    sim_state, cube_pixel = np.asarray(sim_state), np.asarray(cube_pixel)
    names = list(SIM_STATE_FIELDS)
    cube = slice(0, 3)
    drawer, window = names.index("drawer"), names.index("window")
    out = []
    for i, j in np.asarray(revisits, np.int64).reshape(-1, 2):
        between = sim_state[i + 1 : j]
        vis = cube_pixel[:, _VISIBLE]
        hidden = between.size and bool(np.any((between[:, _IN_DRAWER] > 0.5) & (vis[i + 1 : j] <= 0.0)))
        if hidden and vis[i] > 0 and vis[j] > 0:
            kind = "cube_hidden"
        elif between.size and np.linalg.norm(between[:, cube] - sim_state[i, cube], axis=1).max() > _CUBE_MOVED:
            kind = "cube_return"
        elif between.size and np.abs(between[:, drawer] - sim_state[i, drawer]).max() > _JOINT_MOVED:
            kind = "drawer"
        elif between.size and np.abs(between[:, window] - sim_state[i, window]).max() > _JOINT_MOVED:
            kind = "window"
        else:
            kind = "button"
        out.append(dict(first=int(i), revisit=int(j), kind=kind, memory=kind == "cube_hidden"))
    return out
