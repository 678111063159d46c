"""A synthetic panning world for tests and quick demos: the action sets the camera motion.

The camera looks at a window of a wide random canvas. "pan right" reveals content the model has never
seen. On a wrapping canvas (`loop_episode`) the camera comes back round: the second lap repeats the
first lap's views and transitions, which only a model with episodic memory can reproduce exactly.
Episodes follow the shared episode schema (`envs.episodes`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

SYNTHETIC_SKILLS: tuple[str, ...] = ("pan left", "pan right", "stay")
_VELOCITY = {"pan left": -1.0, "pan right": 1.0, "stay": 0.0}


def random_canvas(rng: np.random.Generator, size: int, width: int, num_shapes: int = 12) -> np.ndarray:
    """A dark canvas with coloured rectangles and discs, uint8 (size, width, 3)."""
    canvas = np.full((size, width, 3), 20, np.uint8)
    yy, xx = np.mgrid[:size, :width]
    for _ in range(num_shapes):
        color = rng.integers(60, 256, 3)
        cy, cx = rng.integers(0, size), rng.integers(0, width)
        r = rng.integers(size // 8, size // 3)
        if rng.random() < 0.5:
            canvas[max(cy - r, 0) : cy + r, max(cx - r, 0) : cx + r] = color
        else:
            canvas[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = color
    return canvas


def panning_episode(
    seed: int,
    skills: list[str],
    frame_size: int = 32,
    chunk_len: int = 2,
    speed: int = 4,
    canvas_width: int | None = None,
    wrap: bool = False,
) -> dict[str, Any]:
    """Roll the panning world for a sequence of skills; records revisits (frames with the same view).

    With `wrap`, the canvas is a cylinder of `canvas_width` pixels and the camera never stops at an edge.
    """
    for s in skills:
        if s not in _VELOCITY:
            raise ValueError(f"unknown synthetic skill {s!r}; expected one of {SYNTHETIC_SKILLS}")
    rng = np.random.default_rng(seed)
    steps = len(skills) * chunk_len
    width = canvas_width or frame_size + 2 * speed * steps
    canvas = random_canvas(rng, frame_size, width)
    x = 0 if wrap else (width - frame_size) // 2
    offsets, actions = [x], []
    for s in skills:
        for _ in range(chunk_len):
            x = x + int(_VELOCITY[s] * speed)
            x = x % width if wrap else int(np.clip(x, 0, width - frame_size))
            offsets.append(x)
            actions.append([_VELOCITY[s], 0.0, 0.0, 0.0, 0.0])
    frames = np.stack([np.take(canvas, np.arange(o, o + frame_size), axis=1, mode="wrap") for o in offsets])
    first_seen: dict[int, int] = {}
    revisits = []
    for j, o in enumerate(offsets):
        if o in first_seen and first_seen[o] < j - 1:
            revisits.append((first_seen[o], j))
        first_seen.setdefault(o, j)
    return {
        "frames": frames,
        "actions": np.asarray(actions, np.float32).reshape(steps, 5),
        "skill_ids": np.asarray([SYNTHETIC_SKILLS.index(s) for s in skills], np.int64),
        "language": list(skills),
        "reward": np.zeros(len(skills), np.float32),
        "success": np.zeros(len(skills), bool),
        "revisits": np.asarray(revisits, np.int64).reshape(-1, 2),
        "attrs": {"seed": seed, "task": "panning", "domain": "synthetic", "instruction": ", then ".join(skills),
                  "chunk_len": chunk_len, "frame_skip": 1},
    }


def random_episodes(num: int, num_chunks: int, seed: int = 0, **kwargs: Any) -> list[dict[str, Any]]:
    """Episodes of random skills, for training."""
    rng = np.random.default_rng(seed)
    return [
        panning_episode(seed * 100_003 + i, list(rng.choice(SYNTHETIC_SKILLS, num_chunks)), **kwargs)
        for i in range(num)
    ]


def go_and_return_episode(seed: int, num_out: int, **kwargs: Any) -> dict[str, Any]:
    """Pan right `num_out` chunks, then back: the second half revisits the first."""
    return panning_episode(seed, ["pan right"] * num_out + ["pan left"] * num_out, **kwargs)


def loop_episode(seed: int, lap_chunks: int, laps: int = 2, frame_size: int = 32, chunk_len: int = 2,
                 speed: int = 8) -> dict[str, Any]:
    """Pan right round a wrapping canvas `laps` times; one lap is `lap_chunks` chunks."""
    return panning_episode(seed, ["pan right"] * (lap_chunks * laps), frame_size=frame_size, chunk_len=chunk_len,
                           speed=speed, canvas_width=lap_chunks * chunk_len * speed, wrap=True)
