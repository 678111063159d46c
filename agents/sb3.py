"""Stable-Baselines3 adapter of the batched world-model env (`envs.world_model_env.WorldModelVectorEnv`)."""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv

from envs.world_model_env import WorldModelVectorEnv


class SB3VecEnv(VecEnv):
    """Stable-Baselines3 ``VecEnv`` over a batched ``WorldModelVectorEnv`` (built from kwargs or given).

    Done envs are reset in the same step (SB3's convention): the returned observation is the new
    episode's first one and ``infos[i]["terminal_observation"]`` the last one of the ended episode.
    ``seed(s)`` seeds env i with s + i at the next ``reset()``.
    """

    def __init__(self, venv: WorldModelVectorEnv | None = None, num_envs: int = 1, **kwargs: Any):
        if venv is None:
            venv = WorldModelVectorEnv(num_envs=num_envs, autoreset_mode=AutoresetMode.DISABLED, **kwargs)
        elif kwargs:
            raise TypeError("pass either a vector env or env options, not both")
        venv.autoreset_mode = AutoresetMode.DISABLED  # resets happen here, SB3-style
        venv.metadata = {**venv.metadata, "autoreset_mode": AutoresetMode.DISABLED}
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: Any = None

    def reset(self):
        seeds = self._seeds if any(s is not None for s in self._seeds) else None
        options = next((o for o in self._options if o), None)
        obs, info = self.venv.reset(seed=seeds, options=options)
        self.reset_infos = self._unbatch(info)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        dones = terminated | truncated
        infos = self._unbatch(info)
        for i in range(self.num_envs):
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        if dones.any():
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = obs[i].copy()
            obs, reset_info = self.venv.reset(options={"reset_mask": dones})
            for i, r in enumerate(self._unbatch(reset_info)):
                if dones[i]:
                    self.reset_infos[i] = r
        return obs, rewards.astype(np.float32), dones, infos

    def _unbatch(self, info: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for key, value in info.items():
            if key.startswith("_"):
                continue
            mask = info.get(f"_{key}", np.ones(self.num_envs, bool))
            for i in np.flatnonzero(mask):
                out[i][key] = value[i]
        return out

    def close(self) -> None:
        self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [self.venv.batch.recent[i, -1].copy() for i in range(self.num_envs)]

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self.venv, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
