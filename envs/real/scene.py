"""``RealSceneEnv``: OGBench's scene as a chunked, language-skill Gymnasium env.

One ``step`` is one chunk: ``chunk_len * frame_skip`` sim steps (20 Hz control), of which every
``frame_skip``-th is rendered and kept. Action interfaces (``action_type``):

- ``skill``: ``Discrete(len(SKILLS))``; the skill runs through OGBench's markov oracle for the
  whole chunk (holding still once the oracle is done). Issuing the same skill again right after a
  chunk where it was not achieved continues the same attempt (unless the oracle gave up);
  otherwise the skill starts afresh (so pressing a button twice in a row toggles it twice).
- ``text``: the same skills as strings (case-insensitive); unknown text raises ValueError listing
  the skills. ``action_space`` is a ``Text`` space whose samples are not valid skills.
- ``continuous``: a raw 5-D action in [-1, 1] (dx, dy, dz, dyaw, gripper), repeated for every sim
  step of the chunk, or an array (chunk_len * frame_skip, 5) giving one action per sim step.

Per chunk: ``reward`` is OGBench's single-task reward (goal conditions met minus their number, so 0
when the episode's task is solved) and ``info["success"]`` whether the sim shows the skill's effect
(drawer/window within 4 cm of its target, button toggled, cube within 4 cm of its place or inside
the drawer and let go) with the arm lifted clear; for continuous actions it is task success. ``terminated`` is task success, ``truncated`` hits at
``max_chunks``. The observation is the chunk's last frame; ``info["frames"]`` holds all kept frames
and ``info["actions"]`` the mean low-level action behind each of them; ``info["sim_states"]`` and
``info["cube_pixels"]`` the simulator's object state and the cube's image location at each kept frame
(``envs.real.objects.SIM_STATE_FIELDS`` / ``CUBE_PIXEL_FIELDS``; recorded without rendering too).

Memory benchmark options: ``random_cube_color`` paints the cube in a palette colour drawn per episode
(``envs.real.objects.CUBE_COLORS``; otherwise OGBench's red), and the drawer memory tasks insert
``min_distractors``..``max_distractors`` random window/right-button skills (plus up to two that
restore the window) between hiding the cube and reopening the drawer (``envs.real.tasks``).
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from envs.real.objects import CUBE_COLOR_NAMES, DEFAULT_CUBE_COLOR
from envs.real.render import BACKENDS, select_backend
from envs.real.skills import SKILL_SPECS, SKILLS, skill_id
from envs.real.tasks import EpisodeSpec, Task, get_task

ACTION_TYPES = ("skill", "text", "continuous")


@dataclass
class SceneConfig:
    """Construction options of :class:`RealSceneEnv` (its keyword arguments)."""

    task: str = "task1_open"
    action_type: str = "skill"
    width: int = 64
    height: int = 64
    chunk_len: int = 8
    frame_skip: int = 4
    max_chunks: int = 32
    skill_noise: float = 0.0
    render: bool = True  # False: simulate only (frames are zeros / absent); for fast expert runs
    render_backend: str = "auto"
    fast_render: bool = True
    # OGBench's pixel_transparent_arm: True draws the arm at alpha 0.1, a purple cloud the cube shows through (every
    # episode before session 20, and the models up to run 10); False (the default since run 11): the arm opaque, as
    # issue 14's "solid arm" asks
    transparent_arm: bool = False
    random_cube_color: bool = True  # a palette colour per episode (False: OGBench's red cube)
    min_distractors: int = 1  # random distractor skills in the drawer memory tasks
    max_distractors: int = 3

    def __post_init__(self) -> None:
        get_task(self.task)
        if self.action_type not in ACTION_TYPES:
            raise ValueError(f"unknown action_type {self.action_type!r}; choose one of {ACTION_TYPES}")
        if self.render_backend not in BACKENDS:
            raise ValueError(f"unknown render_backend {self.render_backend!r}; choose one of {BACKENDS}")
        if min(self.width, self.height, self.chunk_len, self.frame_skip, self.max_chunks) < 1:
            raise ValueError(f"sizes and counts must be positive: {self}")
        if not 0 <= self.min_distractors <= self.max_distractors:
            raise ValueError(f"need 0 <= min_distractors <= max_distractors: {self}")


class RealSceneEnv(gym.Env):
    """Chunked OGBench scene with skill/text/continuous actions; see the module docstring."""

    metadata = {"render_modes": ["rgb_array"]}
    render_mode = "rgb_array"

    def __init__(self, **kwargs):
        self.config = cfg = SceneConfig(**kwargs)
        self.backend = select_backend(cfg.render_backend, render=cfg.render)
        # Imported here, after select_backend: mujoco fixes its GL backend when first imported.
        from envs.real.oracle import SkillController
        from envs.real.sim import SceneSim

        self._sim = SceneSim(cfg.width, cfg.height, cfg.fast_render, cfg.transparent_arm)
        self._controller = SkillController(self._sim, cfg.skill_noise)
        self.steps_per_chunk = cfg.chunk_len * cfg.frame_skip
        self.observation_space = gym.spaces.Box(0, 255, (cfg.height, cfg.width, 3), np.uint8)
        if cfg.action_type == "skill":
            self.action_space = gym.spaces.Discrete(len(SKILLS))
        elif cfg.action_type == "text":
            self.action_space = gym.spaces.Text(max_length=max(map(len, SKILLS)))
        else:
            self.action_space = gym.spaces.Box(-1.0, 1.0, (5,), np.float32)
        self.task: Task = get_task(cfg.task)
        self.episode_spec: EpisodeSpec | None = None
        self._last_frame = np.zeros(self.observation_space.shape, np.uint8)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode. ``options={"task": name}`` switches the task for this episode.

        The seed (drawn when None) seeds the sim, the oracles' own stream (`SkillController.reset`) and
        the skill noise, so an episode repeats exactly, whatever other scenes of the process do; the
        global ``np.random`` is left alone. Info holds ``seed``, ``task``,
        ``instruction``, ``plan`` (the scripted expert's skill ids), ``object_state``,
        ``goal_image`` (rendered goal scene, or None), ``cube_color`` (its palette name),
        ``distractors`` (random distractor skills in the plan), ``camera`` ((3, 4) projection of world
        points onto the frames) and this frame's ``sim_state`` and ``cube_pixel``.
        """
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(2**31 - 1))
        self.task = get_task((options or {}).get("task", self.config.task))
        rng = np.random.default_rng(seed)
        cfg = self.config
        self.episode_spec = spec = self.task.build(rng, distractors=(cfg.min_distractors, cfg.max_distractors))
        # Own stream: switching colours on or off changes nothing else in the episode.
        color_rng = np.random.default_rng([seed, 2])
        self._sim.set_cube_color(
            CUBE_COLOR_NAMES[color_rng.integers(len(CUBE_COLOR_NAMES))] if cfg.random_cube_color else DEFAULT_CUBE_COLOR
        )
        render_goal = cfg.render and self.task.has_goal_image
        _, self._info = self._sim.reset(
            seed=seed, options=dict(task_info=spec.task_info, render_goal=render_goal)
        )
        self._camera = self._sim.camera_matrix()
        self._controller.reset(rng, seed)
        self._last_skill, self._last_success, self._chunks = None, False, 0
        self._last_frame = self._sim.render_frame() if self.config.render else self._last_frame
        info = dict(
            seed=seed,
            task=self.task.name,
            instruction=spec.instruction,
            plan=spec.plan,
            object_state=self._sim.object_state(),
            goal_image=self._info.get("goal_rendered") if render_goal else None,
            cube_color=self._sim.cube_color,
            distractors=spec.distractors,
            camera=self._camera.copy(),
            sim_state=self._sim.sim_state(),
            cube_pixel=self._sim.cube_pixel(self._camera),
        )
        return self._last_frame, info

    def step(self, action):
        if self.episode_spec is None:
            raise RuntimeError("call reset() before step()")
        sid, per_step = self._parse(action)
        cfg = self.config
        if sid >= 0 and (sid != self._last_skill or self._last_success or self._controller.done):
            retry = sid == self._last_skill and not self._last_success  # the same skill, not achieved last chunk
            self._controller.start(SKILL_SPECS[sid], self._info, retry=retry)
        frames, actions, group, sim_states, cube_pixels = [], [], [], [], []
        for t in range(self.steps_per_chunk):
            a = self._controller.act(self._info) if sid >= 0 else per_step[t]
            self._info = self._sim.step(a)[4]
            group.append(a)
            if len(group) == cfg.frame_skip:
                actions.append(np.mean(group, axis=0))
                group = []
                sim_states.append(self._sim.sim_state())
                cube_pixels.append(self._sim.cube_pixel(self._camera))
                if cfg.render:
                    frames.append(self._sim.render_frame())
        conditions = self._sim.goal_conditions()
        task_success = all(conditions)
        success = self._controller.achieved(self._info) if sid >= 0 else task_success
        self._last_skill, self._last_success = (sid if sid >= 0 else None), success
        self._chunks += 1
        reward = float(sum(conditions) - len(conditions))
        if frames:
            self._last_frame = frames[-1]
        info = dict(
            frames=np.stack(frames) if frames else None,
            actions=np.asarray(actions, np.float32),
            skill_id=sid,
            language=SKILLS[sid] if sid >= 0 else "",
            success=bool(success),
            task_success=task_success,
            object_state=self._sim.object_state(),
            sim_states=np.asarray(sim_states),
            cube_pixels=np.asarray(cube_pixels),
        )
        return self._last_frame, reward, task_success, self._chunks >= cfg.max_chunks, info

    def _parse(self, action) -> tuple[int, np.ndarray | None]:
        """(skill id, None) for skill/text actions; (-1, per-step actions) for continuous ones."""
        kind = self.config.action_type
        if kind == "text":
            return skill_id(action), None
        if kind == "skill":
            if not (np.ndim(action) == 0 and 0 <= int(action) < len(SKILLS)):
                raise ValueError(f"skill action must be an int in [0, {len(SKILLS)}), got {action!r}")
            return int(action), None
        a = np.asarray(action, np.float64)
        if a.shape == (5,):
            a = np.tile(a, (self.steps_per_chunk, 1))
        if a.shape != (self.steps_per_chunk, 5):
            raise ValueError(f"continuous action must have shape (5,) or ({self.steps_per_chunk}, 5), got {a.shape}")
        return -1, np.clip(a, -1.0, 1.0)

    def render(self) -> np.ndarray:
        return self._last_frame

    def close(self) -> None:
        self._sim.close()
