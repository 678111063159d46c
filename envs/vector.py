"""Batched ``SlowFastVGen-v0``: N imagined envs in ONE denoiser batch, each with its own episodic memory.

`SlowFastVGenVectorEnv` is a native Gymnasium ``VectorEnv`` (``gym.make_vec("SlowFastVGen-v0",
num_envs=N, vectorization_mode="vector_entry_point", ...)`` after ``import envs``): every denoising
step is one UNet forward over all N envs, with per-env Temp-LoRA factors applied per sample and
trained in one batched backward pass (`worldmodel.batched_lora`). Env i with seed s behaves exactly
like ``SlowFastVGenEnv`` reset with seed s + i (up to float rounding of batched kernels).

Autoreset (``autoreset_mode``): ``next_step`` (Gymnasium's default: the step after an episode ends
resets that env and ignores its action), ``same_step`` (reset at once; ``info["final_obs"]`` and
``info["final_info"]`` hold the last transition) or ``disabled``. ``reset(options={"reset_mask": m})``
resets only the envs where ``m`` is True.

`SB3VecEnv` adapts it to Stable-Baselines3's ``VecEnv`` API (same-step resets with
``terminal_observation`` in the infos, as SB3 expects).
"""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.learned import ImaginationCore, LearnedEnvConfig, step_info

try:  # Stable-Baselines3 is a core dependency, but keep the Gymnasium env usable without it.
    from stable_baselines3.common.vec_env import VecEnv as _SB3VecEnv
except ImportError:  # pragma: no cover
    _SB3VecEnv = object  # type: ignore[assignment,misc]

_MODES = {m.value.lower().replace("step", "_step"): m for m in AutoresetMode}  # next_step, same_step, disabled


def _autoreset_mode(mode: str | AutoresetMode) -> AutoresetMode:
    if isinstance(mode, AutoresetMode):
        return mode
    key = str(mode).lower()
    if key not in _MODES:
        raise ValueError(f"unknown autoreset_mode {mode!r}; choose one of {sorted(_MODES)}")
    return _MODES[key]


