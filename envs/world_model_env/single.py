"""``SlowFastVGen-v0``: the world model as a Gymnasium env; one ``step`` generates one video chunk.

``reset`` starts from real first frames and clears the episodic memory (Temp-LoRA Θ = 0);
``step(action)`` denoises the next ``new_frames`` frames after the last chunk, then fast-learns Θ on
the chunk (Temp-LoRA), so later chunks remember what the episode showed. Rewards and termination come
from learned heads (`worldmodel.heads`) when the model ships them; otherwise the reward is 0 and the
episode only ends by truncation.

Action modes (``action_mode``):

- ``skill``: ``Discrete(len(skills))``, an index into the skill vocabulary (the model's saved
  vocabulary, else the real scene's ``envs.real.skills.SKILLS``, else ``skills=[...]``).
- ``text``: the skill strings themselves (case and spacing ignored). The action space is a
  :class:`SkillText` (a Gymnasium ``Text`` space whose samples are valid skills); unknown text raises
  ValueError listing the skills. Stable-Baselines3 cannot use Text actions: its algorithms need
  Box/Discrete spaces, and the NaN check inside SB3's ``check_env`` (``VecCheckNan``) calls
  ``np.isnan`` on the actions, which fails on strings; all of SB3's other checks pass. Train SB3
  agents in ``skill`` mode (the same skills as a Discrete space).
- ``continuous``: ``Box(-1, 1, (new_frames, action_dim))`` (one action per generated frame), or
  ``(action_dim,)`` with ``continuous_shape="frame"`` (held for the whole chunk).

Everything random in an episode (start frame, diffusion noise, Temp-LoRA init and its loss noise)
comes from generators seeded by ``reset(seed=...)``: an episode repeats exactly under its seed, and
env i of the batched vector env (`WorldModelVectorEnv`) with seed s reproduces this env with seed s + i.
Both envs are bookkeeping (`envs.world_model_env.batch.EnvBatch`) over one `worldmodel.Imagination`,
which runs N envs in one denoiser batch with one Temp-LoRA memory per env (`BatchedTempLoRA`).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from worldmodel.memory import BatchedTempLoRA
from worldmodel.model import SlowFastVGen

from .batch import EnvBatch, step_info
from .options import WorldModelEnvConfig


class WorldModelEnv(gym.Env):
    """The world model as a Gymnasium env; options: :class:`WorldModelEnvConfig` (module docstring)."""

    metadata = {"render_modes": ["rgb_array", "rgb_array_list"], "render_fps": 8}

    def __init__(self, **kwargs: Any):
        self.config = cfg = WorldModelEnvConfig.from_kwargs(**kwargs)
        self.batch = EnvBatch(1, cfg)
        self.render_mode = cfg.render_mode
        self.metadata = {**self.metadata, "render_fps": cfg.render_fps}
        self.observation_space = self.batch.observation_space
        self.action_space = self.batch.action_space

    @property
    def model(self) -> SlowFastVGen:
        return self.batch.model

    @property
    def memory(self) -> BatchedTempLoRA | None:
        """The episode's Temp-LoRA memory (one env of a BatchedTempLoRA), None when off."""
        return self.batch.memory

    @property
    def skills(self) -> tuple[str, ...]:
        return self.batch.skills

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode: pick real start frames, reset Θ and seed all episode randomness.

        ``options``: ``start_frames`` (uint8 frames), ``episode`` (+ ``episode_key``: an h5 episode
        file, its first frame), ``start_index`` (into the start set), ``task``, ``instruction``.
        """
        super().reset(seed=seed)
        self.batch.np_randoms[0] = self.np_random
        info = self.batch.reset([0], [options])[0]
        return self.batch.observation(0), info

    def step(self, action: Any):
        out = self.batch.step([0], [action])
        info = step_info(out, 0)
        return out.obs[0], float(out.reward[0]), bool(out.terminated[0]), bool(out.truncated[0]), info

    def render(self):
        return self.batch.render(0)

    def episode_nbytes(self) -> int:
        return self.batch.episode_nbytes()

    def close(self) -> None:
        self.batch.close()
        super().close()
