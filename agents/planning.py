"""Planning over the world model: random shooting and CEM over skill sequences, replanned every chunk.

`WorldModelPlanner` keeps one imagination core (`worldmodel.Imagination`) of ``1 + candidates`` envs:

- env 0 is the agent's belief about the real episode: it starts from the real reset frame, and after each
  real chunk it learns that chunk (the core's ``teacher_frames``: Temp-LoRA Θ fast-learns the real frames,
  the context slides to them). Its memory of the episode is what Temp-LoRA carries.
- to plan, env 0 is forked into envs 1..K (context, Θ and its Adam state, RNG: `Imagination.fork`) and
  every candidate skill sequence is imagined chunk by chunk, all K in ONE denoiser batch per chunk.
- the learned heads (`worldmodel.heads.RewardHeads`) judge each imagined chunk against the instruction;
  a sequence's score is its discounted sum of ``reward_weight * reward + success_weight * skill success
  + terminated_weight * P(task done)``, each step weighted by the chance that the task was not done before.
- random shooting samples K sequences (all of them when there are at most K); CEM refits a categorical
  distribution per step of the horizon to the best ``elites`` for ``iterations`` rounds. Both start from
  the previous plan, shifted by one chunk.

Only the first skill of the best sequence is executed; the real chunk it produced is observed and the
planner plans again (model-predictive control). ``temp_lora=False`` plans with Φ alone (the context
still follows the real frames). Because a forked branch draws the same noise as env 0, the imagined
chunk of the executed skill is exactly env 0's prediction before it learns the real chunk
(``last_imagined``, for videos of imagined vs real).

A planner that finds no sequence predicted to finish the task within its horizon says so
(`PlanResult.feasible`, ``message``); with ``give_up_after`` it stops the episode after that many such
plans in a row instead of acting on a guess. Instructions with words no task uses are refused at reset
(`agents.real_scene.UnknownInstruction`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import torch

from envs.real.skills import SKILLS
from worldmodel.imagination import Imagination
from worldmodel.memory import BatchedTempLoRA

from .real_scene import ExpertAgent, RandomSkillAgent, check_instruction

METHODS = ("shooting", "cem")


@dataclass
class PlannerConfig:
    method: str = "cem"  # shooting | cem
    horizon: int = 3  # skills per imagined sequence
    candidates: int = 64  # sequences imagined together (one batch)
    iterations: int = 3  # CEM rounds (shooting: one)
    elites: int = 8  # CEM: sequences the distribution is refitted to
    smoothing: float = 0.1  # CEM: share of the uniform distribution mixed into each refit
    warm_start: float = 0.5  # weight of the previous plan (shifted) in the first distribution
    discount: float = 0.9
    reward_weight: float = 1.0
    success_weight: float = 0.0
    terminated_weight: float = 1.0
    temp_lora: bool = True  # env 0 learns each real chunk; candidates carry its Θ
    learn_in_imagination: bool = False  # candidates also fast-learn their imagined chunks (slower)
    denoise_steps: int | None = None
    guidance_scale: float | None = None
    fast_batch_size: int | None = 32
    feasible_threshold: float = 0.5  # P(done within the horizon) of the best plan below this: "no plan found"
    give_up_after: int | None = None  # stop after this many infeasible plans in a row (None: never)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown planning method {self.method!r}; choose one of {METHODS}")
        if min(self.horizon, self.candidates, self.iterations) < 1:
            raise ValueError(f"horizon, candidates and iterations must be >= 1: {self}")
        if not 1 <= self.elites <= self.candidates:
            raise ValueError(f"elites must be in [1, candidates]: {self}")
        if not (0.0 <= self.smoothing <= 1.0 and 0.0 <= self.warm_start <= 1.0):
            raise ValueError(f"smoothing and warm_start must be in [0, 1]: {self}")


@dataclass
class Imagined:
    """K imagined skill sequences: heads' judgements per chunk (K, H), frames if kept (K, H, Tn, h, w, 3)."""

    sequences: np.ndarray
    reward: np.ndarray
    success: np.ndarray
    terminated: np.ndarray
    frames: np.ndarray | None = None


@dataclass
class PlanResult:
    sequence: np.ndarray  # the best skill sequence (H,)
    score: float
    done_prob: float  # predicted probability that the task is done within the horizon
    feasible: bool
    evaluated: int  # sequences imagined
    batches: int  # batched imagination steps (each one denoiser batch of all candidates)
    seconds: float
    message: str = ""


