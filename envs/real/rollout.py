"""Episodes from ``RealSceneEnv``: the scripted expert, random skill play, revisit detection."""

from __future__ import annotations

import numpy as np

from envs.real.objects import CUBE_PIXEL_FIELDS, SIM_STATE_FIELDS
from envs.real.scene import RealSceneEnv
from envs.real.skills import SKILLS

POLICIES = ("expert", "random")
# Two scenes match when the cube is within 5 cm (closing and reopening the drawer slides a cube in
# it by ~4.5 cm), drawer and window within 2 cm, and the buttons are equal.
_MATCH_TOL = np.array([0.05, 0.02, 0.02, 0.5])


class ScriptedExpert:
    """Issues a task's skill plan, repeating each skill (up to ``max_tries`` chunks) until the sim
    reports it achieved, then moving on either way."""

    def __init__(self, plan: tuple[int, ...], max_tries: int = 3):
        self._plan, self._max_tries = plan, max_tries
        self._index, self._tries = 0, 0

    def act(self, last_success: bool | None) -> int | None:
        """Skill for the next chunk given the last chunk's success (None before the first); None
        once the plan is done."""
        if last_success is not None and (last_success or self._tries >= self._max_tries):
            self._index, self._tries = self._index + 1, 0
        if self._index >= len(self._plan):
            return None
        self._tries += 1
        return self._plan[self._index]


def _scenes_match(a: np.ndarray, b: np.ndarray) -> bool:
    diff = np.abs(a - b)
    parts = np.array([np.linalg.norm(diff[:3]), diff[3], diff[4], diff[5:].max()])
    return bool(np.all(parts <= _MATCH_TOL))


def find_revisits(states: np.ndarray, frame_index: np.ndarray) -> np.ndarray:
    """(i, j) frame pairs where frame j shows the same object scene as earlier frame i after the
    scene was different in between (e.g. a drawer closed over the cube, then reopened).

    ``states``: object states (cube xyz, drawer, window, buttons) at frames ``frame_index``. For
    each j only the latest such i is kept. The arm may differ between the two frames.
    """
    pairs = []
    for j in range(len(states)):
        for i in range(j - 2, -1, -1):
            changed = any(not _scenes_match(states[i], states[m]) for m in range(i + 1, j))
            if changed and _scenes_match(states[i], states[j]):
                pairs.append((int(frame_index[i]), int(frame_index[j])))
                break
    return np.asarray(pairs, np.int64).reshape(-1, 2)


def run_episode(
    env: RealSceneEnv,
    seed: int,
    task: str | None = None,
    policy: str = "expert",
    num_chunks: int = 8,
    max_tries: int = 3,
    deviate: float = 0.0,
) -> dict:
    """Roll out one episode in the episode-dict format of ``envs.episodes``.

    ``expert`` follows the task's plan (at most ``env.config.max_chunks`` chunks); ``random``
    issues ``num_chunks`` uniformly random skills (for coverage; usually with task ``play``).
    ``deviate``: with ``expert``, the chance per chunk of a uniformly random skill instead of the plan's (the plan
    goes on after it): the states on the way to a task's goal with the skills a planner tries there, e.g. "pick up
    the cube and put it in the drawer" against the shut drawer, which random play from random scenes rarely shows.
    The episode carries the per-frame ``sim_state`` and ``cube_pixel`` records and the ``camera``
    matrix; attrs add ``cube_color`` (palette name) and ``distractors`` (random distractor skills).
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose one of {POLICIES}")
    if not 0.0 <= deviate <= 1.0:
        raise ValueError(f"deviate must be in [0, 1], got {deviate}")
    if env.config.action_type != "skill":
        raise ValueError("run_episode needs an env with action_type='skill'")
    frame, info = env.reset(seed=seed, options={"task": task} if task else None)
    cfg = env.config
    frames, actions, skills, rewards, successes = [frame], [], [], [], []
    states = [info["object_state"]]
    sim_states, cube_pixels = [info["sim_state"]], [info["cube_pixel"]]
    expert = ScriptedExpert(env.episode_spec.plan, max_tries)
    rng = np.random.default_rng([seed, 1])
    last: bool | None = None
    task_success = False
    for _ in range(num_chunks if policy == "random" else cfg.max_chunks):
        off_plan = policy == "random" or (deviate > 0 and rng.random() < deviate)
        sid = int(rng.integers(len(SKILLS))) if off_plan else expert.act(last)  # the expert sees its own skills only
        if sid is None:
            break
        _, reward, task_success, _, step_info = env.step(sid)
        if not off_plan:
            last = step_info["success"]
        if cfg.render:
            frames.extend(step_info["frames"])
        actions.append(step_info["actions"])
        skills.append(sid)
        rewards.append(reward)
        successes.append(step_info["success"])
        states.append(step_info["object_state"])
        sim_states.extend(step_info["sim_states"])
        cube_pixels.extend(step_info["cube_pixels"])
    L = cfg.chunk_len
    if not cfg.render:  # black placeholder frames keep the episode's shapes valid
        frames = np.broadcast_to(frame, (1 + L * len(skills), *frame.shape))
    episode = dict(
        frames=np.asarray(frames, np.uint8),
        actions=np.concatenate(actions).astype(np.float32),
        skill_ids=np.asarray(skills, np.int64),
        language=[SKILLS[s] for s in skills],
        reward=np.asarray(rewards, np.float32),
        success=np.asarray(successes, bool),
        revisits=find_revisits(np.stack(states), np.arange(len(states)) * L),
        sim_state=np.asarray(sim_states, np.float32),
        cube_pixel=np.asarray(cube_pixels, np.float32),
        camera=np.asarray(info["camera"], np.float64),
        attrs=dict(
            seed=int(seed),
            task=env.task.name,
            domain="scene",
            instruction=env.episode_spec.instruction,
            chunk_len=L,
            frame_skip=cfg.frame_skip,
            policy=policy,
            deviate=float(deviate),
            skill_noise=float(cfg.skill_noise),
            task_success=bool(task_success),
            cube_color=info["cube_color"],
            distractors=int(info["distractors"]),
            sim_state_fields=",".join(SIM_STATE_FIELDS),
            cube_pixel_fields=",".join(CUBE_PIXEL_FIELDS),
        ),
    )
    if info["goal_image"] is not None:
        episode["goal"] = np.asarray(info["goal_image"], np.uint8)
    return episode
