"""Environments: the real task suite (`envs.real`), episode storage and datasets, the synthetic world,
and the world-model env ``SlowFastVGen-v0`` (registered here; `envs.world_model_env`)."""

import gymnasium as gym

ENV_ID = "SlowFastVGen-v0"

if ENV_ID not in gym.registry:
    gym.register(
        ENV_ID,
        entry_point="envs.world_model_env:WorldModelEnv",
        vector_entry_point="envs.world_model_env:WorldModelVectorEnv",
    )


def skill_vocabulary(domain: str) -> tuple[str, ...]:
    """The skill names that a domain's (``scene``, ``synthetic`` or ``crafter``) episodes use as language.

    Imports only the domain asked for, so no simulator loads for another one.
    """
    if domain == "scene":
        from envs.real.skills import SKILLS

        return SKILLS
    if domain == "synthetic":
        from envs.synthetic import SYNTHETIC_SKILLS

        return SYNTHETIC_SKILLS
    if domain == "crafter":
        from envs.real.crafter import CRAFTER_SKILLS

        return CRAFTER_SKILLS
    raise ValueError(f"unknown domain {domain!r}; expected scene, synthetic or crafter")
