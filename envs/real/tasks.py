"""Long-horizon scene tasks: OGBench scene tasks 1-5, memory tasks, and random play.

A task builds, per episode, an OGBench ``task_info`` (initial and goal scene), an episode-level
instruction and the scripted expert's plan (a sequence of skill ids). Light module: no simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from envs.real.skills import (
    CUBE_SLOTS,
    DRAWER_CENTER,
    DRAWER_CLOSED,
    DRAWER_OPEN,
    WINDOW_CLOSED,
    WINDOW_OPEN,
    cube_slot_skill,
    skill_id,
    slot_phrase,
)


@dataclass(frozen=True)
class EpisodeSpec:
    """What one episode of a task starts from, aims at, and how the expert solves it."""

    task_info: dict
    instruction: str
    plan: tuple[int, ...]


@dataclass(frozen=True)
class Task:
    name: str
    build: Callable[[np.random.Generator], EpisodeSpec]
    memory: bool = False
    has_goal_image: bool = True


def _scene(block, buttons, drawer, window) -> dict:
    return dict(
        block_xyzs=np.array([block], dtype=np.float64),
        button_states=np.array(buttons, dtype=np.int64),
        drawer_pos=float(drawer),
        window_pos=float(window),
    )


def _plan(*texts: str) -> tuple[int, ...]:
    return tuple(skill_id(t) for t in texts)


def _fixed(name: str, init: dict, goal: dict, instruction: str, plan: tuple[int, ...], memory=False) -> Task:
    spec = EpisodeSpec(dict(task_name=name, init=init, goal=goal), instruction, plan)
    return Task(name, lambda rng: spec, memory)


# OGBench scene evaluation tasks 1-5 (same initial and goal scenes as ogbench 1.2's SceneEnv).
_TASK4_GOAL_BLOCK = (0.33, -0.356, 0.065986)  # the cube inside the closed drawer
_OGBENCH = (
    _fixed(
        "task1_open",
        _scene((0.35, 0.05, 0.02), (1, 1), DRAWER_CLOSED, WINDOW_CLOSED),
        _scene((0.35, 0.05, 0.02), (1, 1), DRAWER_OPEN, WINDOW_OPEN),
        "open the drawer and the window",
        _plan("open the drawer", "open the window"),
    ),
    _fixed(
        "task2_unlock_and_lock",
        _scene((0.35, -0.05, 0.02), (0, 0), DRAWER_OPEN, WINDOW_OPEN),
        _scene((0.35, -0.05, 0.02), (0, 0), DRAWER_CLOSED, WINDOW_CLOSED),
        "unlock the drawer and the window, close both, and lock them again",
        _plan(
            "press the left button", "close the drawer", "press the left button",
            "press the right button", "close the window", "press the right button",
        ),
    ),
    _fixed(
        "task3_rearrange_medium",
        _scene((0.40, -0.05, 0.02), (1, 0), DRAWER_CLOSED, WINDOW_OPEN),
        _scene(CUBE_SLOTS["right"], (1, 1), DRAWER_OPEN, WINDOW_CLOSED),
        "put the cube on the right of the table, unlock and close the window, and open the drawer",
        _plan(
            "put the cube on the right of the table", "press the right button",
            "close the window", "open the drawer",
        ),
    ),
    _fixed(
        "task4_put_in_drawer",
        _scene((0.35, 0.05, 0.02), (0, 0), DRAWER_CLOSED, WINDOW_CLOSED),
        _scene(_TASK4_GOAL_BLOCK, (1, 0), DRAWER_CLOSED, WINDOW_CLOSED),
        "unlock the drawer, put the cube in it and close it",
        _plan(
            "press the left button", "open the drawer",
            "pick up the cube and put it in the drawer", "close the drawer",
        ),
    ),
    _fixed(
        "task5_rearrange_hard",
        _scene((0.35, 0.15, 0.02), (0, 0), DRAWER_CLOSED, WINDOW_CLOSED),
        _scene(_TASK4_GOAL_BLOCK, (0, 0), DRAWER_CLOSED, WINDOW_OPEN),
        "hide the cube in the locked drawer and open the locked window, locking both again",
        _plan(
            "press the left button", "open the drawer", "pick up the cube and put it in the drawer",
            "close the drawer", "press the left button", "press the right button",
            "open the window", "press the right button",
        ),
    ),
)

# Memory tasks: the cube leaves view (closed drawer) or its start place must be remembered while
# other chunks happen; frames that see the scene again are recorded as revisits.
_MEMORY_INIT = _scene(CUBE_SLOTS["middle"], (1, 1), DRAWER_CLOSED, WINDOW_CLOSED)
_MEMORY_GOAL = dict(_scene(DRAWER_CENTER, (1, 1), DRAWER_OPEN, WINDOW_CLOSED), cube_in_drawer=True)
_MEMORY = (
    _fixed(
        "memory_drawer",
        _MEMORY_INIT,
        _MEMORY_GOAL,
        "hide the cube in the drawer and close it, open and close the window, "
        "lock and unlock the window, then reopen the drawer",
        _plan(
            "open the drawer", "pick up the cube and put it in the drawer", "close the drawer",
            "open the window", "close the window", "press the right button",
            "press the right button", "open the drawer",
        ),
        memory=True,
    ),
    _fixed(
        "memory_drawer_locked",
        _MEMORY_INIT,
        _MEMORY_GOAL,
        "hide the cube in the drawer, close and lock it, open and close the window, "
        "then unlock and reopen the drawer",
        _plan(
            "open the drawer", "pick up the cube and put it in the drawer", "close the drawer",
            "press the left button", "open the window", "close the window",
            "press the left button", "open the drawer",
        ),
        memory=True,
    ),
)


def _cube_return(rng: np.random.Generator) -> EpisodeSpec:
    """The cube starts on a random slot, moves away, and must come back after distractions."""
    start, away = rng.permutation(list(CUBE_SLOTS))[:2]
    init = _scene(CUBE_SLOTS[start], (1, 1), DRAWER_CLOSED, WINDOW_CLOSED)
    plan = (cube_slot_skill(away),) + _plan(
        "open the drawer", "close the drawer", "open the window", "close the window"
    ) + (cube_slot_skill(start),)
    instruction = (
        f"put the cube {slot_phrase(away)}, open and close the drawer and the window, "
        "then put the cube back where it was"
    )
    return EpisodeSpec(dict(task_name="memory_cube_return", init=init, goal=init), instruction, plan)


# Object and joint ranges OGBench samples its own play data from.
_BLOCK_LOW, _BLOCK_HIGH = np.array([0.3, -0.07]), np.array([0.45, 0.18])


def _random_scene(rng: np.random.Generator) -> dict:
    return _scene(
        (*rng.uniform(_BLOCK_LOW, _BLOCK_HIGH), 0.02),
        rng.integers(0, 2, size=2),
        rng.uniform(DRAWER_OPEN, DRAWER_CLOSED),
        rng.uniform(WINDOW_CLOSED, WINDOW_OPEN),
    )


def _play(rng: np.random.Generator) -> EpisodeSpec:
    """Random start scene; the rollout picks random skills. The goal (another random scene) only
    gives the reward something to measure."""
    info = dict(task_name="play", init=_random_scene(rng), goal=_random_scene(rng))
    return EpisodeSpec(info, "play with the drawer, the window, the buttons and the cube", ())


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        *_OGBENCH,
        *_MEMORY,
        Task("memory_cube_return", _cube_return, memory=True),
        Task("play", _play, has_goal_image=False),
    )
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)
EXPERT_TASKS: tuple[str, ...] = tuple(n for n in TASKS if n != "play")


def get_task(name: str) -> Task:
    """Task by name; ValueError lists valid names."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASK_NAMES)}")
    return TASKS[name]

