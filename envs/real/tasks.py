"""Long-horizon scene tasks: OGBench scene tasks 1-5, memory tasks, and random play.

A task builds, per episode, an OGBench ``task_info`` (initial and goal scene), an episode-level
instruction and the scripted expert's plan (a sequence of skill ids). Light module: no simulator.

``Task.build(rng, distractors=(lo, hi))``: the drawer memory tasks insert between ``lo`` and ``hi``
(inclusive) random distractor skills between hiding the cube and reopening the drawer: window and
right-button skills, which touch neither the drawer nor the cube, followed by up to two more that
close and unlock the window again (so the reopened drawer revisits the scene it hid);
``EpisodeSpec.distractors`` counts them all. Other tasks ignore ``distractors``; the default (0, 0)
gives the fixed plans.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Callable

import numpy as np

from envs.real.objects import SIM_STATE_FIELDS
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
    distractors: int = 0  # random distractor skills in the plan


@dataclass(frozen=True)
class Task:
    name: str
    builder: Callable[..., EpisodeSpec]
    memory: bool = False
    has_goal_image: bool = True
    takes_distractors: bool = False

    def build(self, rng: np.random.Generator, distractors: tuple[int, int] = (0, 0)) -> EpisodeSpec:
        """This episode's spec; ``distractors`` = (min, max) random distractor skills (memory
        drawer tasks only)."""
        lo, hi = (int(v) for v in distractors)
        if not 0 <= lo <= hi:
            raise ValueError(f"distractors must be (min, max) with 0 <= min <= max, got {distractors}")
        return self.builder(rng, (lo, hi)) if self.takes_distractors else self.builder(rng)


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


def _phrase(texts: list[str]) -> str:
    return texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " and " + texts[-1]


def _distractors(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` random skills that touch neither the drawer nor the cube, starting with the window
    closed and unlocked: open or close the window while it is unlocked, press the right button
    (toggles the window's lock), or "close the window" while it is closed (locked or not: the arm
    goes to the handle and away, nothing moves); then the skills that restore the window closed and
    unlocked, so the reopened drawer shows the scene it hid (a revisit of it)."""
    texts, window_open, unlocked = [], False, True
    for _ in range(count):
        options = ["press the right button"]
        if unlocked or not window_open:
            options.append("close the window" if window_open or not unlocked else "open the window")
        if unlocked and not window_open:
            options.append("close the window")  # the arm-only move
        text = options[rng.integers(len(options))]
        if text == "press the right button":
            unlocked = not unlocked
        elif unlocked:
            window_open = text == "open the window"
        texts.append(text)
    if window_open and not unlocked:
        texts.append("press the right button")
        unlocked = True
    if window_open:
        texts.append("close the window")
    if not unlocked:
        texts.append("press the right button")
    return texts


def _memory_drawer(name: str, before: tuple[str, ...], middle: tuple[str, ...], after: tuple[str, ...],
                   instruction: tuple[str, str]) -> Task:
    """A drawer memory task: ``before`` hides the cube, ``middle`` (fixed) and random distractors
    happen, ``after`` reopens the drawer. ``instruction`` = (text up to the middle, text of ``after``)."""

    def build(rng: np.random.Generator, distractors: tuple[int, int]) -> EpisodeSpec:
        count = int(rng.integers(distractors[0], distractors[1] + 1)) if distractors[1] > 0 else 0
        texts = _distractors(rng, count)  # the fixed middle leaves the window closed and unlocked
        head, tail = instruction
        text = f"{head}, then {_phrase(texts)}, then {tail}" if texts else f"{head}, then {tail}"
        plan = _plan(*before, *middle, *texts, *after)
        return EpisodeSpec(dict(task_name=name, init=_MEMORY_INIT, goal=_MEMORY_GOAL), text, plan, len(texts))

    return Task(name, build, memory=True, takes_distractors=True)


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
_HIDE = ("open the drawer", "pick up the cube and put it in the drawer", "close the drawer")
_MEMORY = (
    _memory_drawer(
        "memory_drawer",
        _HIDE,
        ("open the window", "close the window", "press the right button", "press the right button"),
        ("open the drawer",),
        ("hide the cube in the drawer and close it, open and close the window, lock and unlock the window",
         "reopen the drawer"),
    ),
    _memory_drawer(
        "memory_drawer_locked",
        _HIDE,
        ("press the left button", "open the window", "close the window"),
        ("press the left button", "open the drawer"),
        ("hide the cube in the drawer, close and lock it, open and close the window",
         "unlock and reopen the drawer"),
    ),
)


