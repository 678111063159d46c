"""Planning over the world model: random shooting and CEM over skill sequences, replanned every chunk.

`WorldModelPlanner` keeps one imagination core (`worldmodel.Imagination`) of ``1 + candidates`` envs per
real episode it plays (several episodes can be played side by side, all in the same batches):

- the episode's first env is the agent's belief about the real episode: it starts from the real reset
  frame, and after each real chunk it learns that chunk (the core's ``teacher_frames``: Temp-LoRA Θ
  fast-learns the real frames, the context slides to them). Its memory of the episode is what Temp-LoRA
  carries.
- to plan, the belief env is forked into the K envs after it (context, Θ and its Adam state, RNG:
  `Imagination.fork`) and every candidate skill sequence is imagined chunk by chunk, all K (of all
  episodes) in ONE denoiser batch per chunk.
- the learned heads (`worldmodel.heads.RewardHeads`) judge each imagined chunk against the instruction;
  a sequence's score is its discounted sum of ``reward_weight * reward + success_weight * skill success
  + terminated_weight * P(task done) - value_weight * skills to go``, each step weighted by the chance that the
  task was not done before. The skills-to-go term (heads with a ``to_go`` output) is the value that lets a short
  horizon see past the reward's dips: OGBench's reward falls when a drawer that must end shut is opened, and
  along the expert's episodes of tasks 2, 4 and 5 it waits 3-7 chunks before it rises.
- with ``prior_weight`` > 0 and heads that have a next-skill output (`worldmodel.heads.RewardHeads`, trained on
  hindsight labels: the skills that bring the goal one closer), each skill of a sequence also scores
  ``prior_weight * log P(skill | the state before it)``: the real frames for the first skill, the imagined chunk
  before it for the others, and CEM's first distribution over the first skill is that prior (smoothed). The
  imagined chunks still decide between the skills the prior finds likely (AlphaZero's policy prior, in a
  CEM). The uniform CEM of sessions 8-11 never chose task 4's "open the drawer" within a 2-3 skill horizon.
- random shooting samples K sequences (all of them when there are at most K); CEM refits a categorical
  distribution per step of the horizon to the best ``elites`` for ``iterations`` rounds (a round whose
  candidates all score the same teaches nothing and leaves it as it was). Both start from the previous
  plan, shifted by one chunk.

Only the first skill of the best sequence is executed; the real chunk it produced is observed and the
planner plans again (model-predictive control). A real skill often needs several chunks where the imagined
one finishes in one (the imagined drawer opens within a chunk, the real one over two or three), so with
``skill_chunks`` > 1 the chosen skill runs again, without replanning, until the success head judges its
real chunk done or it has run that many chunks (`SkillRuns`, shared with `SkillPriorAgent`): the scripted expert's
rule, with the head in place of the simulator's check. ``temp_lora=False`` plans with Φ alone (the context
still follows the real frames). Because a forked branch draws the same noise as env 0, the imagined
chunk of the executed skill is exactly the belief env's prediction before it learns the real chunk
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
from worldmodel.heads import HeadsHistory, predict_with_history
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
    elites: int = 8  # CEM: sequences the distribution is refitted to (at most candidates)
    smoothing: float = 0.1  # CEM: share of the uniform distribution mixed into each refit
    warm_start: float = 0.5  # weight of the previous plan (shifted) in the first distribution
    discount: float = 0.9
    reward_weight: float = 1.0
    success_weight: float = 0.0
    terminated_weight: float = 1.0
    # per skill the heads say is still needed (heads without a to_go output: no effect); above reward_weight, so a
    # right skill that costs a goal condition (opening a drawer that must end shut) still scores as progress
    value_weight: float = 2.0
    # the weight of each skill's log-probability under the heads' next-skill prior (heads without one: no effect);
    # session 12, tasks 1-5 on one H200: 78% real success at 1 (without it, session 11: 0% on tasks 2, 4 and 5).
    # Session 13 (the session-13 heads, seeds 1000-1019): tasks 2 and 5 at 95% / 95% with 3 against 90% / 60% with 1,
    # where imagined cube chunks outscored a weaker prior; 3 was chosen on those seeds (docs/RESULTS.md)
    prior_weight: float = 3.0
    temp_lora: bool = True  # env 0 learns each real chunk; candidates carry its Θ
    learn_in_imagination: bool = False  # candidates also fast-learn their imagined chunks (slower)
    denoise_steps: int | None = None
    guidance_scale: float | None = None
    fast_batch_size: int | None = 32
    # "fp32" (results independent of the batch), "bf16" (autocast; ~1.6x the sampler's speed on a GPU) or
    # "auto" (bf16 where the device does it natively): `worldmodel.imagination.resolve_precision`
    precision: str = "fp32"
    feasible_threshold: float = 0.5  # P(done within the horizon) of the best plan below this: "no plan found"
    give_up_after: int | None = None  # stop after this many infeasible plans in a row (None: never)
    skill_chunks: int = 1  # real chunks a chosen skill may run until the success head sees it done (1: replan each)
    # chunks each skill of a candidate is imagined for: a pick-and-place takes 2-3 chunks, in the real scene and in
    # imagination, so with 1 a plan's "put the cube in the drawer" is judged after a third of it
    imagine_chunks: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown planning method {self.method!r}; choose one of {METHODS}")
        if min(self.horizon, self.candidates, self.iterations) < 1:
            raise ValueError(f"horizon, candidates and iterations must be >= 1: {self}")
        if self.elites < 1:
            raise ValueError(f"elites must be >= 1: {self}")
        if self.skill_chunks < 1 or self.imagine_chunks < 1:
            raise ValueError(f"skill_chunks and imagine_chunks must be >= 1: {self}")
        self.elites = min(self.elites, self.candidates)
        if not (0.0 <= self.smoothing <= 1.0 and 0.0 <= self.warm_start <= 1.0):
            raise ValueError(f"smoothing and warm_start must be in [0, 1]: {self}")


@dataclass
class Imagined:
    """K imagined skill sequences (K, H): heads' judgements per chunk (K, C) with C = H x ``imagine_chunks`` (each
    skill imagined for that many chunks), frames if kept (K, C, Tn, h, w, 3)."""

    sequences: np.ndarray
    reward: np.ndarray
    success: np.ndarray
    terminated: np.ndarray
    frames: np.ndarray | None = None
    to_go: np.ndarray | None = None  # (K, C) skills still needed, where the heads predict it
    skill_logp: np.ndarray | None = None  # (K, H) log P(skill | state before it), heads with a next-skill output


@dataclass
class PlanResult:
    sequence: np.ndarray  # the best skill sequence (H,)
    score: float
    done_prob: float  # predicted probability that the task is done within the horizon
    feasible: bool
    evaluated: int  # sequences imagined
    batches: int  # batched imagination steps (each one denoiser batch of all candidates)
    seconds: float  # wall-clock of the planning call (shared by the episodes planned together)
    message: str = ""


class WorldModelPlanner:
    """MPC over a world model's imagination, scored by reward heads; see the module docstring.

    Plans ``num_episodes`` real episodes side by side: episode b owns envs ``b * (1 + K)`` (its belief) and
    the K after it (its candidates) of one imagination core, so every chunk of every candidate of every
    episode is one denoiser batch. As an agent in the real scene (`agents.real_scene.run_real_episodes`):
    ``reset_episode``, ``act_batch``, ``observe_batch``; directly: ``start``, ``plan``, ``imagine``.
    """

    def __init__(self, model: Any, heads: Any, config: PlannerConfig | None = None,
                 skills: Sequence[str] = SKILLS, num_episodes: int = 1):
        self.config = cfg = config or PlannerConfig()
        if model.config.action_type == "vector":
            raise ValueError("planning over skills needs a model that reads language actions; this model's "
                             "action_type is 'vector'")
        if heads is None:
            raise ValueError("the planner scores imagined chunks with reward heads; pass heads (see agents.heads)")
        if num_episodes < 1:
            raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
        self.model, self.heads, self.skills = model, heads, tuple(skills)
        self.num_episodes, self.width = num_episodes, 1 + cfg.candidates
        n = num_episodes * self.width
        memory = None
        if cfg.temp_lora:
            memory = BatchedTempLoRA(model, n, model.config.temp_lora, max_batch=cfg.fast_batch_size)
        self.core = Imagination(model, n, memory, cfg.denoise_steps, cfg.guidance_scale, precision=cfg.precision)
        self.seen = HeadsHistory(heads, n)  # what each env's episode showed so far, for heads that read it
        self.model.action_encoder.embed_texts(list(self.skills))  # cache the vocabulary once
        self.name = f"{cfg.method} planner" + ("" if cfg.temp_lora else " (no Temp-LoRA)")
        b = num_episodes
        self.instructions: list[str | None] = [None] * b
        self.rngs = [np.random.default_rng([cfg.seed, i]) for i in range(b)]
        self.previous: list[np.ndarray | None] = [None] * b
        self.last_imagined: list[np.ndarray | None] = [None] * b
        # log P(skill | the real frames the belief env is at) per episode, read once per real observation (None: no
        # prior); the plan's CEM rounds and every imagine() call share it
        self.root_logp: list[np.ndarray | None] = [None] * b
        self.plans: list[list[PlanResult]] = [[] for _ in range(b)]
        self.notes: dict[int, list[str]] = {i: [] for i in range(b)}
        self.stop_reasons: list[str | None] = [None] * b
        self.distributions: list[np.ndarray | None] = [None] * b  # CEM: each step's skill distribution at the end
        self._infeasible = [0] * b
        self.runs = SkillRuns(b, cfg.skill_chunks)

    def root(self, b: int) -> int:
        return b * self.width

    # ------------------------------------------------------------------------------- agent protocol
    def reset_episode(self, b: int, frame: np.ndarray, info: dict) -> None:
        """Episode b starts: its real reset frame and the scene's reset info (instruction, seed)."""
        self.start(np.asarray(frame)[None], info["instruction"], int(info.get("seed", 0)), episode=b)

    def act_batch(self, ids: Sequence[int]) -> list[int | None]:
        ids = list(ids)
        chosen = self.runs.running_skills(ids)
        to_plan = [b for b in ids if b not in chosen]
        for b, result in zip(to_plan, self.plan(to_plan) if to_plan else []):
            chosen[b] = self._choose(b, result)
        return [chosen[b] for b in ids]

    def _choose(self, b: int, result: PlanResult) -> int | None:
        """The skill to run from a fresh plan (None: give up)."""
        if result.feasible:
            self._infeasible[b] = 0
        else:
            self._infeasible[b] += 1
            if self.config.give_up_after is not None and self._infeasible[b] >= self.config.give_up_after:
                self.stop_reasons[b] = f"gave up: {result.message}"
                self.notes[b].append(self.stop_reasons[b])
                return None
        return int(result.sequence[0])

    @torch.no_grad()
    def observe_batch(self, ids: Sequence[int], skills: Sequence[int], frames: Sequence[np.ndarray],
                      infos: Sequence[dict] | None = None) -> None:
        """The real chunks that ``skills`` produced in episodes ``ids``: each belief env predicts its chunk
        (kept in ``last_imagined``), then learns it (Temp-LoRA) and continues from the real frames."""
        ids = list(ids)
        truth = np.stack([np.asarray(f) for f in frames])
        new = self.model.config.new_frames
        if truth.shape[1] != new:
            raise ValueError(f"the real chunk has {truth.shape[1]} frames but the model makes {new} per chunk: run the "
                             f"scene with chunk_len={new}")
        roots = [self.root(b) for b in ids]
        chunk = self.core.step(roots, self._action([self.skills[int(s)] for s in skills]), teacher_frames=truth)
        made = chunk.frames.cpu().numpy()
        texts = [self.instructions[b] for b in ids]
        repeats = self.runs.observe(self.heads, ids, skills, truth, texts, self.seen.pooled_of(roots))
        logp = self._prior_logp(list(truth), texts, roots)
        self.seen.observe(roots, truth)  # the real chunk's end joins the history the chunks after it are judged on
        for k, (b, skill) in enumerate(zip(ids, skills)):
            self.last_imagined[b], self.root_logp[b] = made[k], None if logp is None else logp[k]
            rest = self.previous[b]
            if not repeats[k]:  # a repeated skill is still the plan's first step: the plan's rest waits
                self.previous[b] = rest[1:] if rest is not None and len(rest) and int(rest[0]) == int(skill) else None

    # single-episode conveniences (slot 0)
    def reset(self, frame: np.ndarray, info: dict) -> None:
        self.reset_episode(0, frame, info)

    def act(self) -> int | None:
        return self.act_batch([0])[0]

    def observe(self, skill: int, frames: np.ndarray, info: dict | None = None) -> None:
        self.observe_batch([0], [skill], [frames], [info or {}])

    # ------------------------------------------------------------------------------------ planning
    def start(self, frames: Any, instruction: str, seed: int = 0, episode: int = 0) -> None:
        """Begin episode ``episode`` from real frames ((T, H, W, 3) uint8) under ``instruction``."""
        b = episode
        if not 0 <= b < self.num_episodes:
            raise IndexError(f"episode {b} out of range for a planner of {self.num_episodes}")
        self.instructions[b] = check_instruction(instruction)
        self.core.reset([self.root(b)], [np.asarray(frames)], seeds=[int(seed)])
        self.seen.reset([self.root(b)], [np.asarray(frames)])
        self.rngs[b] = np.random.default_rng([self.config.seed, int(seed)])
        self.previous[b], self.last_imagined[b] = None, None
        logp = self._prior_logp([np.asarray(frames)], [self.instructions[b]], [self.root(b)])
        self.root_logp[b] = None if logp is None else logp[0]
        self.plans[b], self.notes[b], self.stop_reasons[b], self._infeasible[b] = [], [], None, 0
        self.runs.reset(b)

    def _action(self, texts: list[str]) -> Any:
        return {"text": texts} if self.model.config.action_type == "both" else texts

    @torch.no_grad()
    def imagine(self, sequences: Any, episodes: Sequence[int] | None = None, keep_frames: bool = False) -> Imagined:
        """Imagine skill sequences from the belief state of each episode in ``episodes`` (default [0]):
        ``sequences`` (E, K, H) (or (K, H) for one episode); all E * K in one batch per chunk, each chunk
        judged by the heads against its episode's instruction; each skill runs for ``imagine_chunks`` chunks.
        Judgements come back (E, K, C) ((K, C) for 2-D input), C = H x ``imagine_chunks``."""
        seqs = np.asarray(sequences, np.int64)
        flat = seqs.ndim == 2
        if flat:
            seqs = seqs[None]
        episodes = [0] if episodes is None else list(episodes)
        if seqs.ndim != 3 or seqs.shape[0] != len(episodes) or not 1 <= seqs.shape[1] <= self.config.candidates:
            raise ValueError(f"sequences must be (episodes={len(episodes)}, K, H) with 1 <= K <= "
                             f"{self.config.candidates}, got {np.asarray(sequences).shape}")
        if seqs.min() < 0 or seqs.max() >= len(self.skills):
            raise ValueError(f"skill ids must be in [0, {len(self.skills)})")
        if any(self.instructions[b] is None for b in episodes):
            raise RuntimeError("start() the planner's episode before planning")
        e, k, horizon = seqs.shape
        src = [self.root(b) for b in episodes for _ in range(k)]
        ids = [self.root(b) + 1 + j for b in episodes for j in range(k)]
        self.core.fork(src, ids)
        self.seen.fork(src, ids)
        texts = [self.instructions[b] for b in episodes for _ in range(k)]
        chunks = np.repeat(seqs.reshape(e * k, horizon), self.config.imagine_chunks, axis=1)  # a skill per chunk
        out = {key: np.zeros(chunks.shape, np.float32) for key in ("reward", "success", "terminated")}
        flat_seqs = seqs.reshape(e * k, horizon)
        logp = self._root_prior(episodes)
        logp = None if logp is None else np.repeat(logp, k, axis=0)[np.arange(e * k), flat_seqs[:, 0]][:, None]
        frames = [] if keep_frames else None
        for h in range(chunks.shape[1]):
            chunk = self.core.step(ids, self._action([self.skills[s] for s in chunks[:, h]]),
                                   learn=self.config.learn_in_imagination)
            pred = self.seen.predict(ids, chunk.frames, texts)
            for key in (*out, "to_go") if "to_go" in pred else out:  # to_go: heads that predict it
                out.setdefault(key, np.zeros(chunks.shape, np.float32))[:, h] = pred[key]
            j = (h + 1) // self.config.imagine_chunks  # the skill this chunk's end is the state before
            if logp is not None and (h + 1) % self.config.imagine_chunks == 0 and j < horizon:
                p = pred["next_skill"][np.arange(e * k), flat_seqs[:, j]]
                logp = np.concatenate([logp, np.log(np.maximum(p, 1e-6))[:, None]], axis=1)
            if frames is not None:
                frames.append(chunk.frames.cpu().numpy())
        shape = (k, chunks.shape[1]) if flat else (e, k, chunks.shape[1])
        video = np.stack(frames, axis=1).reshape(*shape, *frames[0].shape[1:]) if frames is not None else None
        return Imagined(seqs[0] if flat else seqs,
                        *(out[key].reshape(shape) for key in ("reward", "success", "terminated")), video,
                        out["to_go"].reshape(shape) if "to_go" in out else None,
                        None if logp is None else logp.reshape(*shape[:-1], horizon))

    def _prior_logp(self, frames: list[np.ndarray], instructions: list[str | None],
                    envs: Sequence[int]) -> np.ndarray | None:
        """log P(skill | real frames) per episode (E, skills) from the heads' next-skill output, the episodes' history
        that of ``envs`` (their belief envs); None where the prior is off (``prior_weight`` 0 or heads without that
        output)."""
        if not self.config.prior_weight or not getattr(getattr(self.heads, "config", None), "skills", 0):
            return None
        if self.heads.config.skills != len(self.skills):
            raise ValueError(f"the heads' next-skill output names {self.heads.config.skills} skills, the planner "
                             f"{len(self.skills)}")
        return np.log(np.maximum(skill_prior(self.heads, frames, instructions, self.seen.pooled_of(envs)), 1e-6))

    def _root_prior(self, episodes: Sequence[int]) -> np.ndarray | None:
        """The episodes' `root_logp` stacked (E, skills), or None when the prior is off."""
        rows = [self.root_logp[b] for b in episodes]
        return None if any(r is None for r in rows) else np.stack(rows)

    def score(self, imagined: Imagined) -> tuple[np.ndarray, np.ndarray]:
        """(score, P(done within the horizon)) per sequence (over the last axis of the judgements)."""
        cfg = self.config
        term = np.clip(imagined.terminated.astype(np.float64), 0.0, 1.0)
        before = np.concatenate([np.ones_like(term[..., :1]), 1.0 - term[..., :-1]], axis=-1)
        alive = np.cumprod(before, axis=-1)
        value = (cfg.reward_weight * imagined.reward + cfg.success_weight * imagined.success
                 + cfg.terminated_weight * term)
        if imagined.to_go is not None:
            value = value - cfg.value_weight * imagined.to_go
        if imagined.skill_logp is not None and cfg.prior_weight:  # each skill's prior, at its first chunk
            prior = np.zeros_like(value)
            prior[..., ::cfg.imagine_chunks] = cfg.prior_weight * imagined.skill_logp
            value = value + prior
        discount = cfg.discount ** np.arange(term.shape[-1])
        return (alive * value * discount).sum(axis=-1), 1.0 - np.prod(1.0 - term, axis=-1)

    def _warm(self, b: int) -> np.ndarray | None:
        """Episode b's previous plan's rest, padded with random skills, as a candidate."""
        h, rest = self.config.horizon, self.previous[b]
        if rest is None or not len(rest):
            return None
        rest = list(rest[:h])
        return np.asarray(rest + list(self.rngs[b].integers(len(self.skills), size=h - len(rest))), np.int64)

    def _sample(self, b: int, probs: np.ndarray, count: int) -> np.ndarray:
        cum = probs.cumsum(axis=1)
        u = self.rngs[b].random((count, probs.shape[0], 1))
        return np.minimum((u > cum[None]).sum(axis=2), probs.shape[1] - 1).astype(np.int64)

    def plan(self, episodes: Sequence[int] | None = None) -> list[PlanResult]:
        """The best sequence found from each episode's belief state (random shooting or CEM), all episodes'
        candidates imagined together."""
        cfg = self.config
        episodes = [0] if episodes is None else list(episodes)
        t0 = time.perf_counter()
        s, h, k = len(self.skills), cfg.horizon, cfg.candidates
        warm = {b: self._warm(b) for b in episodes}
        probs = {b: np.full((h, s), 1.0 / s) for b in episodes}
        prior = self._root_prior(episodes)
        if cfg.method == "cem" and prior is not None:  # the first skill drawn from the prior, smoothed
            for i, b in enumerate(episodes):
                probs[b][0] = (1 - cfg.smoothing) * np.exp(prior[i]) / np.exp(prior[i]).sum() + cfg.smoothing / s
        if cfg.method == "cem":
            for b in episodes:
                if warm[b] is not None:
                    probs[b] = (1 - cfg.warm_start) * probs[b] + cfg.warm_start * np.eye(s)[warm[b]]
        best: dict[int, tuple[float, np.ndarray, float]] = {}
        evaluated = batches = 0
        exhaustive = cfg.method == "shooting" and s ** h <= k
        for _ in range(cfg.iterations if cfg.method == "cem" else 1):
            if exhaustive:  # every sequence fits: try them all
                every = np.stack(np.meshgrid(*[np.arange(s)] * h, indexing="ij"), -1).reshape(-1, h)
                seqs = np.stack([every] * len(episodes))
            else:
                seqs = np.stack([self._sample(b, probs[b], k) for b in episodes])
                for i, b in enumerate(episodes):
                    if warm[b] is not None:
                        seqs[i, 0], warm[b] = warm[b], None
            scores, done = self.score(self.imagine(seqs, episodes))
            evaluated, batches = evaluated + seqs.shape[1], batches + h
            for i, b in enumerate(episodes):
                top = int(np.argmax(scores[i]))
                if b not in best or scores[i, top] > best[b][0]:
                    best[b] = (float(scores[i, top]), seqs[i, top].copy(), float(done[i, top]))
                if cfg.method == "cem" and scores[i].max() > scores[i].min():  # all equal: nothing learned
                    elites = seqs[i, np.argsort(-scores[i], kind="stable")[:cfg.elites]]
                    freq = np.stack([np.bincount(elites[:, j], minlength=s) for j in range(h)]) / len(elites)
                    probs[b] = (1 - cfg.smoothing) * freq + cfg.smoothing / s
        for b in episodes:
            self.distributions[b] = probs[b]
        seconds = time.perf_counter() - t0
        results = []
        for b in episodes:
            score, sequence, done_prob = best[b]
            feasible = done_prob >= cfg.feasible_threshold
            message = "" if feasible else (
                f"no sequence of {h} skills is predicted to finish {self.instructions[b]!r} (best predicted chance "
                f"{done_prob:.2f} < {cfg.feasible_threshold})")
            result = PlanResult(sequence, score, done_prob, feasible, evaluated, batches, seconds, message)
            self.previous[b] = sequence.copy()
            self.plans[b].append(result)
            results.append(result)
        return results