class WorldModelPlanner:
    """MPC over a world model's imagination, scored by reward heads; see the module docstring.

    Use as an agent in the real scene (`agents.real_scene.run_real_episode`): ``reset(frame, info)``,
    ``act()``, ``observe(skill, frames, info)``; or directly: ``start(frames, instruction, seed)``,
    ``plan()``, ``imagine(sequences)``.
    """

    def __init__(self, model: Any, heads: Any, config: PlannerConfig | None = None,
                 skills: Sequence[str] = SKILLS):
        self.config = cfg = config or PlannerConfig()
        if model.config.action_type == "vector":
            raise ValueError("planning over skills needs a model that reads language actions; this model's "
                             "action_type is 'vector'")
        if heads is None:
            raise ValueError("the planner scores imagined chunks with reward heads; pass heads (see agents.heads)")
        self.model, self.heads, self.skills = model, heads, tuple(skills)
        n = 1 + cfg.candidates
        memory = None
        if cfg.temp_lora:
            memory = BatchedTempLoRA(model, n, model.config.temp_lora, max_batch=cfg.fast_batch_size)
        self.core = Imagination(model, n, memory, cfg.denoise_steps, cfg.guidance_scale)
        self.model.action_encoder.embed_texts(list(self.skills))  # cache the vocabulary once
        self.name = f"{cfg.method} planner" + ("" if cfg.temp_lora else " (no Temp-LoRA)")
        self.instruction: str | None = None
        self.rng = np.random.default_rng(cfg.seed)
        self.previous: np.ndarray | None = None
        self.last_imagined: np.ndarray | None = None
        self.last_plan: PlanResult | None = None
        self.plans: list[PlanResult] = []
        self.notes: list[str] = []
        self.stop_reason: str | None = None
        self._infeasible = 0

    # ------------------------------------------------------------------------------- agent protocol
    def reset(self, frame: np.ndarray, info: dict) -> None:
        """A real episode starts: its reset frame and the scene's reset info (instruction, seed)."""
        self.start(np.asarray(frame)[None], info["instruction"], int(info.get("seed", 0)))

    def act(self) -> int | None:
        result = self.plan()
        if not result.feasible:
            self._infeasible += 1
            if self.config.give_up_after is not None and self._infeasible >= self.config.give_up_after:
                self.stop_reason = f"gave up: {result.message}"
                self.notes.append(self.stop_reason)
                return None
        else:
            self._infeasible = 0
        return int(result.sequence[0])

    @torch.no_grad()
    def observe(self, skill: int, frames: np.ndarray, info: dict | None = None) -> None:
        """The real chunk that ``skill`` produced: env 0 predicts it (kept as ``last_imagined``), then learns
        it (Temp-LoRA) and continues from the real frames."""
        frames = np.asarray(frames)
        new = self.model.config.new_frames
        if frames.shape[0] != new:
            raise ValueError(f"the real chunk has {frames.shape[0]} frames but the model makes {new} per chunk: run the "
                             f"scene with chunk_len={new}")
        chunk = self.core.step([0], self._action([self.skills[int(skill)]]), teacher_frames=frames[None])
        self.last_imagined = chunk.frames[0].cpu().numpy()
        if self.previous is not None and len(self.previous) and int(self.previous[0]) == int(skill):
            self.previous = self.previous[1:]  # what is left of the plan, for the next warm start
        else:
            self.previous = None

    # ------------------------------------------------------------------------------------ planning
    def start(self, frames: Any, instruction: str, seed: int = 0) -> None:
        """Begin an episode from real frames ((T, H, W, 3) uint8) under ``instruction``."""
        self.instruction = check_instruction(instruction)
        self.core.reset([0], [np.asarray(frames)], seeds=[int(seed)])
        self.rng = np.random.default_rng([self.config.seed, int(seed)])
        self.previous, self.last_imagined, self.last_plan = None, None, None
        self.plans, self.notes, self.stop_reason, self._infeasible = [], [], None, 0

    def _action(self, texts: list[str]) -> Any:
        return {"text": texts} if self.model.config.action_type == "both" else texts

    @torch.no_grad()
    def imagine(self, sequences: Any, keep_frames: bool = False) -> Imagined:
        """Imagine skill sequences (K, H) from env 0's state, all K in one batch per chunk, and judge each
        chunk with the heads against the instruction."""
        if self.instruction is None:
            raise RuntimeError("start() or reset() the planner before planning")
        seqs = np.asarray(sequences, np.int64)
        if seqs.ndim != 2 or not 1 <= len(seqs) <= self.config.candidates:
            raise ValueError(f"sequences must be (K, H) with 1 <= K <= {self.config.candidates}, got {seqs.shape}")
        if seqs.min() < 0 or seqs.max() >= len(self.skills):
            raise ValueError(f"skill ids must be in [0, {len(self.skills)})")
        k, horizon = seqs.shape
        ids = list(range(1, k + 1))
        self.core.fork([0] * k, ids)
        out = {key: np.zeros((k, horizon), np.float32) for key in ("reward", "success", "terminated")}
        frames = [] if keep_frames else None
        texts = [self.instruction] * k
        for h in range(horizon):
            chunk = self.core.step(ids, self._action([self.skills[s] for s in seqs[:, h]]),
                                   learn=self.config.learn_in_imagination)
            pred = self.heads.predict(chunk.frames, texts)
            for key in out:
                out[key][:, h] = pred[key]
            if frames is not None:
                frames.append(chunk.frames.cpu().numpy())
        return Imagined(seqs, out["reward"], out["success"], out["terminated"],
                        np.stack(frames, axis=1) if frames is not None else None)

    def score(self, imagined: Imagined) -> tuple[np.ndarray, np.ndarray]:
        """(score, P(done within the horizon)) per sequence."""
        cfg = self.config
        term = np.clip(imagined.terminated.astype(np.float64), 0.0, 1.0)
        alive = np.cumprod(np.concatenate([np.ones((len(term), 1)), 1.0 - term[:, :-1]], axis=1), axis=1)
        value = (cfg.reward_weight * imagined.reward + cfg.success_weight * imagined.success
                 + cfg.terminated_weight * term)
        discount = cfg.discount ** np.arange(term.shape[1])
        return (alive * value * discount).sum(axis=1), 1.0 - np.prod(1.0 - term, axis=1)

    def _warm(self) -> np.ndarray | None:
        """The previous plan's rest, padded with a random skill, as a candidate."""
        h = self.config.horizon
        if self.previous is None or not len(self.previous):
            return None
        rest = list(self.previous[:h])
        return np.asarray(rest + list(self.rng.integers(len(self.skills), size=h - len(rest))), np.int64)

    def _sample(self, probs: np.ndarray, count: int) -> np.ndarray:
        cum = probs.cumsum(axis=1)
        u = self.rng.random((count, probs.shape[0], 1))
        return np.minimum((u > cum[None]).sum(axis=2), probs.shape[1] - 1).astype(np.int64)

    def plan(self) -> PlanResult:
        """The best sequence found from env 0's current state (random shooting or CEM)."""
        cfg = self.config
        t0 = time.perf_counter()
        s, h, k = len(self.skills), cfg.horizon, cfg.candidates
        warm = self._warm()
        probs = np.full((h, s), 1.0 / s)
        if warm is not None and cfg.method == "cem":
            probs = (1 - cfg.warm_start) * probs + cfg.warm_start * np.eye(s)[warm]
        best: tuple[float, np.ndarray, float] | None = None
        evaluated = batches = 0
        rounds = cfg.iterations if cfg.method == "cem" else 1
        for _ in range(rounds):
            if cfg.method == "shooting" and s ** h <= k:  # every sequence fits: try them all
                seqs = np.stack(np.meshgrid(*[np.arange(s)] * h, indexing="ij"), -1).reshape(-1, h)
            else:
                seqs = self._sample(probs, k)
                if warm is not None:
                    seqs[0] = warm
                    warm = None
            imagined = self.imagine(seqs)
            scores, done = self.score(imagined)
            evaluated, batches = evaluated + len(seqs), batches + h
            top = int(np.argmax(scores))
            if best is None or scores[top] > best[0]:
                best = (float(scores[top]), seqs[top].copy(), float(done[top]))
            if cfg.method == "cem":
                elites = seqs[np.argsort(-scores, kind="stable")[:cfg.elites]]
                freq = np.stack([np.bincount(elites[:, j], minlength=s) for j in range(h)]) / len(elites)
                probs = (1 - cfg.smoothing) * freq + cfg.smoothing / s
        score, sequence, done_prob = best
        feasible = done_prob >= cfg.feasible_threshold
        message = "" if feasible else (
            f"no sequence of {h} skills is predicted to finish {self.instruction!r} (best predicted chance "
            f"{done_prob:.2f} < {cfg.feasible_threshold})")
        result = PlanResult(sequence, score, done_prob, feasible, evaluated, batches, time.perf_counter() - t0, message)
        self.previous, self.last_plan = sequence.copy(), result
        self.plans.append(result)
        return result


def make_agent(name: str, model: Any = None, heads: Any = None, config: PlannerConfig | None = None,
               seed: int = 0) -> Any:
    """An agent by name: ``planner``, ``planner_no_memory`` (the same without Temp-LoRA), ``random`` or
    ``expert``."""
    if name in ("planner", "planner_no_memory"):
        cfg = config or PlannerConfig(seed=seed)
        if name == "planner_no_memory":
            cfg = replace(cfg, temp_lora=False)
        return WorldModelPlanner(model, heads, cfg)
    if name == "random":
        return RandomSkillAgent(seed)
    if name == "expert":
        return ExpertAgent()
    raise ValueError(f"unknown agent {name!r}; choose from planner, planner_no_memory, random, expert")


AGENTS = ("planner", "planner_no_memory", "random", "expert")
__all__ = ["AGENTS", "ExpertAgent", "Imagined", "METHODS", "PlanResult", "PlannerConfig", "RandomSkillAgent",
           "WorldModelPlanner", "make_agent"]
