"""The action test (issue 14): from the same real start, do two different skills give imagined videos that
differ where the real ones do?

For each start (a task's reset scene at a seed, optionally after ``prefix`` chunks of its scripted expert
plan) every skill of ``skills`` is run in the real scene (`envs.real.scene.RealSceneEnv`, replayed from the
same seed, so every branch starts from the same simulator state) for ``chunks`` chunks; the world model's
imagination core (`worldmodel.Imagination`, Φ alone) imagines the same chunks from the same real context
frames, with the same noise seed for every skill, under each skill's action (its language and the robot's
mean low-level action behind each real frame, as the model was trained). For each pair of skills (a, b):

- the *real difference region* R: pixels where the two real videos differ by more than 24/255 in any
  channel (`evaluation.metrics.dynamic_region` with the other real video as reference);
- ``inside`` / ``outside``: the imagined pair's mean absolute difference (0-255, averaged over channels)
  inside R and outside it; ``contrast`` = inside - outside (> 0: the imagined videos differ more where
  the real ones do);
- ``iou``: intersection over union of the imagined difference mask (the same 24/255 rule on the imagined
  pair) with R (1: the imagined skills change exactly the pixels the real ones change; 0: none of them).

Noise control: each skill is imagined a second time with another noise seed; the same scores for that
same-action pair (against the region of each pair that skill is in) measure how much two imagined videos
differ by sampling noise alone. An action that the model follows gives pair scores well above the control.
Identical actions with the same seed give identical videos (inside = outside = 0, IoU 0).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from envs.real.skills import SKILLS, skill_id
from envs.real.tasks import get_task
from worldmodel.imagination import Imagination

from .metrics import DYNAMIC_THRESHOLD, dynamic_region
from .rollout import model_action
from .run_info import provenance_lines
from .scoring import summarize

DEFAULT_SKILLS: tuple[str, ...] = ("open the drawer", "open the window", "press the left button",
                                   "put the cube on the right of the table")
DEFAULT_TASKS: tuple[str, ...] = ("task1_open", "task2_unlock_and_lock", "task3_rearrange_medium",
                                  "task4_put_in_drawer", "task5_rearrange_hard", "memory_drawer")
SCORES = ("region_fraction", "real_inside", "inside", "outside", "contrast", "iou")


@dataclass
class ActionTestConfig:
    skills: tuple[str, ...] = DEFAULT_SKILLS
    tasks: tuple[str, ...] = DEFAULT_TASKS  # start i is task tasks[i % len(tasks)] at seed seed * 1000 + i
    starts: int = 4
    seed: int = 1
    prefix: int = 0  # expert chunks played before the branch point
    chunks: int = 1  # chunks each skill runs after it
    frame_skip: int = 8  # sim steps per kept frame (the model's training data: 8)
    steps: int | None = None  # denoising steps (None: the model's)
    threshold: float = DYNAMIC_THRESHOLD
    render_backend: str = "auto"

    def __post_init__(self) -> None:
        self.skills = tuple(SKILLS[skill_id(s)] for s in self.skills)
        self.tasks = tuple(get_task(t).name for t in self.tasks)
        if not self.tasks:
            raise ValueError("the action test needs at least one task")
        if len(set(self.skills)) < 2:
            raise ValueError(f"the action test needs at least two different skills, got {self.skills}")
        if self.starts < 1 or self.chunks < 1 or self.prefix < 0 or self.frame_skip < 1:
            raise ValueError(f"starts, chunks, frame_skip must be >= 1 and prefix >= 0: {self}")


def pair_score(real_a: np.ndarray, real_b: np.ndarray, imag_a: np.ndarray, imag_b: np.ndarray,
               threshold: float = DYNAMIC_THRESHOLD) -> dict[str, float]:
    """Scores of one imagined pair against its real pair (all uint8 ``(T, H, W, 3)``; see the module
    docstring). NaN where a mean has no pixels (e.g. the real videos do not differ at all)."""
    region = dynamic_region(real_a, real_b, threshold)
    imagined = dynamic_region(imag_a, imag_b, threshold)
    diff = np.abs(imag_a.astype(np.float64) - imag_b.astype(np.float64)).mean(axis=-1)
    real_diff = np.abs(real_a.astype(np.float64) - real_b.astype(np.float64)).mean(axis=-1)

    def mean(x: np.ndarray, m: np.ndarray) -> float:
        return float(x[m].mean()) if m.any() else float("nan")

    union = int((region | imagined).sum())
    inside, outside = mean(diff, region), mean(diff, ~region)
    return {
        "region_fraction": 100.0 * float(region.mean()),
        "real_inside": mean(real_diff, region),
        "inside": inside,
        "outside": outside,
        "contrast": inside - outside,
        "iou": float((region & imagined).sum()) / union if union else float("nan"),
    }


@dataclass
class RealBranches:
    """One start's real videos: the context frames before the branch point and each skill's chunks."""

    task: str
    seed: int
    context: np.ndarray  # (P, H, W, 3): the reset frame and the prefix's frames
    frames: dict[str, np.ndarray] = field(default_factory=dict)  # skill -> (chunks * L, H, W, 3)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # skill -> (chunks * L, 5)


def make_scene(frame_size: int, chunk_len: int, cfg: ActionTestConfig):
    from envs.real.scene import RealSceneEnv

    return RealSceneEnv(task=cfg.tasks[0], action_type="skill", width=frame_size, height=frame_size,
                        chunk_len=chunk_len, frame_skip=cfg.frame_skip, max_chunks=10_000,
                        render_backend=cfg.render_backend)


def real_branches(env: Any, task: str, seed: int, skills: Sequence[str], prefix: int, chunks: int) -> RealBranches:
    """Replay the start (reset at ``seed``, then ``prefix`` chunks of the expert's plan) once per skill and
    run that skill ``chunks`` chunks from it; checks that every replay reaches the same frames."""
    out: RealBranches | None = None
    for skill in skills:
        frame, info = env.reset(seed=int(seed), options={"task": task})
        context = [frame[None]]
        for sid in list(info["plan"])[:prefix]:
            context.append(env.step(int(sid))[4]["frames"])
        context_frames = np.concatenate(context)
        if out is None:
            out = RealBranches(task, int(seed), context_frames)
        elif not np.array_equal(out.context, context_frames):
            raise RuntimeError(f"{task} seed {seed}: replaying the start gave different frames (not deterministic)")
        steps = [env.step(skill_id(skill))[4] for _ in range(chunks)]
        out.frames[skill] = np.concatenate([s["frames"] for s in steps])
        out.vectors[skill] = np.concatenate([s["actions"] for s in steps]).astype(np.float32)
    assert out is not None
    return out


@torch.no_grad()
def imagine_branches(model: Any, real: RealBranches, skills: Sequence[str], chunks: int, seed: int,
                     steps: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each skill imagined from the real context with noise seed ``seed`` (the same for all skills), and
    again with seed ``seed + 1`` (the noise control). Returns two dicts skill -> uint8 (chunks * L, H, W, 3)."""
    n, tn = len(skills), model.config.new_frames
    core = Imagination(model, 2 * n, None, denoise_steps=steps)
    core.reset(None, [real.context] * (2 * n), seeds=[seed] * n + [seed + 1] * n)
    pieces: list[list[np.ndarray]] = [[] for _ in range(2 * n)]
    for c in range(chunks):
        texts = [s for s in skills] * 2
        vectors = np.stack([real.vectors[s][c * tn:(c + 1) * tn] for s in skills] * 2)
        frames = core.step(None, model_action(model, texts, vectors)).frames.cpu().numpy()
        for k in range(2 * n):
            pieces[k].append(frames[k])
    videos = [np.concatenate(p) for p in pieces]
    return dict(zip(skills, videos[:n])), dict(zip(skills, videos[n:]))


def run_action_test(model: Any, cfg: ActionTestConfig, log=print) -> dict:
    """Every start's real branches and imagined branches, scored per pair and summarised (see the module
    docstring). Returns ``pairs`` (per start and pair), ``controls`` (per start, pair and skill: the same
    skill under two noise seeds), ``summary`` (mean ± std of each score) and the first start's videos."""
    size, tn = model.config.frame_size, model.config.new_frames
    env = make_scene(size, tn, cfg)
    pairs, controls, example = [], [], None
    try:
        for i in range(cfg.starts):
            task, seed = cfg.tasks[i % len(cfg.tasks)], cfg.seed * 1000 + i
            real = real_branches(env, task, seed, cfg.skills, cfg.prefix, cfg.chunks)
            imagined, control = imagine_branches(model, real, cfg.skills, cfg.chunks, cfg.seed * 1_000_003 + i,
                                                 cfg.steps)
            for a, b in itertools.combinations(cfg.skills, 2):
                base = {"start": i, "task": task, "seed": seed, "a": a, "b": b}
                pairs.append({**base, **pair_score(real.frames[a], real.frames[b], imagined[a], imagined[b],
                                                   cfg.threshold)})
                for s in (a, b):  # the same skill twice, other noise: scored against this pair's region
                    controls.append({**base, "skill": s, **pair_score(real.frames[a], real.frames[b], imagined[s],
                                                                      control[s], cfg.threshold)})
            if example is None:
                example = {"task": task, "seed": seed, "context": real.context, "real": dict(real.frames),
                           "imagined": imagined}
            log(f"action test: start {i + 1}/{cfg.starts} ({task}, seed {seed}) done")
    finally:
        env.close()
    summary = {"pairs": {k: summarize([p[k] for p in pairs]) for k in SCORES},
               "noise_control": {k: summarize([p[k] for p in controls]) for k in SCORES}}
    return {"config": {**asdict(cfg), "skills": list(cfg.skills), "tasks": list(cfg.tasks)}, "summary": summary,
            "pairs": pairs, "controls": controls, "example": example}


def markdown(result: dict) -> str:
    """The action test's report: the summary table, then per pair."""
    from .report import fmt

    s, cfg = result["summary"], result["config"]
    lines = [
        "# Action test: do two skills from the same real start differ where the real ones do?",
        "",
        *provenance_lines(result),
        f"- model: `{result['model']}`; starts: {cfg['starts']} (tasks {', '.join(cfg['tasks'])}; seeds "
        f"{cfg['seed'] * 1000}..); expert chunks before the branch: {cfg['prefix']}; chunks per skill: "
        f"{cfg['chunks']}; frame skip {cfg['frame_skip']}; skills: {'; '.join(cfg['skills'])}",
        "",
        "| imagined pair | real region (% of pixels) | real diff inside | imagined diff inside ↑ | imagined diff "
        "outside ↓ | contrast ↑ | IoU ↑ | pairs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, key in (("two skills, same noise", "pairs"), ("same skill, two noise seeds (control)", "noise_control")):
        st = s[key]
        lines.append(f"| {name} | {fmt(st['region_fraction'])} | {fmt(st['real_inside'])} | {fmt(st['inside'])} | "
                     f"{fmt(st['outside'])} | {fmt(st['contrast'])} | {fmt(st['iou'], 3)} | {st['iou']['n']} |")
    lines += ["", "Per pair (two skills, same noise):", "",
              "| start | task | skill a | skill b | region % | inside | outside | IoU |", "|---|---|---|---|---|---|---|---|"]
    for p in result["pairs"]:
        lines.append(f"| {p['start']} | {p['task']} | {p['a']} | {p['b']} | {fmt(p['region_fraction'], 1)} | "
                     f"{fmt(p['inside'], 1)} | {fmt(p['outside'], 1)} | {fmt(p['iou'], 3)} |")
    lines += ["", "Notes:", "",
              f"- Real region: pixels where the two real videos differ by more than {cfg['threshold']:g}/255 in any "
              "channel. Inside/outside: the imagined pair's mean absolute difference (0-255, mean over channels) "
              "inside/outside that region; contrast = inside - outside; IoU of the imagined pair's difference mask "
              "(same rule) with the real region. Mean ± std over pairs.",
              "- Each skill's action is its language and the robot's mean low-level action behind each real frame "
              "(as in the training data); every skill of a start is imagined from the same real context frames with "
              "the same noise seed (Φ alone, no Temp-LoRA). Control: the same skill imagined with another noise "
              "seed, scored against the region of each pair it is in: what sampling noise alone gives.",
              *[f"- {n}" for n in result.get("notes", [])]]
    return "\n".join(lines) + "\n"


def example_sheet(example: dict, scale: int = 2) -> np.ndarray:
    """A PNG-able sheet of the first start: per skill a row of real frames and a row of imagined ones (the
    last real context frame first), captioned."""
    from .videos import caption_frame, fixed_lines, wrap_text

    rows = []
    for skill in example["real"]:
        for kind, video in (("real", example["real"][skill]), ("imagined", example["imagined"][skill])):
            frames = [example["context"][-1], *video]
            tiles = [caption_frame(f, fixed_lines([f"{kind} t={t}" if t else "start"], 4), scale)
                     for t, f in enumerate(frames)]
            label = caption_frame(np.zeros_like(frames[0]), fixed_lines(wrap_text(skill, 5 * scale)[:3] + [kind], 4),
                                  scale)
            rows.append(np.concatenate([label, *tiles], axis=1))
    return np.concatenate(rows, axis=0)
