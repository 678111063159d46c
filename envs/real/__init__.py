"""RLBench-style long-horizon tasks on OGBench's MuJoCo scene (drawer, window, button locks, cube).

Importing this package is light (no mujoco), so the learned env can use :data:`SKILLS`;
``RealSceneEnv`` loads the simulator when constructed, after picking the GL backend.
"""

from __future__ import annotations

import gymnasium as gym

from envs.real.rollout import ScriptedExpert, find_revisits, run_episode
from envs.real.scene import RealSceneEnv, SceneConfig
from envs.real.skills import SKILL_SPECS, SKILLS, Skill, skill_id
from envs.real.tasks import EXPERT_TASKS, TASK_NAMES, TASKS, Task, get_task

__all__ = [
    "SKILLS",
    "SKILL_SPECS",
    "Skill",
    "skill_id",
    "TASKS",
    "TASK_NAMES",
    "EXPERT_TASKS",
    "Task",
    "get_task",
    "RealSceneEnv",
    "SceneConfig",
    "ScriptedExpert",
    "find_revisits",
    "run_episode",
    "ENV_ID",
]

ENV_ID = "slowfast/RealScene-v0"
if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point="envs.real.scene:RealSceneEnv")
