"""The scene's objects as data: the cube colour palette, per-frame state fields, camera projection.

Light module (numpy only, no simulator): the episode schema, the collection and the memory probe
(``evaluation.memory_probe``) share these names.
"""

from __future__ import annotations

import numpy as np

# Cube colours drawn per episode (MuJoCo rgba of the cube geom). Saturated colours whose rendered
# hue survives the scene's bright lighting (OGBench's own orange renders yellow inside the drawer),
# far in hue from each other and from what else the scene shows: no purple/magenta (the gripper);
# blue is much more saturated than the navy floor. "red" is close to OGBench's default cube.
CUBE_COLORS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.05, 0.05, 1.0),
    "orange": (0.9, 0.4, 0.0, 1.0),
    "yellow": (0.76, 0.96, 0.04, 1.0),
    "green": (0.06, 0.74, 0.21, 1.0),
    "blue": (0.1, 0.2, 0.9, 1.0),
}
CUBE_COLOR_NAMES: tuple[str, ...] = tuple(CUBE_COLORS)
DEFAULT_CUBE_COLOR = "ogbench_red"  # OGBench's own cube colour, used when colours are not randomised
OGBENCH_CUBE_RGBA = (0.96, 0.26, 0.33, 1.0)


def cube_rgba(name: str) -> tuple[float, float, float, float]:
    """The rgba of a palette colour or of ``DEFAULT_CUBE_COLOR``; ValueError names the choices."""
    if name == DEFAULT_CUBE_COLOR:
        return OGBENCH_CUBE_RGBA
    if name not in CUBE_COLORS:
        raise ValueError(f"unknown cube colour {name!r}; choose one of {(*CUBE_COLOR_NAMES, DEFAULT_CUBE_COLOR)}")
    return CUBE_COLORS[name]

# Per-frame simulator state recorded in the episodes (``sim_state``, float32 (T, len(SIM_STATE_FIELDS))).
# Cube centre in world metres; drawer and window joint positions (m; drawer -0.16 open, 0 closed; window
# 0 closed, 0.2 open); button states (1 unlocked, 0 locked); whether the cube lies inside the drawer.
SIM_STATE_FIELDS: tuple[str, ...] = (
    "cube_x", "cube_y", "cube_z", "drawer", "window", "left_button", "right_button", "cube_in_drawer",
)
# Per-frame cube location in the image (``cube_pixel``, float32 (T, len(CUBE_PIXEL_FIELDS))):
# - ``x``, ``y``: the projected cube centre as continuous image coordinates (x = column, y = row;
#   pixel (r, c) covers [c, c+1) x [r, r+1), so its centre is (c + 0.5, r + 0.5));
# - ``half_size``: half the larger side of the bounding box of the cube's 8 projected corners (pixels);
# - ``visible``: the fraction of 27 points inside the cube that the camera sees through the cube's own
#   surface, unoccluded by the scene (the see-through arm ignored): 0 when hidden in the closed drawer,
#   about 1/3 when only the top face shows (inside the open drawer), up to 1 on the table;
# - ``visible_x``, ``visible_y``: the mean image position of the visible points (where the visible
#   part of the cube is drawn; the centre's (x, y) when none is visible).
CUBE_PIXEL_FIELDS: tuple[str, ...] = ("x", "y", "half_size", "visible", "visible_x", "visible_y")
CUBE_HALF_EXTENT = 0.02  # metres (OGBench's cube is 4 cm)


def project(camera: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Image coordinates (x, y) of world points (..., 3) under a (3, 4) ``camera`` matrix (see
    ``CUBE_PIXEL_FIELDS`` for the pixel convention)."""
    points = np.asarray(points, np.float64)
    homo = np.concatenate([points, np.ones((*points.shape[:-1], 1))], axis=-1) @ np.asarray(camera, np.float64).T
    return homo[..., :2] / homo[..., 2:3]


def camera_matrix(pos: np.ndarray, xmat: np.ndarray, fovy_deg: float, width: int, height: int) -> np.ndarray:
    """(3, 4) projection of a MuJoCo camera (world position ``pos``, orientation ``xmat`` whose
    columns are the camera's x right, y up, z backward axes; vertical field of view ``fovy_deg``)
    onto a ``width`` x ``height`` image with the pixel convention above (row 0 at the top)."""
    R = np.asarray(xmat, np.float64).reshape(3, 3)
    f = 0.5 * height / np.tan(np.deg2rad(fovy_deg) / 2)
    # camera coordinates -> image: x right, y down, depth along -z
    K = np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])
    flip = np.diag([1.0, -1.0, -1.0])
    Rt = np.concatenate([R.T, -(R.T @ np.asarray(pos, np.float64))[:, None]], axis=1)
    return K @ flip @ Rt


MIN_VISIBLE = 0.2  # share of the cube in view for a frame to show it (the memory probe's default)
_CUBE_IN_DRAWER = SIM_STATE_FIELDS.index("cube_in_drawer")
_CUBE_VISIBLE = CUBE_PIXEL_FIELDS.index("visible")


def hidden_frames(sim_state: np.ndarray, cube_pixel: np.ndarray) -> np.ndarray:
    """Indices of the frames in which the cube lies hidden in the closed drawer (in the drawer, visible fraction 0)."""
    in_drawer = np.asarray(sim_state)[:, _CUBE_IN_DRAWER] > 0.5
    return np.flatnonzero(in_drawer & (np.asarray(cube_pixel)[:, _CUBE_VISIBLE] <= 0.0))


def reopen_frames(sim_state: np.ndarray, cube_pixel: np.ndarray, min_visible: float = MIN_VISIBLE) -> np.ndarray:
    """Indices of the frames where the real cube shows again in the reopened drawer: after the last
    frame in which it lay hidden in the drawer (`hidden_frames`), the frames where it is in the drawer
    and at least ``min_visible`` visible. Empty when it was never hidden."""
    sim_state, cube_pixel = np.asarray(sim_state), np.asarray(cube_pixel)
    hidden = hidden_frames(sim_state, cube_pixel)
    if len(hidden) == 0:
        return np.zeros(0, np.int64)
    in_drawer = sim_state[:, _CUBE_IN_DRAWER] > 0.5
    visible = cube_pixel[:, _CUBE_VISIBLE]
    t = np.arange(len(visible))
    return np.flatnonzero((t > hidden[-1]) & in_drawer & (visible >= min_visible)).astype(np.int64)
