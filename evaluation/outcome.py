"""Imagined outcome agreement (issue 14): does the imagined rollout of the expert's skill sequence end the
way the real one does, as the learned heads judge it?

For each task (default: scene tasks 1-5) and seed the scripted expert plays the real scene
(`envs.real.scene.RealSceneEnv`; each plan step repeated until the scene reports it achieved, as
`envs.real.rollout.ScriptedExpert`); with ``truncated`` the same start is played a second time with the
plan cut before its last step, so that real failures are judged too; with ``random_plans`` K, also K
random skill sequences of the plan's length (one chunk per skill), which a planner's candidates look like
and which mostly fail: agreement on them is the heads' false-positive check in imagination. The real
outcome is whether the task is done at the last chunk (`agents.real_scene.SuccessJudge`). The world model
then imagines the same skill sequence from the same real start frame (free rollout through `worldmodel.Imagination`; each chunk's
action is the skill's language and the robot's mean low-level action behind each real frame) and the
heads (`worldmodel.heads.RewardHeads`, trained on real frames) judge its last chunk: task done when
P(terminated) > ``threshold``. Agreement = share of episodes where that verdict equals the real outcome.

The heads are first judged on real frames: on held-out real episodes (their fit, or ``--heads-data``) and
on the real rollouts of this run (the same last-chunk verdict on the real frames: how far the heads alone
can be trusted). Per chunk the success head's verdict on the imagined chunk is compared with the real
chunk's skill success too.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from worldmodel.imagination import Imagination

from .rollout import model_action
from .run_info import provenance_lines

SCENE_TASKS: tuple[str, ...] = ("task1_open", "task2_unlock_and_lock", "task3_rearrange_medium",
                                "task4_put_in_drawer", "task5_rearrange_hard")


@dataclass
class OutcomeConfig:
    tasks: tuple[str, ...] = SCENE_TASKS
    seeds: int = 2  # per task; episode seeds seed * 1000 + k
    seed: int = 1
    truncated: bool = True  # also play each plan without its last step (a real failure)
    random_plans: int = 0  # per task and seed, random skill sequences of the plan's length (a planner's candidates)
    frame_skip: int = 8
    steps: int | None = None  # denoising steps (None: the model's)
    temp_lora: bool = False  # imagine with Temp-LoRA memory (BatchedTempLoRA) instead of Φ alone
    threshold: float = 0.5
    max_tries: int = 3
    render_backend: str = "auto"

    def __post_init__(self) -> None:
        from envs.real.tasks import get_task

        self.tasks = tuple(get_task(t).name for t in self.tasks)
        if not self.tasks or self.seeds < 1 or self.frame_skip < 1 or self.random_plans < 0:
            raise ValueError(f"need tasks, seeds >= 1, frame_skip >= 1 and random_plans >= 0: {self}")


@dataclass
class RealEpisode:
    task: str
    seed: int
    kind: str  # "expert", "expert without its last step" or "random skills"
    instruction: str
    skills: list[int]
    frames: np.ndarray  # (1 + K * L, H, W, 3)
    vectors: np.ndarray  # (K * L, 5)
    chunk_success: list[bool]
    success: bool  # the task is done at the last chunk
    imagined: np.ndarray | None = None  # (K * L, H, W, 3)
    verdicts: dict[str, Any] = field(default_factory=dict)


def play(env: Any, task: str, seed: int, kind: str, policy: Any) -> RealEpisode | None:
    """One real episode: ``policy(info)`` (info: the scene's reset info) gives ``act(last_success)``, the next
    skill id or None to stop; None when it plays no skill."""
    from agents.real_scene import SuccessJudge

    frame, info = env.reset(seed=int(seed), options={"task": task})
    act, judge = policy(info), SuccessJudge(task, info)
    frames, vectors, skills, chunk_success, done, last = [frame[None]], [], [], [], False, None
    while (sid := act(last)) is not None:
        _, _, terminated, _, st = env.step(int(sid))
        done = judge.update(terminated, st)
        last = bool(st["success"])
        skills.append(int(sid)), frames.append(st["frames"]), vectors.append(st["actions"]), chunk_success.append(last)
    if not skills:
        return None
    return RealEpisode(task, int(seed), kind, str(info["instruction"]), skills, np.concatenate(frames),
                       np.concatenate(vectors).astype(np.float32), chunk_success, bool(done))


def play_expert(env: Any, task: str, seed: int, drop_last: bool, max_tries: int = 3) -> RealEpisode | None:
    """The expert's episode (its plan without the last step when ``drop_last``), in the real scene; None when
    there is no skill left to play (a one-step plan without its step)."""
    from envs.real.rollout import ScriptedExpert

    def policy(info: dict) -> Any:
        plan = tuple(info["plan"])[:-1] if drop_last else tuple(info["plan"])
        return ScriptedExpert(plan, max_tries).act

    return play(env, task, seed, "expert without its last step" if drop_last else "expert", policy)


def play_random(env: Any, task: str, seed: int, rng: np.random.Generator) -> RealEpisode | None:
    """Random skills, one chunk each, as many as the task's plan has steps, in the real scene."""
    from envs.real.skills import SKILLS

    def policy(info: dict) -> Any:
        todo = iter(rng.integers(len(SKILLS), size=len(info["plan"])).tolist())
        return lambda last: next(todo, None)

    return play(env, task, seed, "random skills", policy)


@torch.no_grad()
def imagine(model: Any, episodes: Sequence[RealEpisode], seed: int, steps: int | None = None,
            temp_lora: bool = False) -> None:
    """Free rollout of every episode's skill sequence from its real start frame (all in one core; an episode
    stops stepping after its last chunk); sets ``episode.imagined``."""
    from envs.real.skills import SKILLS
    from worldmodel.memory import BatchedTempLoRA

    tn, n = model.config.new_frames, len(episodes)
    memory = BatchedTempLoRA(model, n) if temp_lora else None
    core = Imagination(model, n, memory, denoise_steps=steps)
    core.reset(None, [e.frames[:1] for e in episodes], seeds=[seed * 1_000_003 + i for i in range(n)])
    pieces: list[list[np.ndarray]] = [[] for _ in episodes]
    for c in range(max(len(e.skills) for e in episodes)):
        ids = [i for i, e in enumerate(episodes) if c < len(e.skills)]
        texts = [SKILLS[episodes[i].skills[c]] for i in ids]
        vectors = np.stack([episodes[i].vectors[c * tn:(c + 1) * tn] for i in ids])
        frames = core.step(ids, model_action(model, texts, vectors)).frames.cpu().numpy()
        for k, i in enumerate(ids):
            pieces[i].append(frames[k])
    for e, p in zip(episodes, pieces):
        e.imagined = np.concatenate(p)


def judge(heads: Any, episodes: Sequence[RealEpisode], new_frames: int, threshold: float) -> None:
    """The heads' verdicts on the last chunk of the real and of the imagined rollout (task done: P(terminated)
    > threshold) and the success head on every imagined chunk; sets ``episode.verdicts``. Heads that read the episode
    so far see each rollout's own earlier chunk ends (`worldmodel.heads.HeadsHistory`)."""
    from worldmodel.heads import HeadsHistory

    k = heads.config.num_frames
    for e in episodes:
        text, n = [e.instruction], len(e.skills)
        real, imagined = HeadsHistory(heads, 1), HeadsHistory(heads, 1)
        for seen in (real, imagined):
            seen.reset([0], [e.frames[:1]])
        success = []
        for c in range(n):
            end = (c + 1) * new_frames  # the chunk's end in the imagined frames (the real ones start with frame 0)
            pred = imagined.predict([0], e.imagined[None, max(0, end - k):end], text)
            success.append(bool(pred["success"][0] > threshold))
            if c < n - 1:
                real.observe([0], e.frames[None, end:end + 1])
        last = real.predict([0], e.frames[None, -k:], text)
        e.verdicts = {
            "p_done_real": float(last["terminated"][0]),
            "p_done_imagined": float(pred["terminated"][0]),
            "done_real_heads": bool(last["terminated"][0] > threshold),
            "done_imagined": bool(pred["terminated"][0] > threshold),
            "chunk_success_imagined": success,
        }


def load_heads(spec: str | None, model_folder: Any, model_name: str, data: str | None, out: Any, frame_size: int,
               device: Any, fit_steps: int, seed: int, heads_data: str | None = None, log=print) -> tuple[Any, dict]:
    """The heads to judge with (`agents.heads.resolve_heads`: ``spec``, the model's ``heads/``, ``out/heads``
    from an earlier fit, else fitted on ``data`` and saved in ``out``) and where they came from, with their
    accuracy on ``heads_data`` (held-out real h5 episodes) when given. Without any: SystemExit saying what to pass."""
    from pathlib import Path

    from agents.heads import HEADS_DIR, iter_episodes, resolve_heads

    out = Path(out)
    found = spec or (model_folder is not None and (Path(model_folder) / HEADS_DIR).is_dir()) or (out / HEADS_DIR).is_dir()
    if not found and not data:
        raise SystemExit(f"outcome: no success head to judge with: the model {model_name!r} has no {HEADS_DIR}/ folder "
                         "and none was given. Pass --heads FOLDER (trained heads), or --data PATH (real h5 training "
                         "episodes, e.g. from `python -m experiments.collect`) to fit them first.")
    out.mkdir(parents=True, exist_ok=True)
    heads, info = resolve_heads(spec, model_folder, data, out, frame_size, device, fit_steps=fit_steps, seed=seed, log=log)
    if heads_data:
        info["heads_data"] = {"source": heads_data, **heads_accuracy(heads, list(iter_episodes(heads_data)))}
    return heads, info


def heads_accuracy(heads: Any, episodes: Sequence[dict]) -> dict[str, float]:
    """The heads on real episodes (``envs.episodes`` dicts): chunk-level accuracy of the success and
    terminated heads (as `agents.heads.fit_heads` reports it)."""
    from worldmodel.heads import examples_from_episodes, predict_examples

    ex = examples_from_episodes([e for e in episodes if len(e["reward"])], heads.config.num_frames,
                                history=heads.config.history)
    pred = predict_examples(heads, ex)
    return {"chunks": len(ex), "success_accuracy": float(np.mean((pred["success"] > 0.5) == ex.success)),
            "terminated_accuracy": float(np.mean((pred["terminated"] > 0.5) == ex.terminated))}


def summarize_outcomes(episodes: Sequence[RealEpisode]) -> dict[str, dict]:
    """Per task and over all: episodes, real success rate, agreement of the heads' verdict on the real and
    on the imagined last chunk with the real outcome, and per-chunk skill-success agreement (imagined)."""
    def block(eps: Sequence[RealEpisode]) -> dict:
        chunk_agree = [a == b for e in eps for a, b in zip(e.verdicts["chunk_success_imagined"], e.chunk_success)]
        return {
            "episodes": len(eps),
            "real_success": float(np.mean([e.success for e in eps])),
            "heads_on_real_agreement": float(np.mean([e.verdicts["done_real_heads"] == e.success for e in eps])),
            "imagined_agreement": float(np.mean([e.verdicts["done_imagined"] == e.success for e in eps])),
            "p_done_imagined": float(np.mean([e.verdicts["p_done_imagined"] for e in eps])),
            "chunk_success_agreement": float(np.mean(chunk_agree)) if chunk_agree else float("nan"),
        }

    out = {t: block([e for e in episodes if e.task == t]) for t in dict.fromkeys(e.task for e in episodes)}
    out["all"] = block(episodes)
    kinds = list(dict.fromkeys(e.kind for e in episodes))
    if len(kinds) > 1:  # which kind of rollout the heads misjudge in imagination
        out.update({f"all, {kind}": block([e for e in episodes if e.kind == kind]) for kind in kinds})
    return out


def run_outcome(model: Any, heads: Any, cfg: OutcomeConfig, log=print) -> dict:
    """Play, imagine, judge and summarise (see the module docstring)."""
    from envs.real.scene import RealSceneEnv

    size, tn = model.config.frame_size, model.config.new_frames
    env = RealSceneEnv(task=cfg.tasks[0], action_type="skill", width=size, height=size, chunk_len=tn,
                       frame_skip=cfg.frame_skip, max_chunks=10_000, render_backend=cfg.render_backend)
    episodes: list[RealEpisode] = []
    try:
        for task in cfg.tasks:
            for k in range(cfg.seeds):
                for drop in ((False, True) if cfg.truncated else (False,)):
                    ep = play_expert(env, task, cfg.seed * 1000 + k, drop, cfg.max_tries)
                    if ep is not None:
                        episodes.append(ep)
                rng = np.random.default_rng([cfg.seed, k, zlib.crc32(task.encode())])  # fixed per (task, seed)
                episodes += [play_random(env, task, cfg.seed * 1000 + k, rng) for _ in range(cfg.random_plans)]
            log(f"outcome: real episodes of {task} played")
    finally:
        env.close()
    log(f"outcome: imagining {len(episodes)} episodes ({sum(len(e.skills) for e in episodes)} chunks) ...")
    imagine(model, episodes, cfg.seed, cfg.steps, cfg.temp_lora)
    judge(heads, episodes, tn, cfg.threshold)
    rows = [{"task": e.task, "seed": e.seed, "kind": e.kind, "instruction": e.instruction, "skills": e.skills,
             "chunks": len(e.skills),
             "real_success": e.success, **{k: v for k, v in e.verdicts.items() if k != "chunk_success_imagined"}}
            for e in episodes]
    return {"config": {**asdict(cfg), "tasks": list(cfg.tasks)}, "summary": summarize_outcomes(episodes),
            "episodes": rows, "example": episodes[0]}


def markdown(result: dict) -> str:
    from .report import fmt

    cfg, h = result["config"], result["heads"]
    random_part = f", {cfg['random_plans']} random skill sequence(s) per seed" if cfg.get("random_plans") else ""
    lines = [
        "# Imagined outcome agreement: the heads judge the imagined rollout of the expert's skills",
        "",
        *provenance_lines(result),
        f"- model: `{result['model']}`; heads: {h.get('source', '?')}; {cfg['seeds']} seed(s) per task from "
        f"{cfg['seed'] * 1000}; {'the full plan and the plan without its last step' if cfg['truncated'] else 'full plans'}"
        f"{random_part}; "
        f"{'Temp-LoRA' if cfg['temp_lora'] else 'Φ alone (no Temp-LoRA)'}; threshold {cfg['threshold']}",
        "",
        "Heads on real frames first:",
        "",
        "| real frames | chunks / episodes | success head accuracy | terminated head accuracy |",
        "|---|---|---|---|",
    ]
    if h.get("heldout_chunks"):
        lines.append(f"| held-out chunks of the heads' fit | {h['heldout_chunks']} | {fmt(h['success_accuracy'], 3)} | "
                     f"{fmt(h['terminated_accuracy'], 3)} |")
    if h.get("heads_data"):
        d = h["heads_data"]
        lines.append(f"| `{d['source']}` | {d['chunks']} | {fmt(d['success_accuracy'], 3)} | "
                     f"{fmt(d['terminated_accuracy'], 3)} |")
    a = result["summary"]["all"]
    lines += [f"| this run's real rollouts, last chunk (task done?) | {a['episodes']} | – | "
              f"{fmt(a['heads_on_real_agreement'], 3)} |", "",
              "| task | episodes | real success | heads on real: agreement | heads on imagined: agreement ↑ | "
              "mean P(done), imagined | per-chunk skill success agreement (imagined) |",
              "|---|---|---|---|---|---|---|"]
    for task, b in result["summary"].items():
        lines.append(f"| {task} | {b['episodes']} | {fmt(b['real_success'], 2)} | {fmt(b['heads_on_real_agreement'], 2)} "
                     f"| {fmt(b['imagined_agreement'], 2)} | {fmt(b['p_done_imagined'], 3)} | "
                     f"{fmt(b['chunk_success_agreement'], 2)} |")
    lines += ["", "Notes:", "",
              "- Real outcome: the task is done at the last chunk of the expert's skill sequence (the scene's goal "
              "check). Verdict: the terminated head's P(task done) on the last chunk's frames > threshold; agreement: "
              "share of episodes whose verdict equals the real outcome.",
              "- The imagined rollout starts from the real start frame and is generated chunk after chunk with the "
              "real skill sequence (language + the robot's mean low-level actions behind the real frames).",
              *[f"- {n}" for n in result.get("notes", [])]]
    return "\n".join(lines) + "\n"