def skill_prior(heads: Any, frames: Sequence[np.ndarray], instructions: Sequence[str | None],
                history: Any = None) -> np.ndarray:
    """The heads' next-skill probabilities (E, skills) for E episodes' real frames ((T, H, W, 3) each: a start frame
    or a chunk), from the last ``num_frames`` of each, the first frame repeated where there are fewer, so episodes at
    their start and episodes after a real chunk go in one batch. ``history``: the episodes' pooled history before
    those frames (`HeadsHistory.pooled_of`; heads that read it)."""
    k = heads.config.num_frames
    stacks = [np.concatenate([f[:1]] * max(0, k - len(f)) + [f[-k:]]) for f in map(np.asarray, frames)]
    return predict_with_history(heads, np.stack(stacks), list(instructions), history)["next_skill"]


class SkillRuns:
    """Which episodes' last skill runs on without a new decision: a chosen skill runs again until the heads' success
    output judges its real chunk done or it has run ``max_chunks`` chunks (1: a new decision after every chunk). The
    options framework's termination condition, with the success head in place of the simulator's check the scripted
    expert repeats a skill by.

    Why: a real skill often needs two or three chunks (a drawer opens over two, a pick-and-place over three). A new
    decision taken from a half-done state acts on it: in session 13's CPU diagnosis the skill-prior agent, asked after
    every chunk, shut the drawer on a cube still in the gripper and locked drawers not yet shut."""

    def __init__(self, num_episodes: int, max_chunks: int = 1):
        if max_chunks < 1:
            raise ValueError(f"a skill runs at least one chunk, got max_chunks={max_chunks}")
        self.max_chunks = max_chunks
        self._running: list[tuple[int, int] | None] = [None] * num_episodes  # (skill, real chunks run) while it repeats

    def reset(self, b: int) -> None:
        self._running[b] = None

    def running_skills(self, ids: Sequence[int]) -> dict[int, int]:
        """{episode: the skill it runs on with} for those of ``ids`` that need no new decision."""
        return {b: self._running[b][0] for b in ids if self._running[b] is not None}

    def observe(self, heads: Any, ids: Sequence[int], skills: Sequence[int], frames: np.ndarray,
                instructions: Sequence[str | None], history: Any = None) -> list[bool]:
        """Record the real chunks ``frames`` ((E, T, H, W, 3) uint8) that ``skills`` produced in episodes ``ids``
        (``history``: their pooled history before the chunks, for heads that read it); returns, per episode, whether
        its skill continued the one already running."""
        done = np.ones(len(ids), bool)
        if self.max_chunks > 1:  # did the skill finish? the success head on the real chunk
            pred = predict_with_history(heads, torch.from_numpy(np.asarray(frames)), list(instructions), history)
            done = pred["success"] >= 0.5
        repeats = []
        for k, (b, skill) in enumerate(zip(ids, skills)):
            run = self._running[b]
            repeats.append(run is not None and run[0] == int(skill))
            count = (run[1] if repeats[-1] else 0) + 1
            self._running[b] = None if done[k] or count >= self.max_chunks else (int(skill), count)
        return repeats


