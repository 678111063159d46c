"""Saved PPO policies in the real scene, each with every skill-run setting, on the same scene seeds.

    python -m experiments.eval_agent 'policies=[runs/train_agent/imagination_ppo.zip,runs/train_agent/real_ppo.zip]' \
        'tasks=[task4_put_in_drawer]' seeds=40 'skill_chunks=[1,3]'

`experiments.train_agent` evaluates each policy once, as it was trained; this runs policies again later, on more seeds
or with other settings, side by side in one table: a comparison of two worlds' policies needs them judged alike, and a
session's policies are judged again when a setting is added (session 34's skill runs). ``skill_chunks`` 1: the policy
decides every chunk; N > 1: a chosen skill runs on until the heads' success output sees its real chunk done, up to N
chunks (`agents.ppo.PolicyAgent`, the planners' rule). The heads only end skill runs: success is the simulator's.

Writes ``out_dir/eval_agent.json`` (the command, machine, date; per policy and setting: real success per task, chunks
per episode, seconds, every episode's skills and skills to go), ``out_dir/eval_agent.md`` (the table) and
``out_dir/videos/*.mp4`` (the first ``videos`` seeds of each task, per policy and setting, captioned chunk by chunk).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from agents.real_scene import SceneSpec, UnknownInstruction, check_tasks


def chunk_len(model: str) -> int:
    """The real chunk length the policies were trained with: the world model's ``new_frames`` (read from its config;
    the weights are not loaded)."""
    from worldmodel.config import WorldModelConfig, from_preset
    from worldmodel.loading import model_folder
    from worldmodel.model import CONFIG_NAME

    folder = model_folder(model)
    return (from_preset(model) if folder is None else WorldModelConfig.load(folder / CONFIG_NAME)).new_frames


def load_policies(paths: list[str], device: torch.device) -> dict[str, object]:
    """Each saved policy by its path; a missing or foreign file is a clear error before any episode is played."""
    from stable_baselines3 import PPO

    if not paths:
        raise SystemExit("error: no policies: pass 'policies=[A.zip,...]' (train_agent's out_dir/<world>_ppo.zip)")
    policies = {}
    for path in paths:
        if not Path(path).is_file():
            raise SystemExit(f"error: no policy at {path} (train_agent saves out_dir/imagination_ppo.zip, "
                             "real_ppo.zip)")
        policy = PPO.load(path, device=device)
        if getattr(policy, "agent_spec", None) is None:
            raise SystemExit(f"error: {path} is a PPO without agents.ppo's observation spec (agent_spec): not trained "
                             "by agents.ppo.train_ppo")
        policies[path] = policy
    return policies


def run(cfg: DictConfig, argv: list[str] | None = None) -> dict:
    from agents.heads import resolve_heads
    from agents.ppo import evaluate_in_real_scene
    from evaluation.run_info import command_line, machine_name, resolve_device, utc_date
    from worldmodel.loading import model_folder

    tasks = check_tasks(list(cfg.tasks))
    settings = [int(n) for n in cfg.skill_chunks]
    if not settings or min(settings) < 1:
        raise SystemExit(f"error: skill_chunks must list settings >= 1, got {list(cfg.skill_chunks)}")
    device = resolve_device(cfg.device)
    policies = load_policies([str(p) for p in cfg.policies], device)
    scene = SceneSpec(chunk_len=chunk_len(cfg.model), **OmegaConf.to_container(cfg.scene, resolve=True))
    heads, source = None, None
    if max(settings) > 1:
        frame_size = next(iter(policies.values())).agent_spec["frame_size"]
        heads, source = resolve_heads(cfg.heads, model_folder(cfg.model), None, None, frame_size, device)
    seeds = range(cfg.first_seed, cfg.first_seed + cfg.seeds)
    record = dict(command=command_line("experiments.eval_agent", argv), machine=machine_name(device), date=utc_date(),
                  settings=dict(tasks=tasks, model=str(cfg.model), heads=source, seeds=cfg.seeds,
                                first_seed=cfg.first_seed, deterministic=cfg.deterministic, scene=asdict(scene)),
                  rows=[])
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i, (path, policy) in enumerate(policies.items()):
        for n in settings:
            videos: list[str] = []
            name = f"{i + 1}_{Path(path).stem}_skills{n}"  # two policies may share a file name (seed1/, seed2/)

            def on_result(result, name=name, videos=videos) -> None:
                if result.real_frames is not None:
                    videos.append(write_video(out / "videos", name, result))

            report = evaluate_in_real_scene(policy, tasks, seeds, scene, cfg.parallel, cfg.deterministic,
                                            heads=heads if n > 1 else None, skill_chunks=n, progress=cfg.progress,
                                            keep_frames=cfg.videos, on_result=on_result)
            record["rows"].append(dict(policy=path, skill_chunks=n, env_steps=int(policy.num_timesteps),
                                       train_seconds=round(float(getattr(policy, "train_seconds", float("nan"))), 1),
                                       videos=videos, **report))
            print(f"{path}, skill_chunks={n}: real success {report['success']:.1%} ({report['seconds']} s)",
                  flush=True)
            write(out, record)  # after every row: a stopped run keeps what it measured
    return record


def write_video(folder: Path, name: str, r) -> str:
    """One real episode of a policy, each frame captioned with its chunk, the skill playing and the skills the task
    still needed after that chunk (the simulator's count): an mp4, or a PNG sheet where moviepy is missing."""
    from envs.real.skills import SKILLS
    from evaluation.videos import caption_frame, fixed_lines, wrap_text, write_grid

    folder.mkdir(parents=True, exist_ok=True)
    real = r.real_frames
    chunk = (len(real) - 1) // max(r.chunks, 1)
    scale = max(1, 192 // real.shape[1])
    width = real.shape[1] * scale // 6
    head = fixed_lines(wrap_text(r.instruction, width), 2)
    frames = []
    for t in range(len(real)):
        k = (t - 1) // chunk if t else -1  # the chunk this frame ends or belongs to; -1: the reset frame
        skill = SKILLS[r.skills[k]] if k >= 0 else "start"
        to_go = f"skills to go: {r.to_go[k + 1]}" if len(r.to_go) > k + 1 else ""
        end = ("success" if r.success else r.stop) if t == len(real) - 1 else ""
        lines = [*head, f"chunk {k + 1}/{r.chunks}" if k >= 0 else "reset", *fixed_lines(wrap_text(skill, width), 2),
                 to_go, end]
        frame = caption_frame(real[t], lines, scale)
        frames.append(np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0))))
    return "videos/" + write_grid(folder / f"{name}_{r.task}_seed{r.seed}.mp4", frames, fps=4, notes=[])


