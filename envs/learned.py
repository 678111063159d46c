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
env i of the batched vector env (``envs.vector``) with seed s reproduces this env with seed s + i.
Both envs share :class:`ImaginationCore`, which runs N envs in one denoiser batch with one Temp-LoRA
memory per env (`worldmodel.batched_lora`).
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
import weakref
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import seeding

import worldmodel
from worldmodel.batched_lora import BatchedTempLoRA
from worldmodel.config import PRESETS, TempLoRAConfig
from worldmodel.diffusion import make_sampler, sample_new_frames
from worldmodel.heads import RewardHeads
from worldmodel.model import Chunk, SlowFastVGen, pad_context

ENV_ID = "SlowFastVGen-v0"
DEFAULT_MODEL_DIR = Path(worldmodel.__file__).resolve().parent / "weights" / "default"
RESTORE_HINT = ("Restore the shipped default model with `git checkout worldmodel/weights` (from the repository "
                "root), or pass model='tiny' (a preset) or a folder written by SlowFastVGen.save_pretrained.")
START_FRAMES_FILE = "start_frames.npz"
SKILLS_FILE = "skills.json"
HEADS_DIR = "heads"
ACTION_MODES = ("skill", "text", "continuous")
OBSERVATIONS = ("frame", "chunk", "stack")
TEMP_LORA_VARIANTS = ("local", "full_sequence", "original")
MAX_H5_STARTS = 64

_MODEL_CACHE: "weakref.WeakValueDictionary[tuple[str, str], SlowFastVGen]" = weakref.WeakValueDictionary()


# ------------------------------------------------------------------------------------------ options
@dataclass
class LearnedEnvConfig:
    """Construction options of ``SlowFastVGen-v0`` (single and vector env keyword arguments).

    - ``model``: "default" (the shipped model), a preset name ("tiny", ...), a local model folder, or
      a ``SlowFastVGen`` instance (shared, not copied).
    - ``task`` / ``instruction``: the episode's task (``envs.real.tasks`` name; gives the instruction)
      or instruction text, fed to the reward heads. ``reset(options=...)`` may override both.
    - ``action_mode``, ``skills``, ``continuous_shape``: see the module docstring.
    - ``denoise_steps`` (default: the model's ``sample_steps``), ``guidance_scale``.
    - ``temp_lora``: True (the model's variant), False, a variant name or a ``TempLoRAConfig``;
      ``temp_lora_steps``: fast steps per chunk (default: the config's); ``fast_batch_size``: at most
      this many envs per fast-update forward/backward (default 32; bounds memory at large N, same
      result: the small model's one-shot update of 256 envs ran out of an H100's 80 GB).
    - ``observation``: "frame" (last frame, H x W x 3), "chunk" (the chunk's frames) or "stack" (the
      last ``frame_stack`` frames, default ``context_frames``).
    - ``start_frames``: uint8 frames (H,W,3), (T,H,W,3) or a set (M,T,H,W,3), a ``.npz`` (key
      ``frames``) or an ``.h5`` episode file (first frames of up to 64 episodes); default: the model
      folder's ``start_frames.npz``, else first frames of the synthetic panning world.
    - ``heads``: None (the model folder's ``heads/`` if present), False, a folder or ``RewardHeads``.
    """

    model: Any = "default"
    task: str | None = None
    instruction: str | None = None
    action_mode: str = "skill"
    skills: Sequence[str] | None = None
    continuous_shape: str = "chunk"
    denoise_steps: int | None = None
    guidance_scale: float | None = None
    temp_lora: Any = True
    temp_lora_steps: int | None = None
    fast_batch_size: int | None = 32
    device: str | None = None
    render_mode: str | None = None
    render_fps: int = 8
    max_episode_steps: int | None = 200
    observation: str = "frame"
    frame_stack: int | None = None
    start_frames: Any = None
    heads: Any = None
    termination_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"unknown action_mode {self.action_mode!r}; choose one of {ACTION_MODES}")
        if self.observation not in OBSERVATIONS:
            raise ValueError(f"unknown observation {self.observation!r}; choose one of {OBSERVATIONS}")
        if self.continuous_shape not in ("chunk", "frame"):
            raise ValueError(f"continuous_shape must be 'chunk' or 'frame', got {self.continuous_shape!r}")
        if self.render_mode not in (None, "rgb_array", "rgb_array_list"):
            raise ValueError(f"unsupported render_mode {self.render_mode!r}; use 'rgb_array' or 'rgb_array_list'")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {self.max_episode_steps}")
        if self.denoise_steps is not None and self.denoise_steps < 1:
            raise ValueError(f"denoise_steps must be >= 1, got {self.denoise_steps}")
        if self.fast_batch_size is not None and self.fast_batch_size < 1:
            raise ValueError(f"fast_batch_size must be >= 1 or None, got {self.fast_batch_size}")
        if self.temp_lora_steps is not None and self.temp_lora_steps < 0:
            raise ValueError(f"temp_lora_steps must be >= 0, got {self.temp_lora_steps}")
        if not (isinstance(self.temp_lora, (bool, TempLoRAConfig)) or self.temp_lora in TEMP_LORA_VARIANTS):
            raise ValueError(f"temp_lora must be True, False, a TempLoRAConfig or one of {TEMP_LORA_VARIANTS}, "
                             f"got {self.temp_lora!r}")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "LearnedEnvConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown SlowFastVGen-v0 options {unknown}; valid options: {sorted(known)}")
        return cls(**kwargs)


