"""Agents judged in the real scene (`envs.real.RealSceneEnv`): how the scene is set up for a model, the
episode loop every agent runs through, and the instruction check.

An agent plays ``num_episodes`` episodes side by side (a planner imagines all their candidates in one
batch): ``reset_episode(b, frame, info)`` (the real reset frame and the scene's reset info:
``instruction``, ``plan``, ``task``, ``seed``), ``act_batch(ids) -> [skill id or None]`` (None: that
episode's agent stops) and ``observe_batch(ids, skills, frames, infos)`` (the real chunks those skills
produced and the scene's step infos). `run_real_episodes` plays seeded episodes and returns what happened
(`EpisodeResult`); an agent that imagines what it expects (a planner) gives its imagined chunk of episode
b in ``agent.last_imagined[b]``, for the videos.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from envs.real.objects import SIM_STATE_FIELDS
from envs.real.skills import DRAWER_CLOSED, SKILLS
from envs.real.tasks import TASK_NAMES, get_task

# The task suite the acceptance measures: OGBench scene tasks 1-5 and the memory tasks.
SCENE_TASKS: tuple[str, ...] = tuple(n for n in TASK_NAMES if n.startswith("task"))
MEMORY_TASKS: tuple[str, ...] = tuple(n for n in TASK_NAMES if get_task(n).memory)


@dataclass
class SceneSpec:
    """How the real scene runs for an agent of a world model (its ``RealSceneEnv`` options).

    ``chunk_len`` must be the model's ``new_frames`` and ``frame_skip`` the stride of the data the model
    learned from (the shipped default: 4 frames per chunk, every 8th sim step). ``max_chunks``: the
    episode's budget (None: twice the expert plan's length plus 2, so every agent gets the same budget).
    """

    chunk_len: int = 4
    frame_skip: int = 8
    max_chunks: int | None = None
    skill_noise: float = 0.0
    render_backend: str = "auto"
    random_cube_color: bool = True
    min_distractors: int = 1
    max_distractors: int = 3

    def budget(self, plan: Sequence[int]) -> int:
        return self.max_chunks if self.max_chunks is not None else 2 * len(plan) + 2


def make_scene(spec: SceneSpec, frame_size: int, task: str = "task1_open"):
    """A skill-action `RealSceneEnv` rendering ``frame_size`` frames, as ``spec`` says."""
    from envs.real.scene import RealSceneEnv

    return RealSceneEnv(task=task, action_type="skill", width=frame_size, height=frame_size,
                        chunk_len=spec.chunk_len, frame_skip=spec.frame_skip, max_chunks=10_000,
                        skill_noise=spec.skill_noise, render_backend=spec.render_backend,
                        random_cube_color=spec.random_cube_color, min_distractors=spec.min_distractors,
                        max_distractors=spec.max_distractors)


# ------------------------------------------------------------------------------------ success
_FIELD = {name: i for i, name in enumerate(SIM_STATE_FIELDS)}


def _hidden(state: np.ndarray, away: str | None) -> bool:
    """The cube lies in the closed drawer."""
    return bool(state[_FIELD["cube_in_drawer"]] > 0.5 and state[_FIELD["drawer"]] > DRAWER_CLOSED - 0.02)


def _hidden_and_locked(state: np.ndarray, away: str | None) -> bool:
    return _hidden(state, away) and bool(state[_FIELD["left_button"]] < 0.5)


def _on_away_slot(state: np.ndarray, away: str | None) -> bool:
    """The cube lies on the table slot the instruction named (``away``, `envs.real.tasks.away_slot`), within the goal
    check's tolerance. Why not "moved from its start" (sessions 49-50): agents then won by lifting the cube anywhere
    and putting it straight back, skipping the slot and the distractions the instruction names."""
    from envs.real.tasks import slot_at

    return slot_at(state[[_FIELD["cube_x"], _FIELD["cube_y"], _FIELD["cube_z"]]]) == away


# What must have happened, in this order, before a memory task's goal counts: the scene's goal check
# alone is met before the memory part (the drawer tasks' goal, drawer open with the cube inside, holds
# right after the cube is put in; memory_cube_return's goal is its start scene).
MILESTONES: dict[str, tuple] = {
    "memory_drawer": (_hidden,),
    "memory_drawer_locked": (_hidden, _hidden_and_locked),
    "memory_cube_return": (_on_away_slot,),
}


class SuccessJudge:
    """Task success in the real scene: the scene's goal check (``terminated``); for the memory tasks only
    once the instruction's memory part has happened first, in order (`MILESTONES`: the cube hidden in
    the closed drawer (and the drawer locked over it), or the cube on the slot the instruction names), judged on
    every kept frame's simulator state. ``reset_info``: the scene's reset info (its ``sim_state``, and for
    `memory_cube_return` its ``instruction``)."""

    def __init__(self, task: str, reset_info: dict):
        from envs.real.tasks import RETURN_TASK, away_slot

        self.milestones = MILESTONES.get(task, ())
        self.start = np.asarray(reset_info["sim_state"], np.float64)
        self.away = away_slot(reset_info.get("instruction", "")) if task == RETURN_TASK else None
        self.reached = 0

    def update(self, terminated: bool, step_info: dict) -> bool:
        """Whether this chunk completes the task (call once per chunk with the scene's step info)."""
        ready = self.reached == len(self.milestones)  # the memory part happened in an earlier chunk
        for state in np.asarray(step_info["sim_states"], np.float64):
            while self.reached < len(self.milestones) and self.milestones[self.reached](state, self.away):
                self.reached += 1
        return bool(terminated and ready)


def memory_part_done(task: str, sim_states: np.ndarray, instruction: str = "") -> np.ndarray:
    """Per recorded state of an episode ((T, 8), from its reset, under ``instruction``), whether ``task``'s memory
    part (`MILESTONES`) had happened by then, as `SuccessJudge` judges it; all True for tasks without one. bool (T,)."""
    states = np.asarray(sim_states, np.float64)
    judge = SuccessJudge(task, {"sim_state": states[0], "instruction": instruction})
    done = []
    for state in states:
        judge.update(False, {"sim_states": state[None]})
        done.append(judge.reached == len(judge.milestones))
    return np.asarray(done, bool)


class Agent(Protocol):
    """Plays ``num_episodes`` real episodes side by side (episode slots 0..num_episodes-1)."""

    num_episodes: int

    def reset_episode(self, b: int, frame: np.ndarray, info: dict) -> None: ...

    def act_batch(self, ids: Sequence[int]) -> list[int | None]: ...

    def observe_batch(self, ids: Sequence[int], skills: Sequence[int], frames: Sequence[np.ndarray],
                      infos: Sequence[dict]) -> None: ...


@dataclass
class EpisodeResult:
    """One real episode of an agent: success, the skills it issued, the real (and imagined) frames."""

    task: str
    seed: int
    instruction: str
    success: bool
    chunks: int
    skills: list[int]
    seconds: float  # wall-clock from its reset to its end (shared with the episodes played beside it)
    stop: str  # "success", "budget" (out of chunks) or the agent's reason for stopping
    real_frames: np.ndarray | None = None  # (1 + chunks * L, H, W, 3): reset frame, then each chunk
    imagined_frames: np.ndarray | None = None  # (chunks * L, H, W, 3): the agent's prediction of each chunk
    notes: list[str] = field(default_factory=list)
    # the skills the task still needed by the simulator's state (`envs.real.tasks.skills_to_go`, a cube skill's chunk
    # not achieved counted as under way) at the reset and after each chunk; empty for tasks without a fixed goal.
    # Why: it tells a wrong choice (the count rises or stays) from a skill that failed to act.
    to_go: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("real_frames"), out.pop("imagined_frames")
        return out


def run_real_episodes(agent: Agent, envs: Sequence[Any], jobs: Sequence[tuple[str, int]],
                      spec: SceneSpec | None = None, keep_frames: bool | Sequence[bool] = False,
                      on_done=None, deadline: float | None = None) -> list[EpisodeResult | None]:
    """Play the episodes ``jobs`` ((task, seed) each) with ``agent``, up to ``len(envs)`` side by side (one
    scene per slot; the agent decides for all running episodes at once; a slot takes the next job as soon
    as its episode ends), each until its task succeeds (`SuccessJudge`), the agent stops (None) or its chunk
    budget is spent. ``keep_frames``: keep the real frames and the agent's imagined ones
    (``agent.last_imagined[b]``), for all or per job. ``on_done(result)`` is called as each episode ends.
    ``deadline`` (a ``time.time()``): start no episode after it (their results stay None)."""
    spec = spec or SceneSpec()
    slots = min(len(envs), agent.num_episodes)
    if slots < 1:
        raise ValueError("need at least one scene and one agent slot")
    keep = [keep_frames] * len(jobs) if isinstance(keep_frames, bool) else list(keep_frames)
    results: list[EpisodeResult | None] = [None] * len(jobs)
    pending = list(range(len(jobs)))
    state: list[dict | None] = [None] * slots
    while True:
        for b in range(slots):  # fill the free slots
            if state[b] is None and pending and (deadline is None or time.time() < deadline):
                j = pending.pop(0)
                task, seed = jobs[j]
                frame, info = envs[b].reset(seed=int(seed), options={"task": task})
                agent.reset_episode(b, frame, info)
                state[b] = dict(job=j, info=info, budget=spec.budget(info["plan"]), real=[frame], imagined=[],
                                skills=[], stop=None, success=False, judge=SuccessJudge(task, info),
                                start=time.perf_counter(), sim=np.asarray(info["sim_state"]), to_go=[])
                _trace(state[b], task)
        active = [b for b in range(slots) if state[b] is not None]
        if not active:
            return results
        stepped, skills, frames, infos = [], [], [], []
        for b, skill in zip(active, agent.act_batch(active)):
            st = state[b]
            if skill is None:
                reasons = getattr(agent, "stop_reasons", None)
                st["stop"] = (reasons[b] if reasons else None) or "agent stopped"
                continue
            skill = int(skill)
            if not 0 <= skill < len(SKILLS):
                raise ValueError(f"agent issued skill {skill}, outside [0, {len(SKILLS)})")
            _, _, terminated, _, step_info = envs[b].step(skill)
            st["skills"].append(skill)
            st["success"] = st["judge"].update(terminated, step_info)
            _trace(st, jobs[st["job"]][0], skill, step_info)
            stepped.append(b), skills.append(skill), frames.append(step_info["frames"]), infos.append(step_info)
        if stepped:
            agent.observe_batch(stepped, skills, frames, infos)
        for b, f in zip(stepped, frames):
            st = state[b]
            if keep[st["job"]]:
                st["real"].extend(f)
                guesses = getattr(agent, "last_imagined", None)
                guess = guesses[b] if guesses is not None else None
                st["imagined"].extend(guess if guess is not None else np.zeros_like(f))
            if st["success"]:
                st["stop"] = "success"
            elif len(st["skills"]) >= st["budget"]:
                st["stop"] = "budget"
        for b in active:
            st = state[b]
            if st["stop"] is None:
                continue
            j, k = st["job"], keep[st["job"]]
            task, seed = jobs[j]
            notes = list((getattr(agent, "notes", None) or {}).get(b, []))
            results[j] = r = EpisodeResult(
                task, int(seed), st["info"]["instruction"], st["success"], len(st["skills"]), st["skills"],
                time.perf_counter() - st["start"], st["stop"], np.stack(st["real"]) if k else None,
                np.stack(st["imagined"]) if k and st["imagined"] else None, notes, st["to_go"])
            state[b] = None
            if on_done is not None:
                on_done(r)


def skills_to_go_after(task: str, judge: SuccessJudge, sim: np.ndarray, skill: int | None = None,
                       step_info: dict | None = None) -> tuple[int, np.ndarray]:
    """The skills ``task`` (one of `envs.real.tasks.LABELLED_TASKS`) still needs after the chunk that ran ``skill``
    from simulator state ``sim`` (``step_info``: the scene's, ``judge`` already updated with it), or at the reset
    (no chunk), and the simulator state the chunk ended in."""
    from envs.real.tasks import cube_under_way, skills_to_go

    held = None
    if step_info is not None:
        end = np.asarray(step_info["sim_states"])[-1:]
        held = cube_under_way([skill], [step_info["success"]], np.asarray(sim)[None], end)
        sim = end[0]
    memory = [judge.reached == len(judge.milestones)]
    return int(skills_to_go(task, np.asarray(sim)[None], held, memory, judge.start, judge.away)[0]), np.asarray(sim)


def _trace(st: dict, task: str, skill: int | None = None, step_info: dict | None = None) -> None:
    """Append the skills ``task`` still needs after this chunk (or at the reset) to the episode's ``to_go`` trace."""
    from envs.real.tasks import LABELLED_TASKS

    if task in LABELLED_TASKS:
        to_go, st["sim"] = skills_to_go_after(task, st["judge"], st["sim"], skill, step_info)
        st["to_go"].append(to_go)


def run_real_episode(agent: Agent, env: Any, task: str, seed: int, spec: SceneSpec | None = None,
                     keep_frames: bool = False) -> EpisodeResult:
    """One episode of ``task`` (seeded) with ``agent`` in its slot 0 (`run_real_episodes`)."""
    return run_real_episodes(agent, [env], [(task, seed)], spec, keep_frames)[0]  # type: ignore[return-value]


# ------------------------------------------------------------------------------------- baselines
class RandomSkillAgent:
    """A uniformly random skill every chunk (seeded per episode by the scene's seed)."""

    name = "random skills"

    def __init__(self, num_episodes: int = 1, seed: int = 0):
        self.num_episodes, self.seed = num_episodes, seed
        self.rngs = [np.random.default_rng([seed, b]) for b in range(num_episodes)]

    def reset_episode(self, b: int, frame: np.ndarray, info: dict) -> None:
        self.rngs[b] = np.random.default_rng([self.seed, int(info.get("seed", 0))])

    def act_batch(self, ids: Sequence[int]) -> list[int]:
        return [int(self.rngs[b].integers(len(SKILLS))) for b in ids]

    def observe_batch(self, ids, skills, frames, infos) -> None:
        pass


class ExpertAgent:
    """The scripted expert: the task's skill plan, each skill repeated (up to ``max_tries`` chunks) until
    the scene reports it achieved (`envs.real.rollout.ScriptedExpert`); it stops when the plan is done."""

    name = "scripted expert"

    def __init__(self, num_episodes: int = 1, max_tries: int = 3):
        self.num_episodes, self.max_tries = num_episodes, max_tries
        self.experts: list[Any] = [None] * num_episodes
        self.last: list[bool | None] = [None] * num_episodes
        self.stop_reasons = ["plan done"] * num_episodes

    def reset_episode(self, b: int, frame: np.ndarray, info: dict) -> None:
        from envs.real.rollout import ScriptedExpert

        self.experts[b], self.last[b] = ScriptedExpert(tuple(info["plan"]), self.max_tries), None

    def act_batch(self, ids: Sequence[int]) -> list[int | None]:
        return [self.experts[b].act(self.last[b]) for b in ids]

    def observe_batch(self, ids, skills, frames, infos) -> None:
        for b, info in zip(ids, infos):
            self.last[b] = bool(info["success"])


# ---------------------------------------------------------------------------------- instructions
class UnknownInstruction(ValueError):
    """An instruction the agents cannot work from (unknown words, or no task it names)."""


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def known_instructions(seeds: int = 20) -> dict[str, str]:
    """Instruction text -> task name over the task suite (random tasks built with ``seeds`` seeds and
    the scene's default distractor range)."""
    out: dict[str, str] = {}
    for name in TASK_NAMES:
        task = get_task(name)
        for s in range(seeds):
            out.setdefault(task.build(np.random.default_rng(s), distractors=(1, 3)).instruction, name)
    return out


def vocabulary() -> set[str]:
    """Every word of the task instructions and the skills: what the reward heads were trained on."""
    words = {w for text in known_instructions() for w in _words(text)}
    return words | {w for s in SKILLS for w in _words(s)}


def check_instruction(text: Any) -> str:
    """``text`` when the agents can score it; else `UnknownInstruction` saying why and what is known."""
    if not isinstance(text, str) or not _words(text):
        raise UnknownInstruction(f"the instruction must be non-empty text, got {text!r}")
    unknown = sorted(set(_words(text)) - vocabulary())
    if unknown:
        raise UnknownInstruction(
            f"cannot follow {text!r}: the words {', '.join(repr(w) for w in unknown)} appear in no task or skill "
            f"the reward heads learned, so no plan can be scored against it. Known tasks: {', '.join(TASK_NAMES)}; "
            f"skills: {'; '.join(SKILLS)}.")
    return text


def task_for_instruction(text: str) -> str:
    """The task whose instruction ``text`` is (case and spacing ignored), or a skill's single-skill task is
    refused: the real scene judges success against a task's goal, so only task instructions can be run."""
    check_instruction(text)
    key = " ".join(_words(text))
    for known, name in known_instructions().items():
        if " ".join(_words(known)) == key:
            return name
    raise UnknownInstruction(
        f"no task of the real scene has the instruction {text!r}, so its success cannot be judged there (its words "
        f"are known, but the scene checks success against a task's goal). Run a task by name (--tasks) instead; "
        f"tasks: {', '.join(TASK_NAMES)}.")


def check_tasks(names: Sequence[str]) -> list[str]:
    """Task names, each checked (`UnknownInstruction` lists the valid ones)."""
    names = list(names)
    if not names:
        raise UnknownInstruction(f"no tasks given; tasks: {', '.join(TASK_NAMES)}")
    for n in names:
        if n not in TASK_NAMES:
            raise UnknownInstruction(f"unknown task {n!r}; tasks: {', '.join(TASK_NAMES)}")
        if n == "play":
            raise UnknownInstruction("task 'play' has no goal (random skills for data coverage): there is no success "
                                     f"to measure; pick from {', '.join(t for t in TASK_NAMES if t != 'play')}")
    return names
