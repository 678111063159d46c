"""Runs language skills in the sim with OGBench's closed-loop (markov) oracles.

The oracles read sub-goal keys that OGBench only fills in its data-collection mode; this module
computes them for each skill so they work in task mode. Imports the simulator (see ``sim``).
"""

from __future__ import annotations

import numpy as np
from ogbench.manipspace.oracles.markov.button_markov import ButtonMarkovOracle
from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle
from ogbench.manipspace.oracles.markov.drawer_markov import DrawerMarkovOracle
from ogbench.manipspace.oracles.markov.window_markov import WindowMarkovOracle

from envs.real.sim import SceneSim
from envs.real.skills import Skill

TOLERANCE = 0.04  # OGBench's success tolerance for drawer, window and cube positions (m)
# Effector height (m) above which each oracle counts the gripper as clear of the object; a skill
# only counts as achieved once the arm is clear, so the next skill does not drag the object along.
CLEAR_HEIGHT = {"drawer": 0.18, "window": 0.28, "button": 0.16, "cube": 0.16, "cube_drawer": 0.16}


class SkillController:
    """Turns one skill into per-step 5-D actions and judges, from the sim, whether it is achieved.

    ``noise`` is the std of Gaussian noise added to every action (the expert-noise knob).
    """

    def __init__(self, sim: SceneSim, noise: float = 0.0, rng: np.random.Generator | None = None):
        self._sim = sim
        self._noise = noise
        self._rng = rng or np.random.default_rng()
        self._oracles = {
            "drawer": DrawerMarkovOracle(env=sim),
            "window": WindowMarkovOracle(env=sim),
            "button": ButtonMarkovOracle(env=sim),
            "cube": CubeMarkovOracle(env=sim),
            # Aiming at the drawer centre with the default min_norm=0.4 overshoots and loops.
            "cube_drawer": CubeMarkovOracle(env=sim, min_norm=0.1),
        }
        self.skill: Skill | None = None
        self._goal: dict = {}

    def reset(self, rng: np.random.Generator) -> None:
        """Forget the running skill; draw noise from ``rng`` (seeded per episode)."""
        self._rng, self.skill = rng, None

    def start(self, skill: Skill, info: dict) -> None:
        """Fix the skill's target from the current scene and reset its oracle."""
        sim, kind = self._sim, skill.kind
        if kind == "drawer":
            handle = sim.body_point("drawer_link_virtual_handle", np.array([0.0, skill.target, 1e-4]))
            goal = {"privileged/target_drawer_handle_pos": handle}
        elif kind == "window":
            handle = sim.body_point("windowb_a_virtual_handle", np.array([skill.target, 0.0, 1e-4]))
            goal = {"privileged/target_window_handle_pos": handle}
        elif kind == "button":
            b = int(skill.target)
            goal = {
                "privileged/target_button": b,
                "privileged/target_button_state": 1 - int(info[f"privileged/button_{b}_state"]),
                "privileged/target_button_top_pos": sim.site_pos(f"btntop_{b}"),
            }
        else:
            goal = {
                "privileged/target_block": 0,
                "privileged/target_block_pos": np.asarray(skill.target, dtype=np.float64),
                "privileged/target_block_yaw": np.zeros(1),
            }
        self.skill, self._goal = skill, goal
        self._oracle.reset(None, {**info, **goal})

    @property
    def _oracle(self):
        return self._oracles[self.skill.kind]

    def act(self, info: dict) -> np.ndarray:
        """Next action; zeros (hold still) once the oracle has finished."""
        action = np.zeros(5) if self._oracle.done else self._oracle.select_action(None, {**info, **self._goal})
        if self._noise > 0:
            action = action + self._rng.normal(0.0, self._noise, size=5)
        return np.clip(action, -1.0, 1.0)

    def achieved(self, info: dict) -> bool:
        """Whether the sim shows the skill's effect with the arm clear of the object."""
        kind, target = self.skill.kind, self.skill.target
        clear = self._oracle.done or info["proprio/effector_pos"][2] > CLEAR_HEIGHT[kind]
        if kind in ("drawer", "window"):
            effect = abs(info[f"privileged/{kind}_pos"][0] - target) <= TOLERANCE
        elif kind == "button":
            b = int(target)
            effect = int(info[f"privileged/button_{b}_state"]) == self._goal["privileged/target_button_state"]
        else:
            cube = info["privileged/block_0_pos"]
            placed = self._sim.in_drawer(cube) if kind == "cube_drawer" else (
                np.linalg.norm(cube - np.asarray(target)) <= TOLERANCE
            )
            effect = placed and info["proprio/gripper_contact"][0] < 0.1
        return bool(clear and effect)