@dataclass(frozen=True)
class StepTimings:
    """Wall-clock seconds of one step's phases (for the whole batch in a vector env).

    Timings are measurements, not env state: they take no part in equality, so two seeded runs
    compare equal (Gymnasium's determinism check compares infos).
    """

    action: float = field(default=0.0, compare=False)
    denoise: float = field(default=0.0, compare=False)
    decode: float = field(default=0.0, compare=False)
    fast_update: float = field(default=0.0, compare=False)
    heads: float = field(default=0.0, compare=False)
    total: float = field(default=0.0, compare=False)

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class SkillText(gym.spaces.Text):
    """A ``Text`` space over a skill vocabulary: samples are skills; `contains` accepts them
    case- and spacing-insensitively."""

    def __init__(self, skills: Sequence[str], seed: int | np.random.Generator | None = None):
        self.skills = tuple(skills)
        charset = "".join(sorted(set("".join(self.skills)) | set(" ")))
        super().__init__(max_length=max(map(len, self.skills)), min_length=min(map(len, self.skills)),
                         charset=charset, seed=seed)
        self._lookup = {normalize_text(s): s for s in self.skills}

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        return self.skills[int(self.np_random.integers(len(self.skills)))]

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and normalize_text(x) in self._lookup

    def canonical(self, x: str) -> str:
        return self._lookup[normalize_text(x)]

    def __repr__(self) -> str:
        return f"SkillText({len(self.skills)} skills)"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, SkillText) and other.skills == self.skills

    def __hash__(self) -> int:
        return hash(("SkillText", self.skills))


def normalize_text(text: str) -> str:
    return " ".join(str(text).lower().split())


# ------------------------------------------------------------------------------------------ loading
def resolve_model(model: Any, device: str | torch.device | None = None) -> tuple[SlowFastVGen, Path | None]:
    """(model, its folder or None) from "default", a preset name, a folder or an instance."""
    if isinstance(model, SlowFastVGen):
        if device is not None and torch.device(device) != model.device:
            model.to(device)
        return model, None
    if not isinstance(model, (str, Path)):
        raise TypeError("model must be 'default', a preset name, a folder or a SlowFastVGen, "
                        f"got {type(model).__name__}")
    dev = str(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if str(model) == "default":
        folder = DEFAULT_MODEL_DIR
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"the shipped default model is missing ({folder} has no config.json). "
                                    f"{RESTORE_HINT}")
    elif str(model) in PRESETS:
        key = (f"preset:{model}", dev)
        instance = _MODEL_CACHE.get(key)  # a strong reference: the cache only holds weak ones
        if instance is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # an untrained preset is the same network in every env
                instance = SlowFastVGen.from_preset(str(model)).to(dev).eval()
            _MODEL_CACHE[key] = instance
        return instance, None
    else:
        folder = Path(model)
        if not folder.is_dir():
            raise FileNotFoundError(f"model {str(model)!r} is neither a preset ({sorted(PRESETS)}), 'default', nor a "
                                    "model folder")
    key = (str(folder.resolve()), dev)
    instance = _MODEL_CACHE.get(key)  # a strong reference: the cache only holds weak ones
    if instance is None:
        hint = RESTORE_HINT if folder == DEFAULT_MODEL_DIR else ""
        instance = SlowFastVGen.from_pretrained(folder, device=dev, restore_hint=hint)
        _MODEL_CACHE[key] = instance
    return instance, folder