RETURN_TASK = "memory_cube_return"  # the one task whose goal is the scene its episode started in


@cache
def _return_scene(slot: str) -> dict:
    """`memory_cube_return`'s start scene and goal: the cube on table slot ``slot``, all else shut and unlocked."""
    return _scene(CUBE_SLOTS[slot], (1, 1), DRAWER_CLOSED, WINDOW_CLOSED)


_RETURN_WORDS = ("put the cube ", ", open and close the drawer and the window, then put the cube back where it was")


def _cube_return(rng: np.random.Generator) -> EpisodeSpec:
    """The cube starts on a random slot, moves to another the instruction names, and must come back after
    distractions."""
    start, away = rng.permutation(list(CUBE_SLOTS))[:2]
    init = _return_scene(str(start))
    plan = (cube_slot_skill(away),) + _plan(
        "open the drawer", "close the drawer", "open the window", "close the window"
    ) + (cube_slot_skill(start),)
    instruction = slot_phrase(str(away)).join(_RETURN_WORDS)
    return EpisodeSpec(dict(task_name=RETURN_TASK, init=init, goal=init), instruction, plan)


def away_slot(instruction: str) -> str:
    """The table slot (`CUBE_SLOTS`) a `memory_cube_return` instruction sends the cube to before it comes back:
    its memory part is the cube put there (`agents.real_scene.MILESTONES`), not merely moved."""
    head, tail = _RETURN_WORDS
    for slot in _SLOTS:
        if str(instruction) == slot_phrase(slot).join(_RETURN_WORDS):
            return slot
    raise ValueError(f"not a {RETURN_TASK} instruction ({head!r}<slot>{tail!r}, the slot one of "
                     f"{', '.join(slot_phrase(s) for s in _SLOTS)}): {instruction!r}")


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
        Task(RETURN_TASK, _cube_return, memory=True),
        Task("play", _play, has_goal_image=False),
    )
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)
EXPERT_TASKS: tuple[str, ...] = tuple(n for n in TASKS if n != "play")


# Tasks whose goal is one fixed scene that ends their episodes: any recorded frame can be judged against their goals,
# so the reward heads can learn them from every episode (`goal_conditions`). OGBench's tasks 1-5 have one instruction
# each; the drawer memory tasks' goal is the cube in the open drawer with the window shut, and their instructions name
# the episode's random distractors (`relabel_instruction`).
RELABEL_TASKS: tuple[str, ...] = tuple(t.name for t in (*_OGBENCH, *_MEMORY))
# Tasks whose labels (goal checks, skills to go) an episode's recorded states give: the fixed-goal ones, and
# `memory_cube_return`, whose goal is its episode's start scene (`goal_scene`): only its own episodes are labelled
LABELLED_TASKS: tuple[str, ...] = (*RELABEL_TASKS, RETURN_TASK)
GOAL_TOLERANCE = 0.04  # OGBench's: cube within 4 cm of its goal, drawer and window within 4 cm of theirs
_FIELD = {name: i for i, name in enumerate(SIM_STATE_FIELDS)}


@cache
def fixed_spec(task: str) -> EpisodeSpec:
    """A spec of a task with a fixed goal scene (`RELABEL_TASKS`): its goal never changes (nor, for tasks 1-5, its
    instruction; a memory task's is the one without distractors)."""
    if task not in RELABEL_TASKS:
        raise ValueError(f"{task!r} has no fixed goal scene; choose from {', '.join(RELABEL_TASKS)}")
    return get_task(task).build(np.random.default_rng(0))


