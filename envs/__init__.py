"""Environments: the real task suite (`envs.real`), episode storage and datasets, the synthetic world,
and the learned world-model env ``SlowFastVGen-v0`` (registered here; `envs.learned`, `envs.vector`)."""

import gymnasium as gym

LEARNED_ENV_ID = "SlowFastVGen-v0"

if LEARNED_ENV_ID not in gym.registry:
    gym.register(
        LEARNED_ENV_ID,
        entry_point="envs.learned:SlowFastVGenEnv",
        vector_entry_point="envs.vector:SlowFastVGenVectorEnv",
    )