def _frames_set(frames: Any, frame_size: int, name: str) -> np.ndarray:
    """Validate uint8 start frames -> (M, T, H, W, 3)."""
    arr = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if arr.dtype != np.uint8:
        raise TypeError(f"{name} must be uint8 frames, got dtype {arr.dtype}")
    while arr.ndim < 5:
        arr = arr[None]
    if arr.ndim != 5 or arr.shape[-1] != 3 or arr.shape[2:4] != (frame_size, frame_size) or 0 in arr.shape:
        raise ValueError(f"{name} must be (H, W, 3), (T, H, W, 3) or (M, T, H, W, 3) uint8 frames at the model's "
                         f"{frame_size}x{frame_size}, got shape {tuple(np.shape(frames))}")
    return arr


def episode_start_frames(path: str | Path, key: str | None = None) -> np.ndarray:
    """First frame(s) of h5 episodes (``envs.episodes`` schema): (M, 1, H, W, 3)."""
    from envs.episodes import list_episodes, read_episode

    keys = [key] if key is not None else list_episodes(path)[:MAX_H5_STARTS]
    if not keys:
        raise ValueError(f"{path}: no episodes")
    return np.stack([read_episode(path, k)["frames"][:1] for k in keys])


def synthetic_start_frames(frame_size: int, num: int = 16, seed: int = 0) -> np.ndarray:
    """First frames of synthetic panning-world episodes (for models without shipped start frames)."""
    from envs.synthetic import panning_episode

    return np.stack([panning_episode(seed + i, ["stay"], frame_size=frame_size, chunk_len=1)["frames"][:1]
                     for i in range(num)])


@dataclass
class StartSet:
    frames: np.ndarray  # (M, T, H, W, 3) uint8
    tasks: np.ndarray | None = None  # (M,) task names, when the set records them
    source: str = ""


def load_start_set(spec: Any, folder: Path | None, frame_size: int) -> StartSet:
    if spec is None:
        if folder is not None and (folder / START_FRAMES_FILE).is_file():
            spec = folder / START_FRAMES_FILE
        else:
            if folder is not None:
                warnings.warn(f"{folder} has no {START_FRAMES_FILE}: episodes start from synthetic panning-world "
                              "frames; pass start_frames=... (frames, .npz or .h5) for real ones", stacklevel=3)
            return StartSet(synthetic_start_frames(frame_size), None, "synthetic")
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"start frames file not found: {path}")
        if path.suffix in (".h5", ".hdf5"):
            return StartSet(_frames_set(episode_start_frames(path), frame_size, str(path)), None, str(path))
        with np.load(path, allow_pickle=False) as data:
            if "frames" not in data:
                raise ValueError(f"{path} has no 'frames' array (uint8 (N, T, H, W, 3))")
            tasks = np.asarray(data["tasks"]).astype(str) if "tasks" in data else None
            return StartSet(_frames_set(data["frames"], frame_size, str(path)), tasks, str(path))
    return StartSet(_frames_set(spec, frame_size, "start_frames"), None, "user")


