"""OGBench's pixel scene, adapted for chunked collection.

Imports mujoco: import this only after :func:`envs.real.render.select_backend`.
"""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
from ogbench.manipspace.envs.scene_env import SceneEnv

from envs.real.objects import CUBE_HALF_EXTENT, DEFAULT_CUBE_COLOR, camera_matrix, cube_rgba, project

# Object-state vector layout used for revisit detection and logging.
OBJECT_STATE_FIELDS = ("cube_x", "cube_y", "cube_z", "drawer", "window", "left_button", "right_button")
CAMERA = "front_pixels"
# Points inside the cube (a 3x3x3 grid, in its body frame) that visibility rays aim at.
_GRID = np.linspace(-0.75, 0.75, 3) * CUBE_HALF_EXTENT
_CUBE_SAMPLES = np.stack(np.meshgrid(_GRID, _GRID, _GRID, indexing="ij"), -1).reshape(-1, 3)
_CUBE_CORNERS = np.stack(
    np.meshgrid(*[[-CUBE_HALF_EXTENT, CUBE_HALF_EXTENT]] * 3, indexing="ij"), -1
).reshape(-1, 3)


class SceneSim(SceneEnv):
    """``visual-scene-v0`` that renders only when asked.

    OGBench's pixel env renders at every ``step``; rendering is the bottleneck, so here ``step`` and
    ``reset`` return no observation and callers render just the frames they keep. ``fast_render``
    uses a 512 shadow map without multisampling (about 3x faster on OSMesa, mean pixel difference
    under 1/255 at 64x64). ``transparent_arm`` is OGBench's ``pixel_transparent_arm``: the arm's materials
    at alpha 0.1 (the gripper pads 0.5), so the objects under it stay visible; False renders it opaque.
    """

    def __init__(self, width: int = 64, height: int = 64, fast_render: bool = True, transparent_arm: bool = False):
        # OGBench's reset samples two stabilising actions from a fresh, unseeded Box per access;
        # one seeded Box makes episodes repeat exactly.
        self._action_box = gym.spaces.Box(-1.0, 1.0, (5,), np.float32)
        self._fast_render = fast_render
        self._width, self._height = width, height
        self.cube_color = DEFAULT_CUBE_COLOR
        super().__init__(
            env_type="scene",
            ob_type="pixels",
            width=width,
            height=height,
            visualize_info=False,
            terminate_at_goal=False,
            pixel_transparent_arm=transparent_arm,
        )

    @property
    def action_space(self) -> gym.spaces.Box:
        return self._action_box

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._action_box.seed(seed)
        return super().reset(seed=seed, options=options)

    def initialize_arm(self) -> None:
        """OGBench's random arm start (at every reset, for the goal image and for the episode), its last wrist joint
        then unwound (`unwind_wrist`), before the reset's settling steps and its first observation."""
        super().initialize_arm()
        self.unwind_wrist()

    def unwind_wrist(self) -> None:
        """Turn the last wrist joint by a whole turn into [-pi, pi] where it lies outside: the same pose, the same
        frame, room to turn both ways.

        OGBench's `initialize_arm` solves the arm's joints for a random yaw from its home pose, which leaves that joint
        anywhere in its +-2 pi range. Past -pi (task-4 scene seeds 4001, 4006, 8013, 8025) turning the gripper to the
        drawer handle's yaw runs the joint into its -2 pi limit, the turn stalls 0.9 rad short and every pull slips off
        the handle: "open the drawer" failed to the budget, for the scripted expert as for every policy. The PD targets
        are solved again from the joints at every step (`set_control`), so the jump is never tracked back."""
        joint = self._model.joint("ur5e/wrist_3_joint")
        adr = joint.qposadr[0]
        angle = float(self._data.qpos[adr])
        if abs(angle) > np.pi:
            self._data.qpos[adr] = angle - 2 * np.pi * np.round(angle / (2 * np.pi))
            mujoco.mj_forward(self._model, self._data)

    def set_cube_color(self, name: str) -> None:
        """Colour the cube with palette colour ``name`` (``envs.real.objects.cube_rgba``) from the
        next reset on (OGBench re-applies ``_cube_colors`` at reset and after every step)."""
        self._cube_colors = np.array([cube_rgba(name)], np.float64)
        self.cube_color = name

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

    def post_compilation_objects(self) -> None:
        super().post_compilation_objects()
        m = self._model
        cam = m.camera(CAMERA)
        if cam.mode[0] != mujoco.mjtCamLight.mjCAMLIGHT_FIXED or cam.bodyid[0] != 0:
            raise RuntimeError(f"camera {CAMERA!r} is expected to be fixed to the world")
        self._camera_id = cam.id
        self._cube_geom_id = self._cube_geom_ids_list[0][0]
        self._target_body_id = m.body("object_target_0").id
        self._ray_groups = np.array([0, 1, 0, 0, 0, 0], np.uint8)  # scene objects; not the see-through arm

    def camera_matrix(self) -> np.ndarray:
        """(3, 4) projection of world points onto the rendered frames (``envs.real.objects``)."""
        d, i = self._data, self._camera_id
        return camera_matrix(d.cam_xpos[i], d.cam_xmat[i], float(self._model.cam_fovy[i]), self._width, self._height)

    def sim_state(self) -> np.ndarray:
        """``objects.SIM_STATE_FIELDS``: object state plus whether the cube lies in the drawer."""
        state = self.object_state()
        return np.append(state, float(self._is_in_drawer(state[:3])))

    def cube_pixel(self, camera: np.ndarray | None = None) -> np.ndarray:
        """``objects.CUBE_PIXEL_FIELDS``: projected cube centre (x, y), half-size in pixels, the
        fraction of rays from the camera to 27 points inside the cube whose first hit is the cube
        (scene geoms only: the see-through arm and invisible goal marker are ignored), and the mean
        image position of the points so seen."""
        camera = self.camera_matrix() if camera is None else camera
        body = self._data.body("object_0")
        centre, rot = body.xpos.copy(), body.xmat.reshape(3, 3)
        corners = project(camera, centre + _CUBE_CORNERS @ rot.T)
        half = 0.5 * float((corners.max(0) - corners.min(0)).max())
        eye = self._data.cam_xpos[self._camera_id]
        geomid = np.zeros(1, np.int32)
        points = centre + _CUBE_SAMPLES @ rot.T
        seen = np.zeros(len(points), bool)
        for k, point in enumerate(points):
            mujoco.mj_ray(self._model, self._data, eye, point - eye, self._ray_groups, 1, self._target_body_id, geomid)
            seen[k] = geomid[0] == self._cube_geom_id
        x, y = project(camera, centre)
        vx, vy = project(camera, points[seen]).mean(0) if seen.any() else (x, y)
        return np.array([x, y, half, seen.mean(), vx, vy])

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