def relabel_instruction(task: str, rng: np.random.Generator, distractors: tuple[int, int] = (1, 3)) -> str:
    """An instruction of ``task`` (one of `RELABEL_TASKS`) to label a recorded episode with: the task's one
    instruction, or for a drawer memory task one with ``distractors`` random distractor skills, as its episodes
    (`agents.real_scene.SceneSpec`: 1-3) name them."""
    spec, builder = fixed_spec(task), get_task(task)  # fixed_spec: a clear error for a task without a fixed goal
    return builder.build(rng, distractors).instruction if builder.takes_distractors else spec.instruction


def start_slot(start: np.ndarray) -> str:
    """The table slot (`CUBE_SLOTS`, within `GOAL_TOLERANCE`) of the cube in a recorded start state (8,): where
    `memory_cube_return` must bring it back to."""
    cube = np.asarray(start, np.float64).reshape(-1)[:3]
    slot = slot_at(cube)
    if slot is None:
        raise ValueError(f"{RETURN_TASK} starts with the cube on a table slot ({', '.join(_SLOTS)}); this start has "
                         f"it at {np.round(cube, 3).tolist()}")
    return slot


def slot_at(position: np.ndarray) -> str | None:
    """The table slot (`CUBE_SLOTS`) within `GOAL_TOLERANCE` of a cube position (its first 3 values), else None."""
    xyz = np.asarray(position, np.float64)[:3]
    return next((n for n in _SLOTS if np.linalg.norm(xyz - np.asarray(CUBE_SLOTS[n])) <= GOAL_TOLERANCE), None)


def goal_scene(task: str, start: np.ndarray | None = None) -> dict:
    """``task``'s goal scene (one of `LABELLED_TASKS`): a `RELABEL_TASKS` task's fixed one, or for
    `memory_cube_return` the scene its episode started in (its builder's start is its goal), read from ``start``, the
    episode's first recorded state (8,)."""
    return _goal(task, _slot(task, start))


def _goal(task: str, slot: str | None) -> dict:
    """`goal_scene` given `memory_cube_return`'s start slot (`_slot`) instead of the state it is read from."""
    return _return_scene(slot) if task == RETURN_TASK else fixed_spec(task).task_info["goal"]


def _slot(task: str, start: np.ndarray | None) -> str | None:
    """`memory_cube_return`'s start slot, its goal (read from ``start``, which it needs); None for other tasks."""
    if task != RETURN_TASK:
        return None
    if start is None:
        raise ValueError(f"{RETURN_TASK}'s goal is the scene its episode started in: pass the episode's first "
                         "recorded state (start)")
    return start_slot(start)


