"""OGBench's pixel scene, adapted for chunked collection.

Imports mujoco: import this only after :func:`envs.real.render.select_backend`.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from ogbench.manipspace.envs.scene_env import SceneEnv

# Object-state vector layout used for revisit detection and logging.
OBJECT_STATE_FIELDS = ("cube_x", "cube_y", "cube_z", "drawer", "window", "left_button", "right_button")


class SceneSim(SceneEnv):
    """``visual-scene-v0`` that renders only when asked.

    OGBench's pixel env renders at every ``step``; rendering is the bottleneck, so here ``step`` and
    ``reset`` return no observation and callers render just the frames they keep. ``fast_render``
    uses a 512 shadow map without multisampling (about 3x faster on OSMesa, mean pixel difference
    under 1/255 at 64x64).
    """

    def __init__(self, width: int = 64, height: int = 64, fast_render: bool = True):
        # OGBench's reset samples two stabilising actions from a fresh, unseeded Box per access;
        # one seeded Box makes episodes repeat exactly.
        self._action_box = gym.spaces.Box(-1.0, 1.0, (5,), np.float32)
        self._fast_render = fast_render
        super().__init__(
            env_type="scene",
            ob_type="pixels",
            width=width,
            height=height,
            visualize_info=False,
            terminate_at_goal=False,
        )

    @property
    def action_space(self) -> gym.spaces.Box:
        return self._action_box

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._action_box.seed(seed)
        return super().reset(seed=seed, options=options)

    def get_pixel_observation(self) -> None:
        return None

    def compile_model_and_data(self) -> None:
        super().compile_model_and_data()
        if self._fast_render:
            self._model.vis.quality.shadowsize = 512
            self._model.vis.quality.offsamples = 0

    def render_frame(self) -> np.ndarray:
        """The ``front_pixels`` camera image, uint8 (H, W, 3)."""
        return np.ascontiguousarray(self.render(), dtype=np.uint8)

    def object_state(self) -> np.ndarray:
        """Cube xyz, drawer and window joint positions, button states (see OBJECT_STATE_FIELDS)."""
        d = self._data
        return np.concatenate(
            [
                d.joint("object_joint_0").qpos[:3],
                d.joint("drawer_slide").qpos[:1],
                d.joint("window_slide").qpos[:1],
                self._cur_button_states.astype(np.float64),
            ]
        )

    def _compute_successes(self):
        """OGBench's checks, except that a goal marked ``cube_in_drawer`` accepts the cube anywhere
        in the drawer (closing the drawer slides the cube a few cm, so no exact spot is stable)."""
        cubes, buttons, drawer, window = super()._compute_successes()
        if self.cur_task_info["goal"].get("cube_in_drawer", False):
            cubes = [self._is_in_drawer(self._data.joint("object_joint_0").qpos[:3])]
        return cubes, buttons, drawer, window

    def goal_conditions(self) -> list[bool]:
        """OGBench's per-object goal checks (cube, buttons, drawer, window) for the current task."""
        cubes, buttons, drawer, window = self._compute_successes()
        return [bool(c) for c in (*cubes, *buttons, drawer, window)]

    def in_drawer(self, pos: np.ndarray) -> bool:
        return bool(self._is_in_drawer(pos))

    def body_point(self, body: str, local: np.ndarray) -> np.ndarray:
        """World position of a point given in ``body``'s frame."""
        b = self._data.body(body)
        return b.xpos + b.xmat.reshape(3, 3) @ local

    def site_pos(self, site: str) -> np.ndarray:
        return self._data.site(site).xpos.copy()

    def close(self) -> None:
        """Free the GL context (OGBench never does; OSMesa then errors at interpreter exit)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        super().close()
