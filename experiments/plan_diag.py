"""What the planner sees from one real start: every skill sequence imagined and judged by the heads.

    python -m experiments.plan_diag --task task1_open --seed 1000 --denoise-steps 2 --samples 6 \
        --sheet docs/plan_diag_sheet.png --out runs/plan_diag.json

From the real reset frame of ``--task`` / ``--seed`` (the scene `plan_eval` plays), all ``skills ** horizon``
sequences are imagined in one batch (`agents.planning.WorldModelPlanner.imagine`) and scored as the planner
scores them. Printed and written (JSON): the ``--top`` sequences and the expert's plan, with the heads' per-chunk
reward / success / P(done); with ``--samples S`` those sequences are imagined again under S sampler seeds, to
tell a property of the sequence from one noise draw. ``--sheet`` draws the real start and each shown
sequence's imagined frames, one row each. It answers "why did the planner pick that?" without a real episode.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from agents.planning import PlannerConfig

    p = argparse.ArgumentParser(prog="python -m experiments.plan_diag", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="'default', a preset name or a model folder")
    p.add_argument("--heads", default=None, help="reward heads folder (default: the model's heads/)")
    p.add_argument("--task", default="task1_open")
    p.add_argument("--seed", type=int, default=1000, help="the scene's seed (plan_eval's seeds start at 1000)")
    p.add_argument("--horizon", type=int, default=2)
    p.add_argument("--after", type=int, default=0,
                   help="first run this many skills of the expert's plan in the real scene (each until the scene "
                        "says it succeeded, at most 3 chunks) and look from there")
    p.add_argument("--value-weight", type=float, default=PlannerConfig.value_weight,
                   help="weight of the heads' skills-to-go in the score (heads that have it)")
    p.add_argument("--denoise-steps", type=int, default=None)
    p.add_argument("--imagine-chunks", type=int, default=1, help="chunks each skill is imagined for (the planner's)")
    p.add_argument("--top", type=int, default=4, help="best sequences shown (the expert's plan is always added)")
    p.add_argument("--samples", type=int, default=1, help="sampler seeds the shown sequences are imagined under")
    p.add_argument("--frame-skip", type=int, default=8)
    p.add_argument("--render-backend", default="auto", choices=("auto", "egl", "osmesa", "glfw"))
    p.add_argument("--device", default="auto")
    p.add_argument("--sheet", default=None, help="PNG of the imagined frames of the shown sequences")
    p.add_argument("--out", default="runs/plan_diag.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from agents.heads import resolve_heads
    from agents.planning import PlannerConfig, WorldModelPlanner
    from agents.real_scene import SceneSpec, make_scene
    from envs.real.rollout import ScriptedExpert
    from envs.real.skills import SKILLS
    from evaluation.run_info import command_line, machine_name, resolve_device, utc_date
    from worldmodel.loading import load_model

    device = resolve_device(args.device)
    model, folder = load_model(args.model, device=device)
    heads, _ = resolve_heads(args.heads, folder, None, None, model.config.frame_size, device)
    spec = SceneSpec(chunk_len=model.config.new_frames, frame_skip=args.frame_skip, render_backend=args.render_backend)
    scene = make_scene(spec, model.config.frame_size, args.task)
    try:
        frame, info = scene.reset(seed=args.seed, options={"task": args.task})
        prefix = list(info["plan"])[:args.after]
        expert, last = ScriptedExpert(tuple(prefix)), None  # each skill until it succeeds (its 3 tries)
        while (skill := expert.act(last)) is not None:
            frame, _, _, _, step_info = scene.step(skill)
            last = step_info["success"]
    finally:
        scene.close()
    every = np.array(list(itertools.product(range(len(SKILLS)), repeat=args.horizon)), np.int64)
    planner = WorldModelPlanner(model, heads, PlannerConfig(method="shooting", horizon=args.horizon,
                                                            candidates=len(every), denoise_steps=args.denoise_steps,
                                                            imagine_chunks=args.imagine_chunks,
                                                            value_weight=args.value_weight))
    planner.start(frame[None], info["instruction"], seed=args.seed)
    imagined = planner.imagine(every)
    score, done = planner.score(imagined)
    plan = list(info["plan"])[args.after:args.after + args.horizon]
    expert = next((k for k, q in enumerate(every) if list(q[:len(plan)]) == plan), None)
    shown = list(np.argsort(-score, kind="stable")[:args.top]) + ([expert] if expert is not None else [])
    shown = list(dict.fromkeys(int(k) for k in shown))
    rows = [{"sequence": [SKILLS[s] for s in every[k]], "rank": int((score > score[k]).sum()) + 1,
             "score": float(score[k]), "p_done": float(done[k]), "expert": k == expert,
             **{key: getattr(imagined, key)[k].round(3).tolist() for key in ("reward", "success", "terminated", "to_go")
                if getattr(imagined, key) is not None}}
            for k in shown]
    seqs = every[shown]
    frames = None
    for s in range(args.samples):  # the shown sequences again, under other sampler seeds
        planner.start(frame[None], info["instruction"], seed=args.seed * 1000 + s)
        again = planner.imagine(seqs, keep_frames=s == 0 and args.sheet is not None)
        frames = again.frames if again.frames is not None else frames
        for row, d in zip(rows, planner.score(again)[1]):
            row.setdefault("p_done_per_seed", []).append(round(float(d), 3))
    result = {"command": command_line("experiments.plan_diag", argv), "machine": machine_name(device),
              "date": utc_date(), "task": args.task, "seed": args.seed, "after": [SKILLS[k] for k in prefix],
              "instruction": info["instruction"],
              "sequences": len(every), "predicted_done": int((done > 0.5).sum()), "shown": rows}
    print(f"{info['instruction']!r} (seed {args.seed}): {len(every)} sequences of {args.horizon} skills, "
          f"{result['predicted_done']} imagined as done")
    for row in rows:
        print(f"  #{row['rank']:<3} score {row['score']:7.3f}  P(done) {row['p_done']:.2f}"
              f"{'  per seed ' + str(row['p_done_per_seed']) if args.samples else ''}"
              f"{'  (expert)' if row['expert'] else ''}  {' -> '.join(row['sequence'])}")
    if args.sheet and frames is not None:
        _sheet(frame, frames, rows, Path(args.sheet))
        result["sheet"] = args.sheet
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


def _sheet(start: np.ndarray, frames: np.ndarray, rows: list[dict], path: Path, scale: int = 2) -> None:
    """One row per sequence: a caption tile (its skills, P(done)), the real start, then its imagined frames."""
    from PIL import Image

    from evaluation.videos import caption_frame, fixed_lines, wrap_text

    lines = 8
    out = []
    for k, row in enumerate(rows):
        text = [w for skill in row["sequence"] for w in wrap_text(skill, 5 * scale)]
        label = fixed_lines(text[:lines - 1] + [f"P(done) {row['p_done']:.2f}" + (" expert" if row["expert"] else "")],
                            lines)
        tiles = [caption_frame(np.zeros_like(start), label, scale)]
        tiles += [caption_frame(f, fixed_lines(["start" if t == 0 else f"t={t}"], lines), scale)
                  for t, f in enumerate([start, *frames[k].reshape(-1, *start.shape)])]
        out.append(np.concatenate(tiles, axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(out, axis=0)).save(path)


if __name__ == "__main__":
    main()