def resolve_skills(skills: Sequence[str] | None, folder: Path | None) -> tuple[str, ...]:
    """The skill vocabulary: given, else the model folder's, else the real scene's SKILLS."""
    if skills is None and folder is not None:
        if (folder / SKILLS_FILE).is_file():
            import json

            skills = json.loads((folder / SKILLS_FILE).read_text())
        elif (folder / START_FRAMES_FILE).is_file():
            with np.load(folder / START_FRAMES_FILE, allow_pickle=False) as data:
                if "skills" in data:
                    skills = [str(s) for s in data["skills"]]
    if skills is None:
        try:
            from envs.real.skills import SKILLS
        except ImportError as err:
            raise ValueError("no skill vocabulary: the model has none saved and envs.real is unavailable; "
                             "pass skills=[...]") from err
        skills = SKILLS
    skills = tuple(skills)
    if not skills or not all(isinstance(s, str) and s.strip() for s in skills):
        raise ValueError(f"skills must be a non-empty sequence of non-empty strings, got {skills!r}")
    if len({normalize_text(s) for s in skills}) != len(skills):
        raise ValueError("skills must be distinct (ignoring case and spacing)")
    return skills


def resolve_heads(spec: Any, folder: Path | None, device: torch.device) -> RewardHeads | None:
    if spec is False:
        return None
    if spec is None:
        if folder is not None and (folder / HEADS_DIR).is_dir():
            return RewardHeads.from_pretrained(folder / HEADS_DIR, device)
        return None
    if isinstance(spec, RewardHeads):
        return spec.to(device)
    return RewardHeads.from_pretrained(spec, device)


# --------------------------------------------------------------------------------------- sampling
_SAMPLERS: "weakref.WeakKeyDictionary[SlowFastVGen, Any]" = weakref.WeakKeyDictionary()


def _sampler_template(model: SlowFastVGen) -> Any:
    """`make_sampler` once per model (building a diffusers scheduler from its config costs ~7 ms)."""
    if model not in _SAMPLERS:
        _SAMPLERS[model] = make_sampler(model.config, model.scheduler)
    return _SAMPLERS[model]


@torch.no_grad()
def sample_with_noise(model: SlowFastVGen, context: torch.Tensor, cond: torch.Tensor, noise: torch.Tensor,
                      steps: int, guidance_scale: float = 1.0, null: torch.Tensor | None = None) -> torch.Tensor:
    """`sample_new_frames` with per-env initial noise and a copy of a cached sampler (no from_config per step)."""
    sampler = copy.deepcopy(_sampler_template(model))
    return sample_new_frames(model.unet, sampler, context, noise.shape[2], cond, steps, null, guidance_scale,
                             noise=noise)


# ------------------------------------------------------------------------------------------- engine
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
    return info