class SlowFastVGenVectorEnv(VectorEnv):
    """N batched imagined envs; options as ``SlowFastVGen-v0`` plus ``num_envs`` and ``autoreset_mode``."""

    metadata = {"render_modes": ["rgb_array", "rgb_array_list"], "render_fps": 8,
                "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
                 **kwargs: Any):
        self.config = cfg = LearnedEnvConfig.from_kwargs(**kwargs)
        self.core = ImaginationCore(num_envs, cfg)
        self.num_envs = num_envs
        self.autoreset_mode = _autoreset_mode(autoreset_mode)
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode, "render_fps": cfg.render_fps}
        self.render_mode = cfg.render_mode
        self.single_observation_space = self.core.observation_space
        self.single_action_space = self.core.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._needs_reset = np.zeros(num_envs, bool)
        self._obs = np.zeros((num_envs, *self.single_observation_space.shape), np.uint8)

    @property
    def model(self):
        return self.core.model

    @property
    def memory(self):
        return self.core.memory

    # ---------------------------------------------------------------------------------------- reset
    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None):
        """Reset all envs (or those in ``options["reset_mask"]``); an int seed s seeds env i with s + i."""
        super().reset(seed=seed if isinstance(seed, int) else None)
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        ids = list(range(self.num_envs)) if mask is None else np.flatnonzero(np.asarray(mask, bool)).tolist()
        if mask is not None and np.shape(mask) != (self.num_envs,):
            raise ValueError(f"reset_mask must have shape ({self.num_envs},), got {np.shape(mask)}")
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} envs")
        for i in ids:
            if seeds[i] is not None or self.core.np_randoms[i] is None:
                self.core.seed(i, seeds[i])
        infos: dict[str, Any] = {}
        if ids:
            for i, info in zip(ids, self.core.reset(ids, [options] * len(ids))):
                infos = self._add_info(infos, info, i)
                self._obs[i] = self.core.observation(i)
        self._needs_reset[ids] = False
        return self._obs.copy(), infos

    # ----------------------------------------------------------------------------------------- step
    def _split_actions(self, actions: Any) -> list[Any]:
        if isinstance(actions, (str, bytes)) or not hasattr(actions, "__len__"):
            raise TypeError(f"vector env actions must be a batch of {self.num_envs} actions, "
                            f"got {type(actions).__name__}")
        if len(actions) != self.num_envs:
            raise ValueError(f"got {len(actions)} actions for {self.num_envs} envs")
        return [actions[i] for i in range(self.num_envs)]

    def step(self, actions: Any):
        actions = self._split_actions(actions)
        n = self.num_envs
        rewards = np.zeros(n, np.float32)
        terminated = np.zeros(n, bool)
        truncated = np.zeros(n, bool)
        infos: dict[str, Any] = {}
        resetting = np.flatnonzero(self._needs_reset).tolist() if self.autoreset_mode == AutoresetMode.NEXT_STEP else []
        stepping = [i for i in range(n) if i not in resetting]
        # Validate every stepped action before touching any env.
        for i in stepping:
            self.core.parse_action(actions[i])
        if resetting:
            for i, info in zip(resetting, self.core.reset(resetting, [None] * len(resetting))):
                infos = self._add_info(infos, info, i)
                self._obs[i] = self.core.observation(i)
        if stepping:
            out = self.core.step(stepping, [actions[i] for i in stepping])
            for k, i in enumerate(stepping):
                self._obs[i] = out.obs[k]
                infos = self._add_info(infos, step_info(out, k, vector=True), i)
            rewards[stepping] = out.reward
            terminated[stepping] = out.terminated
            truncated[stepping] = out.truncated
        done = terminated | truncated
        self._needs_reset[:] = False
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            self._needs_reset = done.copy()
        elif self.autoreset_mode == AutoresetMode.SAME_STEP and done.any():
            ids = np.flatnonzero(done).tolist()
            final_info: dict[str, Any] = {}
            final_obs = np.full(n, None, dtype=object)
            for i in ids:
                final_obs[i] = self._obs[i].copy()
                final_info = self._add_info(final_info, {k: v[i] for k, v in infos.items()
                                                         if not k.startswith("_") and infos[f"_{k}"][i]}, i)
            reset_infos: dict[str, Any] = {}
            for i, info in zip(ids, self.core.reset(ids, [None] * len(ids))):
                reset_infos = self._add_info(reset_infos, info, i)
                self._obs[i] = self.core.observation(i)
            infos = {**infos, **reset_infos, "final_obs": final_obs, "_final_obs": done.copy(),
                     "final_info": final_info, "_final_info": done.copy()}
        return self._obs.copy(), rewards, terminated, truncated, infos

    # --------------------------------------------------------------------------------------- render
    def render(self) -> tuple[Any, ...] | None:
        if self.render_mode is None:
            return None
        return tuple(self.core.render(i) for i in range(self.num_envs))

    def episode_nbytes(self) -> int:
        return self.core.episode_nbytes()

    def close_extras(self, **kwargs: Any) -> None:
        self.core.close()


class SB3VecEnv(_SB3VecEnv):
    """Stable-Baselines3 ``VecEnv`` over a batched ``SlowFastVGenVectorEnv`` (built from kwargs or given).

    Done envs are reset in the same step (SB3's convention): the returned observation is the new
    episode's first one and ``infos[i]["terminal_observation"]`` the last one of the ended episode.
    ``seed(s)`` seeds env i with s + i at the next ``reset()``.
    """

    def __init__(self, venv: SlowFastVGenVectorEnv | None = None, num_envs: int = 1, **kwargs: Any):
        if _SB3VecEnv is object:  # pragma: no cover
            raise ImportError("SB3VecEnv needs stable-baselines3")
        if venv is None:
            venv = SlowFastVGenVectorEnv(num_envs=num_envs, autoreset_mode=AutoresetMode.DISABLED, **kwargs)
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
        return [self.venv.core.recent[i, -1].copy() for i in range(self.num_envs)]

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self.venv, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
