"""The env's bookkeeping for N imagined envs over one `worldmodel.Imagination`.

The imagination core owns sampling, memory, context latents and RNG; this holds what a Gymnasium env
adds: observations (recent frames), instructions, step counts, start frames, reward heads, render
buffers. `WorldModelEnv` drives it with N = 1, `WorldModelVectorEnv` with N envs.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import seeding

from worldmodel.config import TEMP_LORA_RULES
from worldmodel.heads import HeadsHistory
from worldmodel.imagination import Imagination
from worldmodel.loading import default_device, load_model, set_cpu_threads
from worldmodel.memory import BatchedTempLoRA

from .assets import episode_start_frames, frames_set, load_start_set, resolve_heads, resolve_skills, task_spec
from .options import SkillText, StepTimings, WorldModelEnvConfig, continuous_action, normalize_text, skill_index

RESET_OPTIONS = ("start_frames", "episode", "episode_key", "start_index", "task", "instruction")


@dataclass
class StepBatch:
    """What one batched step produced for envs ``ids``."""

    ids: list[int]
    obs: np.ndarray
    frames: np.ndarray  # (n, Tn, H, W, 3) uint8
    reward: np.ndarray  # float32 (n,)
    terminated: np.ndarray  # bool (n,)
    truncated: np.ndarray  # bool (n,)
    fast_loss: list[float | None]
    rolled_back: list[bool]
    success: np.ndarray | None  # bool (n,), when heads exist
    success_prob: np.ndarray | None
    actions: list[Any]
    steps: np.ndarray  # int64 (n,): chunks generated in the episode so far
    timings: StepTimings
    skills_to_go: np.ndarray | None = None  # float32 (n,), when the heads predict it


def step_info(out: StepBatch, k: int, vector: bool = False) -> dict[str, Any]:
    """The info of row k of a batched step (the vector env reports fast_loss None as NaN)."""
    loss = out.fast_loss[k]
    info: dict[str, Any] = {
        "frames": out.frames[k],
        "fast_loss": (float("nan") if loss is None else loss) if vector else loss,
        "fast_rolled_back": out.rolled_back[k],
        "step": int(out.steps[k]),
        "timings": out.timings,
    }
    if isinstance(out.actions[k], str):
        info["skill"] = out.actions[k]
    if out.success is not None:
        info["success"] = bool(out.success[k])
        info["success_prob"] = float(out.success_prob[k])
    if out.skills_to_go is not None:
        info["skills_to_go"] = float(out.skills_to_go[k])
    return info


class EnvBatch:
    """N imagined envs sharing one model; see the module docstring."""

    def __init__(self, num_envs: int, config: WorldModelEnvConfig):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = n = num_envs
        self.config = cfg = config
        if torch.device(cfg.device or default_device()).type == "cpu":
            set_cpu_threads(cfg.cpu_threads)  # before loading, while this process is idle
        self.model, self.folder = load_model(cfg.model, cfg.device, shared=True)
        mc = self.model.config
        self.device = self.model.device
        self.frame_size, self.new_frames, self.context_frames = mc.frame_size, mc.new_frames, mc.context_frames
        if cfg.action_mode in ("skill", "text") and mc.action_type == "vector":
            raise ValueError(f"action_mode {cfg.action_mode!r} needs a model that reads language; this model's "
                             "action_type is 'vector' (use action_mode='continuous')")
        if cfg.action_mode == "continuous" and mc.action_type == "text":
            raise ValueError("action_mode 'continuous' needs a model that reads action vectors; this model's "
                             "action_type is 'text' (use action_mode='skill' or 'text')")
        self.skills = resolve_skills(cfg.skills, self.folder) if cfg.action_mode != "continuous" else ()
        if self.skills:  # embed the vocabulary now (cached in the model), not inside the first timed step
            self.model.action_encoder.embed_texts(list(self.skills))
        self.start_set = load_start_set(cfg.start_frames, self.folder, self.frame_size)
        self.heads = resolve_heads(cfg.heads, self.folder, self.device)
        # the heads' view of each episode so far (heads that read history: `worldmodel.heads.HeadsHistory`)
        self.heads_history = HeadsHistory(self.heads, n) if self.heads is not None else None
        if cfg.compile:
            self.model.compile_unet()
        if cfg.compile_decoder:
            self.model.compile_decoder()
        self.imagination = Imagination(self.model, n, self._make_memory(), cfg.denoise_steps, cfg.guidance_scale,
                                       precision=cfg.precision, compile_fast_update=cfg.compile_fast_update)
        self.frame_stack = cfg.frame_stack or self.context_frames
        self.keep_frames = max(self.new_frames, self.frame_stack)
        self._build_spaces()
        # per-env bookkeeping
        s = self.frame_size
        self.np_randoms: list[np.random.Generator | None] = [None] * n
        self.recent = np.zeros((n, self.keep_frames, s, s, 3), np.uint8)
        self.step_counts = np.zeros(n, np.int64)
        self.instructions: list[str | None] = [None] * n
        self.render_frames: list[list[np.ndarray]] = [[] for _ in range(n)]
        self.closed = False

    @property
    def memory(self) -> BatchedTempLoRA | None:
        return self.imagination.memory

    def _make_memory(self) -> BatchedTempLoRA | None:
        spec = self.config.temp_lora
        if spec is False:
            return None
        base = self.model.config.temp_lora
        if isinstance(spec, str):  # a named rule over the model's config, else a variant
            tl = base.with_rule(spec) if spec in TEMP_LORA_RULES else dataclasses.replace(base, variant=spec)
        else:
            tl = spec if not isinstance(spec, bool) else base
        if self.config.temp_lora_steps is not None:
            tl = dataclasses.replace(tl, steps=self.config.temp_lora_steps)
        return BatchedTempLoRA(self.model, self.num_envs, tl, max_batch=self.config.fast_batch_size,
                               recompute=self.config.fast_recompute)

    # ------------------------------------------------------------------------------------- spaces
    def _build_spaces(self) -> None:
        s, cfg, mc = self.frame_size, self.config, self.model.config
        shape = {"frame": (s, s, 3), "chunk": (self.new_frames, s, s, 3),
                 "stack": (self.frame_stack, s, s, 3)}[cfg.observation]
        self.observation_space = gym.spaces.Box(0, 255, shape, np.uint8)
        if cfg.action_mode == "skill":
            self.action_space: gym.Space = gym.spaces.Discrete(len(self.skills))
        elif cfg.action_mode == "text":
            self.action_space = SkillText(self.skills)
        else:
            a_shape = (self.new_frames, mc.action_dim) if cfg.continuous_shape == "chunk" else (mc.action_dim,)
            self.action_space = gym.spaces.Box(-1.0, 1.0, a_shape, np.float32)

    def observation(self, i: int) -> np.ndarray:
        return self.observations([i])[0]

    def observations(self, ids: Sequence[int]) -> np.ndarray:
        """The observations of envs ``ids``, stacked (a copy): one indexing over the batch, not one per env."""
        mode = self.config.observation
        if mode == "frame":
            return self.recent[list(ids), -1]
        k = self.new_frames if mode == "chunk" else self.frame_stack
        return self.recent[list(ids), -k:]

    # ------------------------------------------------------------------------------------ actions
    def parse_action(self, action: Any) -> Any:
        """Validate one env's action; returns the skill text or a (new_frames, action_dim) float array."""
        mode = self.config.action_mode
        if mode == "skill":
            return self.skills[skill_index(action, len(self.skills))]
        if mode == "text":
            if not isinstance(action, str):
                raise TypeError(f"text action must be a str (one of the skills), got {type(action).__name__}")
            key = normalize_text(action)
            for skill in self.skills:
                if normalize_text(skill) == key:
                    return skill
            valid = "\n  ".join(self.skills)
            raise ValueError(f"unknown skill {action!r}; valid skills are:\n  {valid}")
        return continuous_action(action, self.new_frames, self.model.config.action_dim)

    def model_action(self, parsed: list[Any]) -> Any:
        """The batch's parsed actions in the model's action format."""
        both = self.model.config.action_type == "both"
        if self.config.action_mode == "continuous":
            vec = torch.from_numpy(np.stack(parsed)).to(self.device)
            return {"vector": vec} if both else vec
        return {"text": list(parsed)} if both else list(parsed)

    # -------------------------------------------------------------------------------------- reset
    def seed(self, i: int, seed: int | None) -> None:
        self.np_randoms[i], _ = seeding.np_random(seed)

    def reset(self, ids: Sequence[int], options: Sequence[dict | None]) -> list[dict]:
        """Start new episodes for envs `ids` (their np_randoms must be set); returns reset infos."""
        ids = list(ids)
        self._check_open()
        starts, seeds, infos = [], [], []
        for i, opts in zip(ids, options):
            opts = dict(opts or {})
            unknown = set(opts) - set(RESET_OPTIONS)
            if unknown:
                raise ValueError(f"unknown reset options {sorted(unknown)}; valid: {', '.join(RESET_OPTIONS)}")
            rng = self.np_randoms[i]
            task_name = opts.get("task", self.config.task)
            frames, index, source = self._pick_start(rng, opts, task_name)
            episode_seed = int(rng.integers(0, 2**63 - 1))
            instruction = opts.get("instruction", self.config.instruction)
            info: dict[str, Any] = {"start_index": index, "start_source": source, "episode_seed": episode_seed}
            if task_name is not None:
                spec = task_spec(task_name, episode_seed)
                instruction = instruction if "instruction" in opts or self.config.instruction else spec.instruction
                info.update(task=task_name, plan=tuple(spec.plan))
            if instruction is not None and not isinstance(instruction, str):
                raise TypeError(f"instruction must be a str, got {type(instruction).__name__}")
            self.instructions[i] = instruction
            info["instruction"] = instruction
            starts.append(frames)
            seeds.append(episode_seed)
            infos.append(info)
        self.imagination.reset(ids, starts, seeds)
        if self.heads_history is not None:
            self.heads_history.reset(ids, starts)
        for i, f in zip(ids, starts):
            padded = np.concatenate([np.repeat(f[:1], max(self.keep_frames - len(f), 0), axis=0), f])
            self.recent[i] = padded[-self.keep_frames:]
            self.step_counts[i] = 0
            self.render_frames[i] = [f[-1].copy()] if self.config.render_mode == "rgb_array_list" else []
        return infos

    def _pick_start(self, rng: np.random.Generator, opts: dict, task: str | None) -> tuple[np.ndarray, int, str]:
        if "start_frames" in opts:
            pool, source, tasks = frames_set(opts["start_frames"], self.frame_size, "start_frames"), "user", None
        elif "episode" in opts:
            path = opts["episode"]
            pool = frames_set(episode_start_frames(path, opts.get("episode_key")), self.frame_size, str(path))
            source, tasks = str(path), None
        else:
            pool, source, tasks = self.start_set.frames, self.start_set.source, self.start_set.tasks
        candidates = np.arange(len(pool))
        if tasks is not None and task is not None and np.any(tasks == task):
            candidates = np.flatnonzero(tasks == task)
        if "start_index" in opts:
            index = int(opts["start_index"])
            if not 0 <= index < len(pool):
                raise ValueError(f"start_index {index} out of range for {len(pool)} start frame sets")
        else:
            index = int(candidates[rng.integers(len(candidates))])
        return pool[index], index, source

    # --------------------------------------------------------------------------------------- step
    def step(self, ids: Sequence[int], actions: Sequence[Any]) -> StepBatch:
        """Advance envs `ids` by one chunk with their actions (validated first: a bad action changes nothing)."""
        ids = self._check_step(ids, len(actions), "actions")
        t0 = time.perf_counter()
        return self._advance(ids, [self.parse_action(a) for a in actions], t0)

    def step_parsed(self, ids: Sequence[int], parsed: Sequence[Any]) -> StepBatch:
        """`step` with the actions as `parse_action` returned them, for a caller that validated them already: the
        vector env checks every action before it resets any env (under cProfile, parsing 256 continuous actions twice
        took 4.7 ms a step)."""
        ids = self._check_step(ids, len(parsed), "parsed actions")
        return self._advance(ids, list(parsed), time.perf_counter())

    def _check_step(self, ids: Sequence[int], count: int, what: str) -> list[int]:
        ids = list(ids)
        self._check_open()
        if count != len(ids):
            raise ValueError(f"{count} {what} for {len(ids)} envs")
        if not self.imagination.started[ids].all():
            raise RuntimeError("call reset() before step()")
        return ids

    def _advance(self, ids: list[int], parsed: list[Any], t0: float) -> StepBatch:
        """The step itself, its actions parsed since ``t0`` (the "action" phase of its timings)."""
        n = len(ids)
        t1 = time.perf_counter()
        chunk = self.imagination.step(ids, self.model_action(parsed))
        frames = chunk.frames.cpu().numpy()
        fast_loss: list[float | None] = [None] * n
        rolled_back = [False] * n
        if chunk.updates:
            fast_loss = [u.loss if u.steps or u.rolled_back else None for u in chunk.updates]
            rolled_back = [u.rolled_back for u in chunk.updates]
        t2 = time.perf_counter()
        reward = np.zeros(n, np.float32)
        terminated = np.zeros(n, bool)
        success = success_prob = None
        if self.heads is not None:
            pred = self.heads_history.predict(ids, frames, [self.instructions[i] for i in ids])
            reward = pred["reward"].astype(np.float32)
            terminated = pred["terminated"] > self.config.termination_threshold
            success_prob = pred["success"]
            success = success_prob > 0.5
        to_go = pred.get("to_go") if self.heads is not None else None
        t3 = time.perf_counter()
        self.step_counts[ids] += 1
        limit = self.config.max_episode_steps
        truncated = (self.step_counts[ids] >= limit) & ~terminated if limit else np.zeros(n, bool)
        # the batch's recent frames in one copy (per env, 256 envs took 24 ms a step on a 2-core CPU)
        keep = self.keep_frames
        self.recent[ids] = (frames if frames.shape[1] >= keep
                            else np.concatenate([self.recent[ids], frames], axis=1))[:, -keep:]
        if self.config.render_mode == "rgb_array_list":
            for k, i in enumerate(ids):
                self.render_frames[i].extend(frames[k])
        phases = chunk.timings
        timings = StepTimings(t1 - t0, phases["denoise"], phases["decode"], phases["fast_update"], t3 - t2,
                              time.perf_counter() - t0)
        return StepBatch(ids, self.observations(ids), frames, reward, terminated, truncated, fast_loss, rolled_back,
                         success, success_prob, parsed, self.step_counts[ids].copy(), timings, to_go)

    def fork(self, src_ids: Sequence[int], dst_ids: Sequence[int]) -> None:
        """Env ``dst_ids[k]`` continues exactly as env ``src_ids[k]`` would (imagined state, observations,
        instruction, step count), so a planner can try several action sequences from one state."""
        src, dst = list(src_ids), list(dst_ids)
        self.imagination.fork(src, dst)
        if self.heads_history is not None:
            self.heads_history.fork(src, dst)
        recent, counts = self.recent[src].copy(), self.step_counts[src].copy()
        instructions = [self.instructions[i] for i in src]
        self.recent[dst], self.step_counts[dst] = recent, counts
        for i, text in zip(dst, instructions):
            self.instructions[i] = text

    # ----------------------------------------------------------------------------------- render
    def render(self, i: int) -> np.ndarray | list[np.ndarray] | None:
        mode = self.config.render_mode
        if mode == "rgb_array":
            return self.recent[i, -1].copy()
        if mode == "rgb_array_list":
            frames, self.render_frames[i] = self.render_frames[i], []
            return frames
        return None

    def episode_nbytes(self) -> int:
        """Bytes of per-episode state held now (memories, render buffers); constant after reset()."""
        n = self.memory.nbytes() if self.memory is not None else 0
        return n + sum(f.nbytes for frames in self.render_frames for f in frames)

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("this SlowFastVGen-v0 env is closed")

    def close(self) -> None:
        """Free the episodic memories and buffers (the shared model stays loaded)."""
        self.closed = True
        self.imagination.memory = None
        self.render_frames = [[] for _ in range(self.num_envs)]