class ImaginationCore:
    """N imagined envs sharing one model: batched denoising, decoding, Temp-LoRA and heads.

    Holds everything per env (RNGs, context latents, recent frames, step counts, instruction) and
    is driven by `SlowFastVGenEnv` (N = 1) and `envs.vector.SlowFastVGenVectorEnv`.
    """

    def __init__(self, num_envs: int, config: LearnedEnvConfig):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = n = num_envs
        self.config = cfg = config
        self.model, self.folder = resolve_model(cfg.model, cfg.device)
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
        self.steps = cfg.denoise_steps or mc.sample_steps
        self.guidance_scale = mc.guidance_scale if cfg.guidance_scale is None else cfg.guidance_scale
        self.memory = self._make_memory()
        self.frame_stack = cfg.frame_stack or self.context_frames
        self.keep_frames = max(self.new_frames, self.frame_stack)
        self._build_spaces()
        # per-env state
        s, c, h = self.frame_size, mc.latent_channels, mc.latent_size
        self.np_randoms: list[np.random.Generator | None] = [None] * n
        self.generators = [torch.Generator() for _ in range(n)]
        self.context = torch.zeros(n, c, self.context_frames, h, h, device=self.device)
        self.recent = np.zeros((n, self.keep_frames, s, s, 3), np.uint8)
        self.step_counts = np.zeros(n, np.int64)
        self.started = np.zeros(n, bool)
        self.instructions: list[str | None] = [None] * n
        self.render_frames: list[list[np.ndarray]] = [[] for _ in range(n)]
        self.closed = False

    def _make_memory(self) -> BatchedTempLoRA | None:
        spec = self.config.temp_lora
        if spec is False:
            return None
        base = self.model.config.temp_lora
        if isinstance(spec, TempLoRAConfig):
            tl = spec
        elif isinstance(spec, str):
            tl = dataclasses.replace(base, variant=spec)
        else:
            tl = base
        if self.config.temp_lora_steps is not None:
            tl = dataclasses.replace(tl, steps=self.config.temp_lora_steps)
        return BatchedTempLoRA(self.model, self.num_envs, tl, max_batch=self.config.fast_batch_size)

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
        mode = self.config.observation
        if mode == "frame":
            return self.recent[i, -1].copy()
        k = self.new_frames if mode == "chunk" else self.frame_stack
        return self.recent[i, -k:].copy()

    # ------------------------------------------------------------------------------------ actions
    def parse_action(self, action: Any) -> Any:
        """Validate one env's action; returns the skill text or a (new_frames, action_dim) float array."""
        mode = self.config.action_mode
        if mode == "skill":
            return self.skills[_skill_index(action, len(self.skills))]
        if mode == "text":
            if not isinstance(action, str):
                raise TypeError(f"text action must be a str (one of the skills), got {type(action).__name__}")
            key = normalize_text(action)
            for skill in self.skills:
                if normalize_text(skill) == key:
                    return skill
            valid = "\n  ".join(self.skills)
            raise ValueError(f"unknown skill {action!r}; valid skills are:\n  {valid}")
        return _continuous(action, self.new_frames, self.model.config.action_dim)

    def _cond(self, parsed: list[Any]) -> torch.Tensor:
        if self.config.action_mode == "continuous":
            vec = torch.from_numpy(np.stack(parsed)).to(self.device)
            action: Any = {"vector": vec} if self.model.config.action_type == "both" else vec
        else:
            action = {"text": list(parsed)} if self.model.config.action_type == "both" else list(parsed)
        return self.model.encode_action(action, len(parsed))

    # -------------------------------------------------------------------------------------- reset
    def seed(self, i: int, seed: int | None) -> None:
        self.np_randoms[i], _ = seeding.np_random(seed)

    def reset(self, ids: Sequence[int], options: Sequence[dict | None]) -> list[dict]:
        """Start new episodes for envs `ids` (their np_randoms must be set); returns reset infos."""
        ids = list(ids)
        self._check_open()
        starts, infos = [], []
        for i, opts in zip(ids, options):
            opts = dict(opts or {})
            unknown = set(opts) - {"start_frames", "episode", "episode_key", "start_index", "task", "instruction"}
            if unknown:
                raise ValueError(f"unknown reset options {sorted(unknown)}; valid: start_frames, episode, "
                                 "episode_key, start_index, task, instruction")
            rng = self.np_randoms[i]
            task_name = opts.get("task", self.config.task)
            frames, index, source = self._pick_start(rng, opts, task_name)
            episode_seed = int(rng.integers(0, 2**63 - 1))
            self.generators[i].manual_seed(episode_seed)
            instruction = opts.get("instruction", self.config.instruction)
            info: dict[str, Any] = {"start_index": index, "start_source": source, "episode_seed": episode_seed}
            if task_name is not None:
                spec = _task_spec(task_name, episode_seed)
                instruction = instruction if "instruction" in opts or self.config.instruction else spec.instruction
                info.update(task=task_name, plan=tuple(spec.plan))
            if instruction is not None and not isinstance(instruction, str):
                raise TypeError(f"instruction must be a str, got {type(instruction).__name__}")
            self.instructions[i] = instruction
            info["instruction"] = instruction
            starts.append(frames)
            infos.append(info)
        # Context latents (padded to context_frames) in one VAE batch.
        batch = torch.cat([pad_context(torch.from_numpy(f[None]), self.context_frames) for f in starts])
        with torch.no_grad():
            lat = self.model.encode_frames(batch)
        idx = torch.tensor(ids, device=self.device)
        self.context[idx] = lat.to(self.context)
        if self.memory is not None:
            self.memory.reset(ids, [self.generators[i] for i in ids])
        for i, f in zip(ids, starts):
            padded = np.concatenate([np.repeat(f[:1], max(self.keep_frames - len(f), 0), axis=0), f])
            self.recent[i] = padded[-self.keep_frames:]
            self.step_counts[i] = 0
            self.started[i] = True
            self.render_frames[i] = [f[-1].copy()] if self.config.render_mode == "rgb_array_list" else []
        return infos

    def _pick_start(self, rng: np.random.Generator, opts: dict, task: str | None) -> tuple[np.ndarray, int, str]:
        if "start_frames" in opts:
            pool, source, tasks = _frames_set(opts["start_frames"], self.frame_size, "start_frames"), "user", None
        elif "episode" in opts:
            path = opts["episode"]
            pool = _frames_set(episode_start_frames(path, opts.get("episode_key")), self.frame_size, str(path))
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
        ids = list(ids)
        self._check_open()
        if len(actions) != len(ids):
            raise ValueError(f"{len(actions)} actions for {len(ids)} envs")
        for i in ids:
            if not self.started[i]:
                raise RuntimeError("call reset() before step()")
        t0 = time.perf_counter()
        parsed = [self.parse_action(a) for a in actions]
        n, mc = len(ids), self.model.config
        idx = torch.tensor(ids, device=self.device)
        with torch.no_grad():
            cond = self._cond(parsed)
            null = self.model.action_encoder.null(n) if self.guidance_scale != 1.0 else None
        shape = (1, mc.latent_channels, self.new_frames, mc.latent_size, mc.latent_size)
        noise = torch.cat([torch.randn(shape, generator=self.generators[i]) for i in ids]).to(self.device)
        t1 = time.perf_counter()
        context = self.context[idx]
        with torch.no_grad():
            if self.memory is not None:
                with self.memory.applied(ids):
                    new = sample_with_noise(self.model, context, cond, noise, self.steps, self.guidance_scale, null)
            else:
                new = sample_with_noise(self.model, context, cond, noise, self.steps, self.guidance_scale, null)
        t2 = time.perf_counter()
        with torch.no_grad():
            frames_t = self.model.decode_latents(new)
        frames = frames_t.cpu().numpy()
        t3 = time.perf_counter()
        latents = torch.cat([context, new], dim=2)
        fast_loss: list[float | None] = [None] * n
        rolled_back = [False] * n
        if self.memory is not None:
            updates = self.memory.update(Chunk(frames_t, latents, self.context_frames), ids,
                                         [self.generators[i] for i in ids])
            fast_loss = [u.loss if u.steps or u.rolled_back else None for u in updates]
            rolled_back = [u.rolled_back for u in updates]
        self.context[idx] = latents[:, :, -self.context_frames:]
        t4 = time.perf_counter()
        reward = np.zeros(n, np.float32)
        terminated = np.zeros(n, bool)
        success = success_prob = None
        if self.heads is not None:
            pred = self.heads.predict(frames, [self.instructions[i] for i in ids])
            reward = pred["reward"].astype(np.float32)
            terminated = pred["terminated"] > self.config.termination_threshold
            success_prob = pred["success"]
            success = success_prob > 0.5
        t5 = time.perf_counter()
        self.step_counts[ids] += 1
        limit = self.config.max_episode_steps
        truncated = (self.step_counts[ids] >= limit) & ~terminated if limit else np.zeros(n, bool)
        obs = []
        for k, i in enumerate(ids):
            self.recent[i] = np.concatenate([self.recent[i], frames[k]])[-self.keep_frames:]
            if self.config.render_mode == "rgb_array_list":
                self.render_frames[i].extend(frames[k])
            obs.append(self.observation(i))
        timings = StepTimings(t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, time.perf_counter() - t0)
        return StepBatch(ids, np.stack(obs), frames, reward, terminated, truncated, fast_loss, rolled_back,
                         success, success_prob, parsed, self.step_counts[ids].copy(), timings)

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
        self.memory = None
        self.render_frames = [[] for _ in range(self.num_envs)]