class SkillPriorAgent:
    """The heads' next-skill prior alone: its most likely skill for the real frames, no imagination, each skill run
    on until the success head sees it done (`SkillRuns`, up to ``skill_chunks`` chunks), as the planner runs its
    skills. The baseline that says what the planner's imagined chunks add to its prior (`PlannerConfig.prior_weight`)."""

    name = "skill prior, no imagination"

    def __init__(self, heads: Any, num_episodes: int = 1, skills: Sequence[str] = SKILLS, skill_chunks: int = 1):
        if heads is None or getattr(heads.config, "skills", 0) != len(skills):
            raise ValueError(f"the skill-prior agent needs heads with a next-skill output over {len(skills)} skills "
                             "(python -m experiments.fit_heads --next-skill)")
        self.heads, self.num_episodes = heads, num_episodes
        self.runs = SkillRuns(num_episodes, skill_chunks)
        self.seen = HeadsHistory(heads, num_episodes)  # each episode's real frames so far, for heads that read them
        self.frames: list[np.ndarray | None] = [None] * num_episodes
        self.instructions: list[str | None] = [None] * num_episodes
        # per episode, a line per new decision: the skill, its probability and the runner-up's (what `plan_eval`
        # keeps beside the simulator's skills-still-needed trace, so a wrong choice shows apart from an unsure one)
        self.notes: dict[int, list[str]] = {b: [] for b in range(num_episodes)}

    def reset_episode(self, b: int, frame: np.ndarray, info: dict) -> None:
        self.frames[b], self.instructions[b] = np.asarray(frame)[None], check_instruction(info["instruction"])
        self.seen.reset([b], [self.frames[b]])
        self.notes[b] = []
        self.runs.reset(b)

    def act_batch(self, ids: Sequence[int]) -> list[int]:
        ids = list(ids)
        chosen = self.runs.running_skills(ids)
        ask = [b for b in ids if b not in chosen]
        if ask:
            prior = skill_prior(self.heads, [self.frames[b] for b in ask], [self.instructions[b] for b in ask],
                                self.seen.pooled_of(ask))
            for b, p in zip(ask, prior):
                first, second = np.argsort(-p, kind="stable")[:2]
                chosen[b] = int(first)
                self.notes[b].append(f"decision {len(self.notes[b])}: skill {first} P {p[first]:.2f} "
                                     f"(then skill {second} P {p[second]:.2f})")
        return [chosen[b] for b in ids]

    def observe_batch(self, ids, skills, frames, infos) -> None:
        ids = list(ids)
        # the episode before this chunk: the last chunk's end joins the history (the start frame is in it already,
        # and a max-pool takes a frame twice as once), so this chunk and its successor are judged as the heads learnt
        self.seen.observe(ids, np.stack([self.frames[b][-1:] for b in ids]))
        chunks = np.stack([np.asarray(f) for f in frames])
        texts = [self.instructions[b] for b in ids]
        self.runs.observe(self.heads, ids, skills, chunks, texts, self.seen.pooled_of(ids))
        for b, f in zip(ids, frames):
            self.frames[b] = np.asarray(f)