def goal_conditions(task: str, sim_state: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """The simulator's goal checks of ``task`` (one of `LABELLED_TASKS`; ``start`` as in `goal_scene`) on recorded
    states (``sim_state``, (T, 8) as in `objects.SIM_STATE_FIELDS`): bool (T, 5), [cube, left button, right button,
    drawer, window], in the order and with the tolerances of `envs.real.sim` (OGBench's, with a ``cube_in_drawer``
    goal met by the cube anywhere in the drawer), so ``sum - 5`` is the recorded reward."""
    goal = goal_scene(task, start)
    state = np.asarray(sim_state, np.float64).reshape(-1, len(SIM_STATE_FIELDS))
    if goal.get("cube_in_drawer", False):
        cube = state[:, _FIELD["cube_in_drawer"]] > 0.5
    else:
        cube = np.linalg.norm(state[:, :3] - goal["block_xyzs"][0], axis=1) <= GOAL_TOLERANCE
    buttons = state[:, [_FIELD["left_button"], _FIELD["right_button"]]].round() == goal["button_states"]
    drawer = np.abs(state[:, _FIELD["drawer"]] - goal["drawer_pos"]) <= GOAL_TOLERANCE
    window = np.abs(state[:, _FIELD["window"]] - goal["window_pos"]) <= GOAL_TOLERANCE
    return np.column_stack([cube, buttons, drawer, window])


MAX_SKILLS_TO_GO = 12  # `skills_to_go` of a state the goal cannot be reached from (the cube moved off a goal spot
                      # no skill puts it back on)
_SLOTS = tuple(CUBE_SLOTS)  # the table spots the cube skills put the cube on


def _abstract(task: str, state: np.ndarray, held: np.ndarray | None = None,
              start: np.ndarray | None = None) -> tuple:
    """A recorded state (T, 8) as the scene's rules see it, per row: (drawer, window, left unlocked, right unlocked,
    cube). Drawer and window: True (open) or False (shut) within `GOAL_TOLERANCE` of that end, the tolerance of the
    goal check and of the skills' own success, else None (part-way). Cube: a `CUBE_SLOTS` name, "drawer", "goal" (on
    a goal spot no skill reaches, e.g. its start in task 2), "table" (elsewhere) or, where ``held`` (bool (T,)) says
    so, "held": a cube skill was still under way (its chunk not achieved), so the cube may be in the gripper.

    Why the part-way and held states: a real skill often needs two or three chunks, and judged by its position alone
    a drawer 5 cm from shut counted as shut, and a cube still in the gripper over the open drawer as put in it. The
    next-skill labels then said "lock it" or "close the drawer" there; acting on that, the skill-prior agent locked
    drawers that were not yet shut and shut the drawer on the gripped cube, so it fell out (session 13: most of the
    prior's losses on tasks 2, 4 and 5)."""
    def part(value: float, open_: float, shut: float) -> bool | None:
        return True if abs(value - open_) <= GOAL_TOLERANCE else False if abs(value - shut) <= GOAL_TOLERANCE else None

    rows = []
    cube_ok = goal_conditions(task, state, start)[:, 0]
    held = np.zeros(len(state), bool) if held is None else np.asarray(held, bool).reshape(len(state))
    for row, ok, grip in zip(state, cube_ok, held):
        if grip:
            cube = "held"
        elif row[_FIELD["cube_in_drawer"]] > 0.5:
            cube = "drawer"
        else:
            cube = slot_at(row) or ("goal" if ok else "table")
        rows.append((part(row[_FIELD["drawer"]], DRAWER_OPEN, DRAWER_CLOSED),
                     part(row[_FIELD["window"]], WINDOW_OPEN, WINDOW_CLOSED),
                     bool(round(row[_FIELD["left_button"]])), bool(round(row[_FIELD["right_button"]])), cube))
    return tuple(rows)


def _after(state: tuple, skill: int) -> tuple:
    """The abstract state after ``skill`` (`envs.real.skills.SKILLS` order): a locked drawer or window does not move
    (nor leaves its part-way position), the cube goes into the drawer only when it is open, a cube in a drawer that is
    not open stays there, and a held cube is let go where it is ("table") by any skill but a cube skill."""
    drawer, window, left, right, cube = state
    free = cube != "drawer" or drawer is True  # the cube can be picked up
    if cube == "held" and skill < 6:
        cube = "table"
    if skill in (0, 1) and left:
        drawer = skill == 0
    elif skill in (2, 3) and right:
        window = skill == 2
    elif skill == 4:
        left = not left
    elif skill == 5:
        right = not right
    elif skill == 6 and drawer is True and free:
        cube = "drawer"
    elif skill in (7, 8, 9) and free:
        cube = _SLOTS[skill - 7]
    return drawer, window, left, right, cube


_ABSTRACT_STATES = [(d, w, lo, ro, c) for d in (False, True, None) for w in (False, True, None) for lo in (False, True)
                    for ro in (False, True) for c in (*_SLOTS, "drawer", "goal", "table", "held")]


# The memory part of a memory task as an abstract state (`_abstract`), which must have happened before its goal
# counts, as `agents.real_scene.MILESTONES` judges it: the cube in the shut drawer (and the drawer locked over it); for
# `memory_cube_return` the cube on the slot its instruction names (`away_slot`), not still in the gripper
_MEMORY_PART: dict[str, Callable[..., bool]] = {
    "memory_drawer": lambda s, away: s[4] == "drawer" and s[0] is False,
    "memory_drawer_locked": lambda s, away: s[4] == "drawer" and s[0] is False and not s[2],
    RETURN_TASK: lambda s, away: s[4] == away,
}


@cache
def _distances(task: str, memory_done: bool = True, slot: str | None = None, away: str | None = None
               ) -> dict[tuple, int]:
    """Fewest skills from every abstract state to ``task``'s goal (breadth-first search backwards; ``slot``:
    `memory_cube_return`'s start slot, its goal). A memory task whose memory part has not happened yet
    (``memory_done`` False) goes through it first (`_MEMORY_PART`; ``away``: `memory_cube_return`'s named slot,
    `away_slot`): the skills to reach a state that completes it, then that state's skills to the goal."""
    if not memory_done and task in _MEMORY_PART:
        if task == RETURN_TASK and away not in _SLOTS:
            raise ValueError(f"{RETURN_TASK}'s memory part is the cube on the slot its instruction names: pass it "
                             f"(away_slot(instruction), one of {', '.join(_SLOTS)}), not {away!r}")
        done, memory_part = _distances(task, True, slot), _MEMORY_PART[task]
        part = lambda s: memory_part(s, away)  # noqa: E731
        dist = {s: d for s, d in done.items() if part(s)}
        while True:  # Bellman-Ford over the few hundred abstract states: 1 + the best skill's successor
            changed = False
            for s in _ABSTRACT_STATES:
                if part(s):
                    continue
                best = min((dist[t] for t in (_after(s, k) for k in range(10)) if t in dist), default=None)
                if best is not None and best + 1 < dist.get(s, MAX_SKILLS_TO_GO):
                    dist[s], changed = best + 1, True
            if not changed:
                return dist
    goal = _goal(task, slot)
    if goal.get("cube_in_drawer", False):
        cube_ok = lambda cube, drawer: cube == "drawer"  # noqa: E731
    else:
        spot = np.asarray(goal["block_xyzs"][0])
        goal_slot = slot_at(spot)
        if goal_slot:
            cube_ok = lambda cube, drawer: cube == goal_slot  # noqa: E731
        elif np.linalg.norm(spot[:2] - np.asarray(DRAWER_CENTER[:2])) <= 0.15:  # in the drawer, shut (tasks 4, 5)
            cube_ok = lambda cube, drawer: cube == "drawer" and drawer is False  # noqa: E731
        else:
            cube_ok = lambda cube, drawer: cube == "goal"  # noqa: E731
    want = (goal["drawer_pos"] == DRAWER_OPEN, goal["window_pos"] == WINDOW_OPEN, *map(bool, goal["button_states"]))
    dist = {s: 0 for s in _ABSTRACT_STATES if s[:4] == want and cube_ok(s[4], s[0])}
    frontier = list(dist)
    while frontier:
        nxt = []
        for s in _ABSTRACT_STATES:
            if s not in dist and any(_after(s, k) in frontier for k in range(10)):
                dist[s] = dist[frontier[0]] + 1
                nxt.append(s)
        frontier = nxt
    return dist


HELD_MOTION = 0.01  # m: a cube skill's chunk, not achieved, that moved the cube this far leaves it under way ("held")


def cube_under_way(skill_ids: np.ndarray, success: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per chunk, whether it ends with the cube still under way (`_abstract`'s "held"): its skill is a cube skill, the
    chunk did not achieve it, and the cube moved more than `HELD_MOTION` from the chunk's first recorded state
    (``starts``, (K, 8)) to its last (``ends``). bool (K,); skill ids outside the vocabulary (continuous actions) never."""
    from envs.real.skills import SKILL_SPECS

    moved = np.linalg.norm(np.asarray(ends)[:, :3] - np.asarray(starts)[:, :3], axis=1) > HELD_MOTION
    cube = np.array([0 <= int(k) < len(SKILL_SPECS) and SKILL_SPECS[int(k)].kind.startswith("cube")
                     for k in np.asarray(skill_ids).reshape(-1)], bool)
    return moved & cube & ~np.asarray(success, bool).reshape(-1)


def skills_to_go(task: str, sim_state: np.ndarray, held: np.ndarray | None = None,
                 memory_done: np.ndarray | None = None, start: np.ndarray | None = None,
                 away: str | None = None) -> np.ndarray:
    """The fewest skills that take each recorded state (``sim_state``, (T, 8)) to ``task``'s goal (one of
    `LABELLED_TASKS`; ``start`` as in `goal_scene`), under the scene's rules (`_after`); `MAX_SKILLS_TO_GO` where
    none can. int64 (T,). ``held`` (bool (T,)): where a cube skill was still under way (`_abstract`). ``memory_done``
    (bool (T,), default all True): whether a memory task's memory part had happened by then
    (`agents.real_scene.memory_part_done`); where not, the count goes through it (the cube put in the open drawer is
    then 2 skills away, not 0; `memory_cube_return`'s cube on its start slot 2, not 0: to the slot its instruction
    names, ``away`` (`away_slot`), and back).

    Why: OGBench's reward counts the goal conditions met, and on the way to the goal it often falls first (unlocking
    the drawer in task 4, opening it): along the expert's own episodes of tasks 2, 4 and 5 it waits 3-7 chunks before
    it rises, longer than a planner looks ahead (docs/RESULTS.md, session 10). The skills still needed fall by one with
    every right skill, so a head that learns them gives the planner a value to aim at."""
    state = np.asarray(sim_state, np.float64).reshape(-1, len(SIM_STATE_FIELDS))
    phase, slot = _phases(memory_done, len(state)), _slot(task, start)
    return np.array([_distances(task, bool(m), slot, away).get(s, MAX_SKILLS_TO_GO)
                     for s, m in zip(_abstract(task, state, held, start), phase)], np.int64)


def _phases(memory_done: np.ndarray | None, rows: int) -> np.ndarray:
    return np.ones(rows, bool) if memory_done is None else np.asarray(memory_done, bool).reshape(rows)


def next_skills(task: str, sim_state: np.ndarray, num_skills: int = 10, held: np.ndarray | None = None,
                memory_done: np.ndarray | None = None, start: np.ndarray | None = None,
                away: str | None = None) -> np.ndarray:
    """The skills (`envs.real.skills.SKILLS` order) that take each recorded state one skill closer to ``task``'s
    goal under the scene's rules: bool (T, num_skills); a row is all False at the goal and where no skill helps.
    ``held``, ``memory_done``, ``start`` and ``away`` as in `skills_to_go` (before a memory task's memory part,
    "close the drawer" over the cube, not nothing). A part-way drawer or window, or a held cube, makes finishing that
    skill the right next one (`_abstract`).

    Why: the targets of the heads' next-skill output, a learned prior a planner samples and scores its first
    skills by (the CEM of sessions 8-11 drew skills uniformly and, with a horizon of 2-3 skills, never found
    task 4's "open the drawer" while the reward dips for it)."""
    state = np.asarray(sim_state, np.float64).reshape(-1, len(SIM_STATE_FIELDS))
    out = np.zeros((len(state), num_skills), bool)
    slot = _slot(task, start)
    for row, (s, m) in enumerate(zip(_abstract(task, state, held, start), _phases(memory_done, len(state)))):
        dist = _distances(task, bool(m), slot, away)
        d = dist.get(s, MAX_SKILLS_TO_GO)
        if 0 < d < MAX_SKILLS_TO_GO:
            out[row] = [dist.get(_after(s, k), MAX_SKILLS_TO_GO) == d - 1 for k in range(num_skills)]
    return out


def get_task(name: str) -> Task:
    """Task by name; ValueError lists valid names."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASK_NAMES)}")
    return TASKS[name]