def _skill_index(action: Any, num: int) -> int:
    value = action
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.size != 1 or value.ndim > 1:
            raise ValueError(f"skill action must be a single integer, got an array of shape {value.shape}")
        if value.dtype.kind not in "iu":
            raise TypeError(f"skill action must be an integer, got dtype {value.dtype}")
        value = int(value.reshape(()))
    elif isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"skill action must be an integer in [0, {num}), got {type(action).__name__} {action!r}")
    value = int(value)
    if not 0 <= value < num:
        raise ValueError(f"skill action {value} out of range: expected an integer in [0, {num})")
    return value


def _continuous(action: Any, new_frames: int, action_dim: int) -> np.ndarray:
    if isinstance(action, torch.Tensor):
        action = action.detach().cpu().numpy()
    if isinstance(action, (str, bytes, dict)) or action is None:
        raise TypeError(f"continuous action must be a float array, got {type(action).__name__}")
    arr = np.asarray(action)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"continuous action must be a float array, got dtype {arr.dtype}")
    if arr.shape == (action_dim,):
        arr = np.broadcast_to(arr, (new_frames, action_dim))
    elif arr.shape != (new_frames, action_dim):
        raise ValueError(f"continuous action has shape {arr.shape}; expected ({action_dim},) or "
                         f"({new_frames}, {action_dim})")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError("continuous action contains NaN or inf")
    if np.abs(arr).max() > 1.0 + 1e-6:
        raise ValueError(f"continuous action out of range: values must lie in [-1, 1], got max |a| = "
                         f"{np.abs(arr).max():.4g}")
    return np.ascontiguousarray(arr)