def make_agent(name: str, model: Any = None, heads: Any = None, config: PlannerConfig | None = None,
               num_episodes: int = 1, seed: int = 0) -> Any:
    """An agent by name for ``num_episodes`` side-by-side episodes: ``planner``, ``planner_no_memory`` (the
    same without Temp-LoRA), ``prior`` (the heads' next-skill prior alone), ``random`` or ``expert``."""
    if name in ("planner", "planner_no_memory"):
        cfg = config or PlannerConfig(seed=seed)
        if name == "planner_no_memory":
            cfg = replace(cfg, temp_lora=False)
        return WorldModelPlanner(model, heads, cfg, num_episodes=num_episodes)
    if name == "prior":
        return SkillPriorAgent(heads, num_episodes, skill_chunks=(config or PlannerConfig()).skill_chunks)
    if name == "random":
        return RandomSkillAgent(num_episodes, seed)
    if name == "expert":
        return ExpertAgent(num_episodes)
    raise ValueError(f"unknown agent {name!r}; choose from {', '.join(AGENTS)}")


AGENTS = ("planner", "planner_no_memory", "prior", "random", "expert")
__all__ = ["AGENTS", "ExpertAgent", "Imagined", "METHODS", "PlanResult", "PlannerConfig", "RandomSkillAgent",
           "SkillPriorAgent", "SkillRuns", "WorldModelPlanner", "make_agent", "skill_prior"]
