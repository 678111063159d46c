"""Runs language skills in the sim with OGBench's closed-loop (markov) oracles.

The oracles read sub-goal keys that OGBench only fills in its data-collection mode; this module
computes them for each skill so they work in task mode. Imports the simulator (see ``sim``).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np
from ogbench.manipspace.oracles.markov.button_markov import ButtonMarkovOracle
from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle
from ogbench.manipspace.oracles.markov.drawer_markov import DrawerMarkovOracle
from ogbench.manipspace.oracles.markov.window_markov import WindowMarkovOracle

from envs.real.sim import SceneSim
from envs.real.skills import DRAWER_CLOSED, Skill

TOLERANCE = 0.04  # OGBench's success tolerance for drawer, window and cube positions (m)
RETREAT = 0.02  # drawer/window distance to target (m) at which the oracle may let go
# Closing the drawer: aim past the closed end and let go only once the drawer is within RETREAT and
# has moved less than CLOSE_STALL_MOVE over the last CLOSE_STALL_STEPS steps: shut and held while a
# cube inside settles (let go at once, the cube knocked against the drawer's wall springs it ~2 cm
# open again), or stuck. A drawer left 2 cm open shows a sliver of the cube at the image's edge.
CLOSE_OVERSHOOT = 0.02
CLOSE_STALL_STEPS, CLOSE_STALL_MOVE = 8, 0.002
CLOSE_PRESS = 0.03  # (m) how far past the gripper the lift aims in the closing direction
# Effector height (m) above which each oracle counts the gripper as clear of the object; a skill
# only counts as achieved once the arm is clear, so the next skill does not drag the object along.
CLEAR_HEIGHT = {"drawer": 0.18, "window": 0.28, "button": 0.16, "cube": 0.16, "cube_drawer": 0.16}


def stalled(positions: Sequence, steps: int, move: float) -> bool:
    """Whether the last of ``positions`` (scalars or vectors, one per control step) lies within ``move`` (m) of the
    one ``steps`` steps before it: the stall test of the drawer's close and of the cube's grasp."""
    return len(positions) > steps and float(np.linalg.norm(np.subtract(positions[-1], positions[-1 - steps]))) < move


@contextlib.contextmanager
def _as_global_random(stream: np.random.RandomState) -> Iterator[None]:
    """Within the block, the module-level ``np.random`` functions draw from ``stream``; the process's global
    stream is left exactly as it was."""
    outside = np.random.get_state()
    np.random.set_state(stream.get_state())
    try:
        yield
    finally:
        stream.set_state(np.random.get_state())
        np.random.set_state(outside)


class _BoundedYaw:
    """Keeps the oracles' yaw targets within [-pi/2, pi/2], drawn from the scene's own random stream.

    OGBench's oracles aim at the symmetric yaw nearest the effector and retreat to a random yaw in
    [-pi, pi]; over a chain of skills the effector then crosses the +-pi wrap, which winds the
    wrist joint up to its limit until a later skill cannot align with a handle (measured: 10-15%
    of memory-task episodes failed that way). Targets in [-pi/2, pi/2] never cross the wrap.

    OGBench draws the retreat pose from the global ``np.random``, shared by every scene of a process: scenes
    played side by side (`plan_eval --parallel`, `eval_agent parallel=`) reseeded and drew from one stream, so an
    episode's skills depended on the episodes beside it (session 37: 11 of 20 task-5 expert episodes played
    differently with other tasks beside them). ``random`` is the controller's stream, seeded per episode.
    """

    def __init__(self, *args, random: np.random.RandomState | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.random = random if random is not None else np.random.RandomState()

    def reset(self, ob, info) -> None:
        with _as_global_random(self.random):
            super().reset(ob, info)
            self._final_yaw = np.random.uniform(-np.pi / 2, np.pi / 2)

    def shortest_yaw(self, eff_yaw: float, obj_yaw: float, n: int = 4) -> float:
        candidates = obj_yaw + 2 * np.pi * np.arange(-n, n + 1) / n
        candidates = candidates[np.abs(candidates) <= np.pi / 2 + 1e-6]
        return float(candidates[np.argmin(np.abs(eff_yaw - candidates))])


class _Drawer(_BoundedYaw, DrawerMarkovOracle):
    pass


class _Window(_BoundedYaw, WindowMarkovOracle):
    pass


class _Button(_BoundedYaw, ButtonMarkovOracle):
    pass


# Grasping the cube: the gripper descends at the cube's symmetric yaw nearest its own. Beside the open drawer that yaw
# can put a finger on the drawer's wall, and the descent stalls above the cube until the skill's time runs out (session
# 48: after "open the drawer", "put the cube on the right" failed in 5 of task 3's scenes 4800-4819, the cube never
# moved). If the effector, low, not grasping and not yet at the cube (the oracle's 2 cm), moves less than
# GRASP_STALL_MOVE over its last GRASP_STALL_STEPS steps (8 positions), the grasp turns to the cube's other pair of
# faces (yaw + pi/2) for the rest of the skill. (The drawer's close uses the same `stalled` test, CLOSE_STALL_STEPS.)
GRASP_STALL_STEPS, GRASP_STALL_MOVE, GRASP_STALL_HEIGHT = 7, 0.002, 0.1


class _Cube(_BoundedYaw, CubeMarkovOracle):
    _prefer: float | None = None  # the grasp yaw once a stalled descent turned it (None: OGBench's choice)
    _trail: tuple = ()

    def reset(self, ob, info) -> None:
        super().reset(ob, info)
        self._prefer, self._trail = None, ()

    def shortest_yaw(self, eff_yaw: float, obj_yaw: float, n: int = 4) -> float:
        return super().shortest_yaw(eff_yaw if self._prefer is None else self._prefer, obj_yaw, n)

    def select_action(self, ob, info):
        pos = np.asarray(info["proprio/effector_pos"], dtype=float)
        block = info["privileged/target_block"]
        approaching = (pos[2] < GRASP_STALL_HEIGHT and float(np.ravel(info["proprio/gripper_contact"])[0]) < 0.5
                       and np.linalg.norm(np.asarray(info[f"privileged/block_{block}_pos"]) - pos) > 0.02)
        self._trail = (*self._trail, pos)[-GRASP_STALL_STEPS - 1:] if approaching else ()
        if self._prefer is None and stalled(self._trail, GRASP_STALL_STEPS, GRASP_STALL_MOVE):
            eff_yaw = float(np.ravel(info["proprio/effector_yaw"])[0])
            block_yaw = float(np.ravel(info[f"privileged/block_{block}_yaw"])[0])
            aimed = super().shortest_yaw(eff_yaw, block_yaw)
            self._prefer = aimed + np.pi / 2 if aimed + np.pi / 2 <= np.pi / 2 + 1e-6 else aimed - np.pi / 2
        return super().select_action(ob, info)


class SkillController:
    """Turns one skill into per-step 5-D actions and judges, from the sim, whether it is achieved.

    ``noise`` is the std of Gaussian noise added to every action (the expert-noise knob).
    """

    def __init__(self, sim: SceneSim, noise: float = 0.0, rng: np.random.Generator | None = None):
        self._sim = sim
        self._noise = noise
        self._rng = rng or np.random.default_rng()
        self._random = np.random.RandomState()  # the oracles' retreat poses (`_BoundedYaw`): this scene's alone
        self._oracles = {
            "drawer": _Drawer(env=sim, random=self._random),
            "window": _Window(env=sim, random=self._random),
            "button": _Button(env=sim, random=self._random),
            "cube": _Cube(env=sim, random=self._random),
            # Aiming at the drawer centre with the default min_norm=0.4 overshoots and loops.
            "cube_drawer": _Cube(env=sim, min_norm=0.1, random=self._random),
        }
        self.skill: Skill | None = None
        self._goal: dict = {}

    def reset(self, rng: np.random.Generator, seed: int) -> None:
        """Forget the running skill; draw noise from ``rng`` and the oracles' retreat poses from a stream seeded
        with ``seed`` (both per episode). The stream is the one `np.random.seed(seed)` gave the global functions
        before, so an episode played alone draws what it drew then."""
        self._rng, self.skill = rng, None
        self._random.seed(seed)

    def start(self, skill: Skill, info: dict, retry: bool = False) -> None:
        """Fix the skill's target from the current scene and reset its oracle.

        A button skill toggles its button. ``retry`` (the same skill again after a chunk that did not achieve it)
        keeps the toggle's target when the button already shows it: that chunk pressed the button but ended with
        the arm not yet clear (its oracle done within 4 cm of a retreat pose near the clear height), and pressing
        again would undo it (session 37: task 2, scene seed 9010, the window locked again and the task lost)."""
        sim, kind = self._sim, skill.kind
        if kind == "drawer":
            target = skill.target + (CLOSE_OVERSHOOT if skill.target == DRAWER_CLOSED else 0.0)
            handle = sim.body_point("drawer_link_virtual_handle", np.array([0.0, target, 1e-4]))
            goal = {"privileged/target_drawer_handle_pos": handle}
        elif kind == "window":
            handle = sim.body_point("windowb_a_virtual_handle", np.array([skill.target, 0.0, 1e-4]))
            goal = {"privileged/target_window_handle_pos": handle}
        elif kind == "button":
            b = int(skill.target)
            state = int(info[f"privileged/button_{b}_state"])
            pressed = retry and self._goal.get("privileged/target_button_state") == state  # this press, done
            goal = {
                "privileged/target_button": b,
                "privileged/target_button_state": state if pressed else 1 - state,
                "privileged/target_button_top_pos": sim.site_pos(f"btntop_{b}"),
            }
        else:
            goal = {
                "privileged/target_block": 0,
                "privileged/target_block_pos": np.asarray(skill.target, dtype=np.float64),
                "privileged/target_block_yaw": np.zeros(1),
            }
        self.skill, self._goal = skill, goal
        self._closing = kind == "drawer" and skill.target == DRAWER_CLOSED
        self._released, self._history = False, []
        self._oracle.reset(None, {**info, **goal})

    @property
    def _oracle(self):
        return self._oracles[self.skill.kind]

    @property
    def done(self) -> bool:
        """The oracle finished (moved away after success) or gave up (hit its step limit)."""
        return self.skill is not None and self._oracle.done

    def act(self, info: dict) -> np.ndarray:
        """Next action; zeros (hold still) once the oracle has finished."""
        if self._oracle.done:
            action = np.zeros(5)
        else:
            action = self._oracle.select_action(None, {**info, **self._oracle_goal(info)})
        if self._noise > 0:
            action = action + self._rng.normal(0.0, self._noise, size=5)
        return np.clip(action, -1.0, 1.0)

    def _oracle_goal(self, info: dict) -> dict:
        """The goal keys for the oracle. Once a drawer/window is within 2 cm of its target, the
        oracle is told the handle is exactly there, so it lets go and retreats instead of pushing
        for its own 1 cm precision (which can stall until its step limit, arm still on the handle).
        Closing the drawer lets go later (see CLOSE_STALL_STEPS), stays let go, and lifts the gripper
        while still pressing it shut."""
        kind = self.skill.kind
        if kind not in ("drawer", "window"):
            return self._goal
        pos = info[f"privileged/{kind}_pos"][0]
        error = abs(pos - self.skill.target)
        if self._closing:
            self._history.append(pos)
            self._released |= error <= RETREAT and stalled(self._history, CLOSE_STALL_STEPS, CLOSE_STALL_MOVE)
            release = self._released
        else:
            release = error <= RETREAT
        if not release:
            return self._goal
        handle = np.array(info[f"privileged/{kind}_handle_pos"], np.float64)
        if self._closing:
            # Lift while still pressing the drawer shut (world -y): moving back over the handle's
            # centre while touching it pulls the drawer open again (measured: by up to 3 cm).
            handle[:2] = info["proprio/effector_pos"][:2] + np.array([0.0, -CLOSE_PRESS])
            return {"privileged/drawer_handle_pos": handle, "privileged/target_drawer_handle_pos": handle}
        return {f"privileged/target_{kind}_handle_pos": handle}

    def achieved(self, info: dict) -> bool:
        """Whether the sim shows the skill's effect with the arm lifted clear of the object."""
        return bool(info["proprio/effector_pos"][2] > CLEAR_HEIGHT[self.skill.kind] and self._effect(info))

    def _effect(self, info: dict) -> bool:
        kind, target = self.skill.kind, self.skill.target
        if kind in ("drawer", "window"):
            return abs(info[f"privileged/{kind}_pos"][0] - target) <= TOLERANCE
        if kind == "button":
            b = int(target)
            return int(info[f"privileged/button_{b}_state"]) == self._goal["privileged/target_button_state"]
        cube = info["privileged/block_0_pos"]
        placed = self._sim.in_drawer(cube) if kind == "cube_drawer" else (
            np.linalg.norm(cube - np.asarray(target)) <= TOLERANCE
        )
        return bool(placed and info["proprio/gripper_contact"][0] < 0.1)