def markdown(record: dict) -> str:
    s = record["settings"]
    lines = ["# Saved policies in the real scene", "",
             f"- command: `{record['command']}`", f"- machine: {record['machine']}; date: {record['date']}",
             f"- {s['seeds']} episodes per task (scene seeds {s['first_seed']}..), "
             f"{'deterministic' if s['deterministic'] else 'sampled'} actions; skill runs judged by "
             f"{(s['heads'] or {}).get('source', '-')}", "",
             "| policy | env steps trained | skills run up to (chunks) | "
             + " | ".join(f"real success: {t}" for t in s["tasks"]) + " | mean | chunks per episode | seconds |",
             "|---|---:|---:|" + "---:|" * len(s["tasks"]) + "---:|---:|---:|"]
    for row in record["rows"]:
        per = row["per_task"]
        chunks = sum(v["chunks"] * v["n"] for v in per.values()) / max(1, sum(v["n"] for v in per.values()))
        lines.append(f"| `{row['policy']}` | {row['env_steps']} | {row['skill_chunks']} | "
                     + " | ".join(f"{round(per[t]['success'] * per[t]['n'])} of {per[t]['n']}" for t in s["tasks"])
                     + f" | {row['success']:.1%} | {chunks:.2f} | {row['seconds']} |")
    return "\n".join(lines)


def write(out: Path, record: dict) -> None:
    from evaluation.run_info import jsonable

    texts = {"eval_agent.json": json.dumps(jsonable(record), indent=1), "eval_agent.md": markdown(record)}
    for name, text in texts.items():
        tmp = out / f".{name}.tmp"
        tmp.write_text(text + "\n")
        os.replace(tmp, out / name)


@hydra.main(config_path="conf", config_name="eval_agent", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        check_tasks(list(cfg.tasks))
    except UnknownInstruction as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(markdown(run(cfg)))


if __name__ == "__main__":
    main()
