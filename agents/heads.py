"""The learned reward / success / termination heads the agents are scored by (`worldmodel.heads`).

The shipped model may come without ``heads/``; then `resolve_heads` fits them on the same fixed real
dataset the world model learned from (h5 episodes, `envs.episodes`), holding out a share of the episodes
to report how well they judge real frames, and saves them for the next run. The agent never touches the
real scene for this: only recorded episodes.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from worldmodel.heads import (HeadsConfig, LabelSet, RewardHeads, examples_from_episodes, own_labels, predict_examples,
                              train_heads)

HEADS_DIR = "heads"


@dataclass
class HeadsFit:
    """How fitted heads did on held-out real episodes (chunk-level)."""

    train_chunks: int
    heldout_chunks: int
    success_accuracy: float
    terminated_accuracy: float
    reward_mae: float
    final_loss: float
    relabelled: bool = False  # trained with `scene_labels` (hindsight labels of tasks 1-5 and the memory tasks)
    # held-out chunks judged against every `RELABEL_TASKS` instruction (scene episodes with recorded states):
    hindsight_chunks: int = 0
    hindsight_false_done: float = float("nan")  # share of not-done (chunk, instruction) pairs called done
    hindsight_missed_done: float = float("nan")  # share of done pairs not called done
    hindsight_reward_mae: float = float("nan")  # reward error on those pairs (those tasks' rewards, 0 at the goal)
    hindsight_per_task: dict = field(default_factory=dict)  # task -> pairs, false_done, missed_done[, to_go_mae]
    hindsight_to_go_mae: float = float("nan")  # skills-to-go error on those pairs (heads with a to_go output)
    # share of those pairs (not at the goal, some skill helps) whose most likely next skill brings the goal closer
    # (heads with a next-skill output; chance is about 1 in 10)
    hindsight_next_skill_accuracy: float = float("nan")
    # the same hindsight numbers on the world model's imagined copies of the held-out episodes (teacher-forced chunks, or
    # free rollouts with `fit_heads --imagined-mode free`)
    # (`evaluation.rollout.imagined_episodes`)
    imagined: dict = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def hindsight(self) -> dict[str, Any]:
        """The hindsight numbers alone (what `imagined` holds for the model's chunks)."""
        return {k: v for k, v in self.as_dict().items() if k.startswith("hindsight")}


def iter_episodes(source: str | Path, limit: int | None = None) -> Iterator[dict]:
    """Episodes of an h5 file or a folder of shards, in sorted order (at most ``limit``)."""
    from envs.episodes import h5_files, list_episodes, read_episode

    files = h5_files(str(source))
    if not files:
        raise FileNotFoundError(f"no h5 episode files at {source}")
    count = 0
    for path in files:
        for key in list_episodes(path):
            if limit is not None and count >= limit:
                return
            yield read_episode(path, key)
            count += 1


def scene_labels(episode: dict) -> list[LabelSet]:
    """Hindsight labels of a recorded scene episode: its own (`own_labels`), then for each task with a fixed goal
    scene (`envs.real.tasks.RELABEL_TASKS`: tasks 1-5 and the drawer memory tasks) its `task_labels`. An episode of
    such a task, or of `memory_cube_return` (whose goal is its own start scene), is labelled by the state alone under
    its own instruction. Episodes without ``sim_state`` (Crafter, synthetic) keep only their own labels.

    Why: trained on their own instructions only, the heads never see a task's instruction beside a scene that
    misses its goal unless an expert episode of that task passes through it, and they called a cube on the
    table "put in the drawer" (docs/RESULTS.md, "Why the planner fails task 1"). Every episode, play included,
    is a negative or positive example of every task here.
    """
    return [labels for _, labels in _tagged_scene_labels(episode)]


def _tagged_scene_labels(episode: dict) -> list[tuple[str | None, LabelSet]]:
    """`scene_labels` with the task each label set is for (None: the episode's own labels of a task without a
    fixed goal scene, e.g. play), in the same order."""
    from envs.real.tasks import RELABEL_TASKS, RETURN_TASK

    if "sim_state" not in episode or not len(episode["sim_state"]):
        return [(None, labels) for labels in own_labels(episode)]
    own_task = episode["attrs"].get("task")
    if own_task in RELABEL_TASKS:  # labelled below with the others
        own = []
    elif own_task == RETURN_TASK:  # its goal is its own start: only its own episodes are labelled
        own = [(RETURN_TASK, task_labels(episode, RETURN_TASK))]
    else:
        own = [(None, own_labels(episode)[0])]
    return own + [(task, task_labels(episode, task)) for task in RELABEL_TASKS]


def task_labels(episode: dict, task: str) -> LabelSet:
    """``task``'s labels of a recorded scene episode (``task`` one of `envs.real.tasks.LABELLED_TASKS`;
    `memory_cube_return` only for its own episodes, its goal being their start scene): an instruction of the task
    with reward and "done" judged on the recorded simulator state at each chunk's end (`goal_conditions`: the
    simulator's own check, so the episode's own task gets its recorded reward back). An episode of ``task`` keeps its
    own instruction, and a chunk that already shows the goal is done there too (the recorded end comes later when
    the expert's skill check lags). A memory task's goal scene is done only once its memory part has happened
    (`memory_part_done`, the success judge's rule): a drawer task's plan passes through the goal scene right after
    hiding the cube, and a planner that imagined that scene as "done" reopened the drawer there instead of locking
    it (session 14); `memory_cube_return` starts in its goal scene. A drawer memory task's
    instruction for another episode is drawn with random distractors (`relabel_instruction`), seeded by the
    episode's states and the task, so the labels repeat. The fourth array: the skills still needed at each chunk's
    end (`skills_to_go`), and the fifth the skills that bring the goal one closer from there (`next_skills`); both
    count a chunk whose cube skill was not achieved and moved the cube as ending with the cube still under way
    ("held"), and for a memory task go through its memory part where the episode had not yet done it."""
    from agents.real_scene import memory_part_done
    from envs.real.skills import SKILLS
    from envs.real.tasks import (RELABEL_TASKS, RETURN_TASK, away_slot, cube_under_way, goal_conditions, next_skills,
                                 relabel_instruction, skills_to_go)

    attrs = episode["attrs"]
    L, K = int(attrs["chunk_len"]), len(episode["reward"])
    states = np.asarray(episode["sim_state"])
    ends = states[(np.arange(K) + 1) * L]
    held = cube_under_way(episode.get("skill_ids", np.full(K, -1)), episode["success"], states[np.arange(K) * L], ends)
    if task == attrs.get("task"):
        text = str(attrs.get("instruction", ""))
    else:
        seed = zlib.crc32(np.ascontiguousarray(states, np.float32).tobytes())
        text = relabel_instruction(task, np.random.default_rng([seed, RELABEL_TASKS.index(task)]))
    memory = memory_part_done(task, states, text)[(np.arange(K) + 1) * L]  # a memory task's part done by then
    away = away_slot(text) if task == RETURN_TASK else None
    conditions = goal_conditions(task, ends, states[0])
    return (text, (conditions.sum(1) - conditions.shape[1]).astype(np.float32), conditions.all(1) & memory,
            skills_to_go(task, ends, held, memory, states[0], away).astype(np.float32),
            next_skills(task, ends, len(SKILLS), held, memory, states[0], away))


def heldout_split(episodes: list[dict], heldout: float) -> tuple[list[dict], list[dict]]:
    """(training, held-out) episodes: every ``1/heldout``-th episode is held out (none for ``heldout`` 0)."""
    every = max(2, round(1 / heldout)) if heldout > 0 else 0
    test = [e for i, e in enumerate(episodes) if every and i % every == every - 1]
    return [e for i, e in enumerate(episodes) if not (every and i % every == every - 1)], test


def fit_heads(source: str | Path, frame_size: int, steps: int = 2000, batch_size: int = 64, lr: float = 1e-3,
              heldout: float = 0.1, max_episodes: int | None = None, seed: int = 0,
              device: str | torch.device = "cpu", config: HeadsConfig | None = None,
              relabel: bool = True, init: RewardHeads | None = None,
              imagine: Callable[[list[dict]], list[dict]] | None = None,
              next_skill: int = 0, history: bool = False, progress: bool = False) -> tuple[RewardHeads, HeadsFit]:
    """Fit heads on real episodes (every ``1/heldout``-th episode held out) and measure them there: on the
    held-out episodes' own instructions, and against every `RELABEL_TASKS` instruction (`scene_labels`), also
    per task. ``relabel``: train on `scene_labels` too (else on the episodes' own labels only). ``init``: continue
    from these heads (their config) instead of fresh ones. ``imagine`` (e.g. `evaluation.rollout.imagined_episodes`):
    train on its copies of the training episodes too, and measure on its copies of the held-out ones.
    ``next_skill`` > 0: the heads get (or keep) a next-skill output over that many skills
    (`RewardHeads.with_next_skill`) and learn it from the hindsight labels. ``history``: the heads read the episode
    so far too (`HeadsConfig.history`; ``init`` grows it with `RewardHeads.with_history`). ``progress``: a progress
    bar over the steps."""
    episodes = [e for e in iter_episodes(source, max_episodes) if len(e["reward"])]
    if not episodes:
        raise ValueError(f"{source}: no episodes with chunks to fit reward heads on")
    size = episodes[0]["frames"].shape[1]
    if size != frame_size:
        raise ValueError(f"{source} holds {size}x{size} frames but the model makes {frame_size}x{frame_size} ones")
    train_eps, test_eps = heldout_split(episodes, heldout)
    if init is not None and next_skill:
        init = init.with_next_skill(next_skill)
    if init is not None and history:
        init = init.with_history()
    cfg = init.config if init is not None else config or HeadsConfig(frame_size=frame_size, skills=next_skill,
                                                                     history=history)
    imagined_test = []
    if imagine is not None:
        train_eps, imagined_test = train_eps + imagine(train_eps), imagine(test_eps)
    train = examples_from_episodes(train_eps, cfg.num_frames, scene_labels if relabel else own_labels, cfg.history)
    if init is not None:
        heads = init.to(device)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            heads = RewardHeads(cfg).to(device)
    losses = train_heads(heads, train, steps=steps, batch_size=batch_size, lr=lr, seed=seed, progress=progress)
    fit = HeadsFit(len(train), 0, float("nan"), float("nan"), float("nan"), float(np.mean(losses[-20:])), relabel)
    if test_eps:
        judge_heads(heads, test_eps, fit)
    if imagined_test:
        fit.imagined = judge_heads(heads, imagined_test, HeadsFit(0, 0, *[np.nan] * 4)).hindsight()
    return heads, fit


def judge_heads(heads: RewardHeads, episodes: list[dict], fit: HeadsFit) -> HeadsFit:
    """Fill ``fit``'s held-out numbers: accuracy on the episodes' own labels, and the hindsight error rates."""
    k, history = heads.config.num_frames, heads.config.history
    test = examples_from_episodes(episodes, k, history=history)
    pred = predict_examples(heads, test)
    fit.heldout_chunks = len(test)
    fit.success_accuracy = float(np.mean((pred["success"] > 0.5) == test.success))
    fit.terminated_accuracy = float(np.mean((pred["terminated"] > 0.5) == test.terminated))
    fit.reward_mae = float(np.mean(np.abs(pred["reward"] - test.reward)))
    scene = [e for e in episodes if "sim_state" in e and len(e["sim_state"])]
    if scene:
        hind = examples_from_episodes(scene, k, scene_labels, history)
        pred = predict_examples(heads, hind)
        done = pred["terminated"] > 0.5
        fit.hindsight_chunks = len(hind)
        fit.hindsight_reward_mae = float(np.mean(np.abs(pred["reward"] - hind.reward)))
        fit.hindsight_false_done, fit.hindsight_missed_done = _done_errors(done, hind.terminated)
        to_go_error = np.abs(pred["to_go"] - hind.to_go) if "to_go" in pred else np.full(len(hind), np.nan)
        fit.hindsight_to_go_mae = _finite_mean(to_go_error)
        if "next_skill" in pred and hind.next_skill is not None:
            labelled = hind.next_skill.any(1)
            best = pred["next_skill"].argmax(1)
            hits = hind.next_skill[np.arange(len(best)), best]
            fit.hindsight_next_skill_accuracy = float(hits[labelled].mean()) if labelled.any() else float("nan")
        # each example's task, in `examples_from_episodes`' order (K examples per label set)
        tags = np.array([task for e in scene for task, (_, reward, *_) in _tagged_scene_labels(e)
                         for _ in range(len(reward))], dtype=object)
        for task in dict.fromkeys(t for t in tags if t is not None):
            mask = tags == task
            false_done, missed_done = _done_errors(done[mask], hind.terminated[mask])
            fit.hindsight_per_task[task] = {"pairs": int(mask.sum()), "done_pairs": int(hind.terminated[mask].sum()),
                                            "false_done": false_done, "missed_done": missed_done,
                                            "to_go_mae": _finite_mean(to_go_error[mask])}
    return fit


def _finite_mean(x: np.ndarray) -> float:
    """Mean over the finite entries; nan where there are none."""
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else float("nan")


def _done_errors(called: np.ndarray, done: np.ndarray) -> tuple[float, float]:
    """(share of not-done pairs called done, share of done pairs not called done); nan where there are none."""
    false_done = float(called[~done].mean()) if (~done).any() else float("nan")
    missed_done = float((~called[done]).mean()) if done.any() else float("nan")
    return false_done, missed_done


def describe_fit(fit: HeadsFit) -> str:
    return (f"reward heads on held-out real chunks: success accuracy {fit.success_accuracy:.3f}, terminated accuracy "
            f"{fit.terminated_accuracy:.3f}, reward MAE {fit.reward_mae:.3f} ({fit.heldout_chunks} chunks); against "
            f"every task instruction (tasks 1-5, memory): false done {fit.hindsight_false_done:.3f}, missed done "
            f"{fit.hindsight_missed_done:.3f}, reward MAE {fit.hindsight_reward_mae:.3f}, skills-to-go MAE "
            f"{fit.hindsight_to_go_mae:.3f}, next-skill accuracy {fit.hindsight_next_skill_accuracy:.3f} "
            f"({fit.hindsight_chunks} pairs)"
            + "".join(f"\n  {task}: false done {v['false_done']:.3f}, missed done {v['missed_done']:.3f}, skills-to-go "
                      f"MAE {v['to_go_mae']:.3f} ({v['done_pairs']} of {v['pairs']} pairs done)"
                      for task, v in fit.hindsight_per_task.items())
            + (f"\non the model's imagined copies of those episodes: false done "
               f"{fit.imagined['hindsight_false_done']:.3f}, missed done {fit.imagined['hindsight_missed_done']:.3f}, "
               f"skills-to-go MAE {fit.imagined['hindsight_to_go_mae']:.3f}"
               + "".join(f"\n  {task}: false done {v['false_done']:.3f}, missed done {v['missed_done']:.3f}"
                         for task, v in fit.imagined["hindsight_per_task"].items()) if fit.imagined else ""))


def _shown(path: Path) -> str:
    """``path`` as results record it: relative to the working directory where it lies inside it, so that a
    result file names the shipped heads as `worldmodel/weights/default/heads`, not a machine's absolute path."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def resolve_heads(spec: Any, model_folder: Path | None, data: str | Path | None, out_dir: Path | None,
                  frame_size: int, device: str | torch.device = "cpu", fit_steps: int = 2000,
                  max_episodes: int | None = None, seed: int = 0, log=print) -> tuple[RewardHeads, dict]:
    """The heads to score by, and where they came from.

    ``spec``: a heads folder, or None: the model folder's ``heads/``, else ``out_dir/heads`` from an earlier
    fit, else fitted on ``data`` (saved to ``out_dir/heads`` with ``fit.json``). Without any, a clear error.
    """
    if isinstance(spec, RewardHeads):
        return spec.to(device), {"source": "given"}
    if spec:
        return RewardHeads.from_pretrained(spec, device), {"source": str(spec)}
    if model_folder is not None and (Path(model_folder) / HEADS_DIR).is_dir():
        path = Path(model_folder) / HEADS_DIR
        return RewardHeads.from_pretrained(path, device), {"source": _shown(path)}
    if out_dir is not None and (Path(out_dir) / HEADS_DIR / "heads.json").is_file():
        path = Path(out_dir) / HEADS_DIR
        info = json.loads((path / "fit.json").read_text()) if (path / "fit.json").is_file() else {}
        return RewardHeads.from_pretrained(path, device), {"source": _shown(path), **info}
    if not data:
        raise SystemExit("no reward heads: the model has no heads/ folder and no heads were given. Pass heads=FOLDER "
                         "(--heads), or the real dataset the world model learned from (data=PATH / --data, h5 "
                         "episodes) to fit them on it.")
    return fit_and_save(data, frame_size, None if out_dir is None else Path(out_dir) / HEADS_DIR, device=device,
                        steps=fit_steps, max_episodes=max_episodes, seed=seed, log=log)


def fit_and_save(data: str | Path, frame_size: int, path: Path | None, log=print, **fit_kwargs
                 ) -> tuple[RewardHeads, dict]:
    """`fit_heads` on ``data``, saved to ``path`` (a ``heads/`` folder) with ``fit.json``: the held-out accuracy."""
    log(f"fitting reward heads on {data} ({fit_kwargs.get('steps', 2000)} steps) ...")
    heads, fit = fit_heads(data, frame_size, **fit_kwargs)
    info = {"source": f"fitted on {data}", **fit.as_dict()}
    if path is not None:
        heads.save_pretrained(path)
        (Path(path) / "fit.json").write_text(json.dumps(info, indent=2))
    log(describe_fit(fit))
    return heads, info