def _task_spec(name: str, seed: int):
    try:
        from envs.real.tasks import get_task
    except ImportError as err:
        raise ValueError(f"task {name!r} needs the real task suite (envs.real), which is unavailable; "
                         "pass instruction=... instead") from err
    return get_task(name).build(np.random.default_rng(seed))


# ---------------------------------------------------------------------------------------- the env
class SlowFastVGenEnv(gym.Env):
    """The world model as a Gymnasium env; options: :class:`LearnedEnvConfig` (module docstring)."""

    metadata = {"render_modes": ["rgb_array", "rgb_array_list"], "render_fps": 8}

    def __init__(self, **kwargs: Any):
        self.config = cfg = LearnedEnvConfig.from_kwargs(**kwargs)
        self.core = ImaginationCore(1, cfg)
        self.render_mode = cfg.render_mode
        self.metadata = {**self.metadata, "render_fps": cfg.render_fps}
        self.observation_space = self.core.observation_space
        self.action_space = self.core.action_space

    @property
    def model(self) -> SlowFastVGen:
        return self.core.model

    @property
    def memory(self) -> BatchedTempLoRA | None:
        """The episode's Temp-LoRA memory (one env of a BatchedTempLoRA), None when off."""
        return self.core.memory

    @property
    def skills(self) -> tuple[str, ...]:
        return self.core.skills

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode: pick real start frames, reset Θ and seed all episode randomness.

        ``options``: ``start_frames`` (uint8 frames), ``episode`` (+ ``episode_key``: an h5 episode
        file, its first frame), ``start_index`` (into the start set), ``task``, ``instruction``.
        """
        super().reset(seed=seed)
        self.core.np_randoms[0] = self.np_random
        info = self.core.reset([0], [options])[0]
        return self.core.observation(0), info

    def step(self, action: Any):
        out = self.core.step([0], [action])
        info = step_info(out, 0)
        return out.obs[0], float(out.reward[0]), bool(out.terminated[0]), bool(out.truncated[0]), info

    def render(self):
        return self.core.render(0)

    def episode_nbytes(self) -> int:
        return self.core.episode_nbytes()

    def close(self) -> None:
        self.core.close()
        super().close()
