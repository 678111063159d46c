"""Agents over the world model, judged in the real scene.

- `agents.sb3.SB3VecEnv`: the Stable-Baselines3 adapter of the batched world-model env.
- `agents.ppo`: PPO on skills (CNN on frames + the instruction) trained in imagination or in the real scene;
  `train_ppo`, `evaluate_in_real_scene`.
- `agents.planning`: random shooting and CEM over skill sequences, every candidate imagined in one batch
  by forking the imagination core, scored by the reward heads (and, with heads that have one, their
  next-skill prior), replanned every real chunk; `SkillPriorAgent`, that prior alone; `SkillRuns`, both agents' rule
  that a skill runs on until the success head sees it done.
- `agents.real_scene`: the real-scene episode loop, the random-skill and scripted-expert baselines,
  the instruction check. `agents.heads`: the reward heads the agents are scored by (loaded or fitted).

Names are imported lazily (``from agents import train_ppo`` loads `agents.ppo` only then).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SB3VecEnv": "sb3",
    "ObservationSpec": "ppo", "PPOConfig": "ppo", "PolicyAgent": "ppo", "evaluate_in_real_scene": "ppo",
    "imagined_vec_env": "ppo", "real_vec_env": "ppo", "run_policy_in_real_scene": "ppo", "train_ppo": "ppo",
    "PlanResult": "planning", "PlannerConfig": "planning", "WorldModelPlanner": "planning", "make_agent": "planning",
    "AGENTS": "planning", "SkillPriorAgent": "planning", "SkillRuns": "planning",
    "EpisodeResult": "real_scene", "ExpertAgent": "real_scene", "MEMORY_TASKS": "real_scene",
    "RandomSkillAgent": "real_scene", "SCENE_TASKS": "real_scene", "SceneSpec": "real_scene",
    "UnknownInstruction": "real_scene", "check_instruction": "real_scene", "make_scene": "real_scene",
    "run_real_episode": "real_scene",
    "fit_heads": "heads", "resolve_heads": "heads",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'agents' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
