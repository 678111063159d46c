"""Planning in the real scene: CEM / random shooting over the world model, with and without Temp-LoRA,
beside a random-skill baseline and the scripted expert.

    python -m experiments.plan_eval                                   # tasks 1-5 + memory tasks, 20 seeds each
    python -m experiments.plan_eval --tasks task1_open memory_drawer --seeds 5 --parallel 8 --device cuda
    python -m experiments.plan_eval --model runs/small/model --data data/scene   # heads fitted on the data if the model has none

For every task and seed each agent plays one real episode (`envs.real.RealSceneEnv`, seeds
``--first-seed`` ...; all agents see the same episodes) within the same chunk budget (``--max-chunks``,
default twice the expert plan plus 2). The planners imagine every candidate skill sequence from their
belief state in one batch (`agents.planning.WorldModelPlanner`), score it with the reward heads against
the instruction and execute the first skill, replanning every chunk; ``--parallel`` episodes are played
side by side so their candidates share the batches.

Writes to ``--out``: ``plan_eval.md`` (success per task and agent, with the command, machine and date),
``plan_eval.json`` (the same, per episode), ``plan_eval.png`` (a bar plot) and ``videos/*.mp4`` (the
planner's imagined chunk beside the real one, for the first ``--videos`` seeds of each task).
Each episode is recorded as it ends (``episodes.jsonl``); rerunning the same command (same settings) plays
only the episodes still missing, so ``--time-limit-min`` (start no episode after it) splits a long
evaluation over several calls, and more ``--tasks``/``--seeds``/``--agents`` can be added later.
An unknown task or instruction ends with a message and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from agents.planning import AGENTS, METHODS, PlannerConfig, make_agent
from agents.real_scene import (MEMORY_TASKS, SCENE_TASKS, SceneSpec, UnknownInstruction, check_tasks, make_scene,
                               run_real_episodes, task_for_instruction)

LABELS = {"planner": "planner + Temp-LoRA", "planner_no_memory": "planner, no Temp-LoRA",
          "prior": "skill prior alone", "random": "random skills", "expert": "scripted expert"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.plan_eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="'default', a preset name or a model folder")
    p.add_argument("--heads", default=None, help="reward heads folder (default: the model's heads/, else fitted on --data)")
    p.add_argument("--data", default=None, help="real h5 episodes the model learned from, to fit heads when it has none")
    p.add_argument("--heads-fit-steps", type=int, default=2000)
    p.add_argument("--tasks", nargs="+", default=[*SCENE_TASKS, *MEMORY_TASKS])
    p.add_argument("--instruction", default=None,
                   help="run the task whose instruction this is (instead of --tasks)")
    p.add_argument("--seeds", type=int, default=20, help="episodes per task")
    p.add_argument("--first-seed", type=int, default=1000, help="scene seeds first-seed ... (away from collection seeds)")
    p.add_argument("--agents", default=None,
                   help=f"comma-separated, from {', '.join(AGENTS)} (default: all; prior, the heads' next-skill prior "
                        "alone, needs heads fitted with --next-skill and is left out of the default without them)")
    p.add_argument("--method", choices=METHODS, default="cem")
    p.add_argument("--horizon", type=int, default=3)
    p.add_argument("--candidates", type=int, default=64)
    p.add_argument("--iterations", type=int, default=3, help="CEM rounds")
    p.add_argument("--elites", type=int, default=8)
    p.add_argument("--discount", type=float, default=0.9)
    p.add_argument("--give-up-after", type=int, default=None,
                   help="a planner stops an episode after this many plans in a row that reach no goal")
    p.add_argument("--skill-chunks", type=int, default=3,
                   help="real chunks a chosen skill may run, without replanning, until the success head sees it "
                        "done (the scripted expert's 3 tries); 1 replans after every chunk")
    p.add_argument("--value-weight", type=float, default=PlannerConfig.value_weight,
                   help="weight of the heads' skills-to-go in a plan's score (heads that have it; 0: the reward alone)")
    p.add_argument("--prior-weight", type=float, default=PlannerConfig.prior_weight,
                   help="weight of each skill's log-probability under the heads' next-skill prior in a plan's score "
                        "(heads fitted with --next-skill; 0: no prior)")
    p.add_argument("--imagine-chunks", type=int, default=1,
                   help="chunks each skill of a candidate is imagined for (a pick-and-place takes 2-3)")
    p.add_argument("--denoise-steps", type=int, default=None, help="sampler steps (default: the model's)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"),
                   help="the planners' imagination: fp32, bf16 autocast (faster on a GPU) or auto")
    p.add_argument("--parallel", type=int, default=1, help="episodes played side by side (one scene each)")
    p.add_argument("--max-chunks", type=int, default=None, help="chunk budget per episode (default 2 x plan + 2)")
    p.add_argument("--chunk-len", type=int, default=None, help="real frames per chunk (default: the model's new_frames)")
    p.add_argument("--frame-skip", type=int, default=8, help="sim steps per kept frame (the model's data stride)")
    p.add_argument("--skill-noise", type=float, default=0.0)
    p.add_argument("--distractors", type=int, nargs=2, default=(1, 3), metavar=("MIN", "MAX"))
    p.add_argument("--red-cube", action="store_true", help="OGBench's red cube instead of a random colour")
    p.add_argument("--render-backend", default="auto", choices=("auto", "egl", "osmesa", "glfw"))
    p.add_argument("--videos", type=int, default=2, help="mp4s of imagined vs real for the first N seeds per task")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0, help="the planners' sampling seed")
    p.add_argument("--out", default="runs/plan_eval")
    p.add_argument("--time-limit-min", type=float, default=None,
                   help="start no episode after this many minutes; rerun the same command to continue")
    p.add_argument("--fresh", action="store_true", help="forget the episodes an earlier run left in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar: one line per finished episode")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:  # every check that needs no model first: a typo costs no model load
        tasks = [task_for_instruction(args.instruction)] if args.instruction else check_tasks(args.tasks)
        agents = [a.strip() for a in (",".join(AGENTS) if args.agents is None else args.agents).split(",") if a.strip()]
        unknown = [a for a in agents if a not in AGENTS]
        if unknown or not agents:
            raise UnknownInstruction(f"unknown agents {unknown}; choose from {', '.join(AGENTS)}")
        config = PlannerConfig(method=args.method, horizon=args.horizon, candidates=args.candidates,
                               iterations=args.iterations, elites=min(args.elites, args.candidates),
                               discount=args.discount, denoise_steps=args.denoise_steps,
                               give_up_after=args.give_up_after, skill_chunks=args.skill_chunks, seed=args.seed,
                               precision=args.precision, imagine_chunks=args.imagine_chunks,
                               value_weight=args.value_weight, prior_weight=args.prior_weight)
    except (UnknownInstruction, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = run(args, tasks, agents, config, argv)
    print(result["table"])
    return 0


def run(args: argparse.Namespace, tasks: list[str], agents: list[str], config: PlannerConfig,
        argv: list[str] | None = None) -> dict:
    from tqdm import tqdm

    from agents.heads import resolve_heads
    from evaluation.run_info import command_line, jsonable, machine_name, resolve_device, utc_date
    from worldmodel.loading import load_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    needs_model = any(a.startswith("planner") or a == "prior" for a in agents)  # prior: the model's heads
    model = heads = None
    heads_info: dict = {}
    frame_size = 64
    new_frames = args.chunk_len
    if needs_model:
        model, folder = load_model(args.model, device)
        frame_size, new_frames = model.config.frame_size, args.chunk_len or model.config.new_frames
        if new_frames != model.config.new_frames:
            raise SystemExit(f"--chunk-len {new_frames} differs from the model's {model.config.new_frames} new frames per "
                             "chunk: the planner must observe whole real chunks")
        heads, heads_info = resolve_heads(args.heads, folder, args.data, out, frame_size, device,
                                          fit_steps=args.heads_fit_steps)
        if "prior" in agents and not heads.config.skills:
            if args.agents is not None:  # asked for by name
                raise SystemExit("error: --agents prior needs heads with a next-skill output; these have none (fit "
                                 "them with python -m experiments.fit_heads --next-skill)")
            print("note: the heads have no next-skill output, so the prior agent is left out")
            agents = [a for a in agents if a != "prior"]
    spec = SceneSpec(chunk_len=new_frames or 4, frame_skip=args.frame_skip, max_chunks=args.max_chunks,
                     skill_noise=args.skill_noise, render_backend=args.render_backend,
                     random_cube_color=not args.red_cube, min_distractors=args.distractors[0],
                     max_distractors=args.distractors[1])
    parallel = max(1, args.parallel)
    settings = dict(model=args.model, heads=heads_info.get("source"), planner=asdict(config), scene=asdict(spec),
                    first_seed=args.first_seed, frame_size=frame_size)
    episodes_file, calls_file, settings_file = out / "episodes.jsonl", out / "calls.jsonl", out / "settings.json"
    if args.fresh:
        for f in (episodes_file, calls_file, settings_file):
            f.unlink(missing_ok=True)
    if settings_file.is_file() and json.loads(settings_file.read_text()) != jsonable(settings):
        raise SystemExit(f"error: {out} holds episodes played with other settings ({settings_file}); rerun with the "
                         "same settings to continue, or pass --fresh or another --out")
    settings_file.write_text(json.dumps(jsonable(settings), indent=1))
    done = {(r["agent"], r["task"], r["seed"]) for r in read_jsonl(episodes_file)}
    jobs = [(task, args.first_seed + i) for task in tasks for i in range(args.seeds)]
    keep = {job: i < args.videos for job in jobs for i in [job[1] - args.first_seed]}
    todo = {name: [j for j in jobs if (name, *j) not in done] for name in agents}
    deadline = time.time() + 60 * args.time_limit_min if args.time_limit_min is not None else None
    bar = tqdm(total=sum(map(len, todo.values())), desc="episodes", disable=args.no_progress)
    start = time.perf_counter()
    scenes = [make_scene(spec, frame_size, tasks[0]) for _ in range(parallel)] if any(todo.values()) else []
    for name in agents:
        if not todo[name] or (deadline is not None and time.time() >= deadline):
            continue
        agent = make_agent(name, model, heads, config, num_episodes=parallel, seed=args.seed)

        def record(r, name=name):
            row = {"agent": name, **r.summary()}
            if r.real_frames is not None and r.imagined_frames is not None:
                row["video"] = write_video(out / "videos", name, r)
            with episodes_file.open("a") as f:
                f.write(json.dumps(jsonable(row)) + "\n")
            bar.update(1)
            if args.no_progress:  # a line per episode instead of the bar, so a log cut short still says what ran
                print(f"{name} {row['task']} seed {row['seed']}: {'success' if row['success'] else 'failure'} in "
                      f"{row['chunks']} chunks", flush=True)

        t0 = time.perf_counter()
        played = run_real_episodes(agent, scenes, todo[name], spec,
                                   keep_frames=[name.startswith("planner") and keep[j] for j in todo[name]],
                                   on_done=record, deadline=deadline)
        with calls_file.open("a") as f:
            f.write(json.dumps({"agent": name, "seconds": round(time.perf_counter() - t0, 1),
                                "episodes": sum(r is not None for r in played), "date": utc_date()}) + "\n")
        del agent  # a planner's imagination core is freed before the next one is built
    bar.close()
    for env in scenes:
        env.close()
    wanted = {(name, *j) for name in agents for j in jobs}
    rows = [r for r in read_jsonl(episodes_file) if (r["agent"], r["task"], r["seed"]) in wanted]
    episodes = {name: [r for r in rows if r["agent"] == name] for name in agents}
    summary = {name: {task: stats([e for e in episodes[name] if e["task"] == task]) for task in tasks}
               for name in agents}
    calls = read_jsonl(calls_file)
    agent_seconds = {name: round(sum(c["seconds"] for c in calls if c["agent"] == name), 1) for name in agents}
    result = dict(
        command=command_line("experiments.plan_eval", argv),
        machine=machine_name(device), date=utc_date(), seconds=round(time.perf_counter() - start, 1),
        complete=len(rows) == len(wanted), played=len(rows), of=len(wanted),
        settings=dict(settings, heads=heads_info, seeds=args.seeds, parallel=parallel, tasks=tasks, agents=agents),
        summary=summary, agent_seconds=agent_seconds, episodes=episodes)
    result["table"] = markdown(result)
    (out / "plan_eval.json").write_text(json.dumps(jsonable(result), indent=1))
    (out / "plan_eval.md").write_text(result["table"] + "\n")
    plot(result, out / "plan_eval.png")
    return result


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stats(rows: list[dict]) -> dict:
    if not rows:
        return dict(n=0, success=float("nan"), chunks=float("nan"))
    return dict(n=len(rows), success=float(np.mean([r["success"] for r in rows])),
                chunks=float(np.mean([r["chunks"] for r in rows])),
                seconds=float(np.mean([r["seconds"] for r in rows])))


def memory_pairs(result: dict, task: str) -> dict | None:
    """The planner with and without Temp-LoRA on the same scene seeds of ``task`` (issue 17's memory goal): seeds
    both played, won by both, by the Temp-LoRA planner only and by the other only. A seed's scene and its skills'
    random retreats repeat exactly whatever else is played beside it (`envs.real.oracle`), so the two episodes of a
    seed differ only by their agents. None unless both agents played the task."""
    agents = result["settings"]["agents"]
    if "planner" not in agents or "planner_no_memory" not in agents:
        return None
    won = {a: {e["seed"]: bool(e["success"]) for e in result["episodes"][a] if e["task"] == task}
           for a in ("planner", "planner_no_memory")}
    seeds = sorted(set(won["planner"]) & set(won["planner_no_memory"]))
    if not seeds:
        return None
    with_, without = won["planner"], won["planner_no_memory"]
    return dict(seeds=len(seeds), both=sum(with_[s] and without[s] for s in seeds),
                with_only=[s for s in seeds if with_[s] and not without[s]],
                without_only=[s for s in seeds if without[s] and not with_[s]])


def markdown(result: dict) -> str:
    s, agents, tasks = result["settings"], result["settings"]["agents"], result["settings"]["tasks"]
    p = s["planner"]
    timing = ", ".join(f"{LABELS[a]} {result['agent_seconds'][a]} s" for a in agents)
    lines = [
        "# Planning in the real scene: success rate per task",
        "",
        f"- command: `{result['command']}`",
        f"- machine: {result['machine']}; date: {result['date']}; wall-clock: {timing}",
        f"- model: `{s['model']}`; reward heads: {s['heads'].get('source', '-') if s['heads'] else '-'}",
        f"- planner: {p['method']}, horizon {p['horizon']}, {p['candidates']} candidates, {p['iterations']} rounds, "
        f"{p['elites']} elites, denoising steps {p['denoise_steps'] or 'model default'}; {s['parallel']} episodes "
        "side by side",
        f"- {s['seeds']} seeds per task (scene seeds {s['first_seed']}..{s['first_seed'] + s['seeds'] - 1}); budget "
        f"{s['scene']['max_chunks'] or '2 x expert plan + 2'} chunks; {s['scene']['chunk_len']} frames per chunk, "
        f"frame skip {s['scene']['frame_skip']}",
        "",
        "| task | " + " | ".join(LABELS[a] for a in agents) + " |",
        "|---|" + "---:|" * len(agents),
    ]
    for task in tasks:
        cells = []
        for a in agents:
            st = result["summary"][a][task]
            cells.append(f"{st['success']:.0%} ({st['chunks']:.1f} chunks)" if st["n"] else "–")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    for group, names in (("tasks 1-5", SCENE_TASKS), ("memory tasks", MEMORY_TASKS)):
        chosen = [t for t in tasks if t in names]
        if len(chosen) > 1:
            cells = [f"{np.mean([result['summary'][a][t]['success'] for t in chosen]):.0%}" for a in agents]
            lines.append(f"| **{group}** | " + " | ".join(cells) + " |")
    pairs = {task: memory_pairs(result, task) for task in tasks}
    if any(pairs.values()):
        lines += ["", "The planner with and without Temp-LoRA, seed by seed (the same scenes):", "",
                  "| task | seeds | won by both | won with Temp-LoRA only | won without it only |",
                  "|---|---:|---:|---|---|"]
        for task, pair in pairs.items():
            if pair:
                lines.append(f"| {task} | {pair['seeds']} | {pair['both']} | {len(pair['with_only'])} "
                             f"{pair['with_only'] or ''} | {len(pair['without_only'])} {pair['without_only'] or ''} |")
    lines += ["", "Success: the task reached in the real scene within the budget, judged by "
              "`agents.real_scene.SuccessJudge` (the memory tasks only after their memory part); chunks: mean "
              "chunks used. Wall-clock: summed over the calls that played the episodes."]
    if not result["complete"]:
        lines += ["", f"**Partial: {result['played']} of {result['of']} episodes played; rerun the same command to "
                  "continue.**"]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agents, tasks = result["settings"]["agents"], result["settings"]["tasks"]
    x = np.arange(len(tasks))
    width = 0.8 / len(agents)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(tasks) + 2), 4))
    for i, a in enumerate(agents):
        ax.bar(x + i * width, [100 * result["summary"][a][t]["success"] for t in tasks], width, label=LABELS[a])
    ax.set_xticks(x + width * (len(agents) - 1) / 2, tasks, rotation=30, ha="right")
    ax.set_ylabel("real success (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"Planning in the real scene ({result['settings']['seeds']} seeds per task)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_video(folder: Path, agent: str, r) -> str:
    """The planner's imagined chunk (its prediction before the real chunk came) beside the real chunk: an mp4,
    or a PNG sheet of 8 frames where moviepy is missing (the GPU machine), never a crash after the episode."""
    from envs.real.skills import SKILLS
    from evaluation.videos import caption_frame, fixed_lines, wrap_text, write_grid

    folder.mkdir(parents=True, exist_ok=True)
    real, imagined = r.real_frames, r.imagined_frames
    chunk = len(imagined) // max(r.chunks, 1)
    scale = max(1, 192 // real.shape[1])
    head = fixed_lines(wrap_text(r.instruction, 2 * real.shape[1] * scale // 6), 2)
    frames = []
    for t in range(len(real)):
        k = (t - 1) // chunk if t else -1
        skill = SKILLS[r.skills[k]] if k >= 0 else "start (real)"
        caption = [f"chunk {k + 1}/{r.chunks}" if k >= 0 else "", *fixed_lines(wrap_text(skill, real.shape[1] * scale // 6), 2)]
        left = caption_frame(imagined[t - 1] if t else real[0], ["imagined", *caption], scale)
        right = caption_frame(real[t], ["real", *caption], scale)
        row = np.concatenate([left, np.full((left.shape[0], 4, 3), 128, np.uint8), right], axis=1)
        frame = caption_frame(row, head + [f"{LABELS[agent]}: {'success' if r.success else r.stop}"], 1)
        frames.append(np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0))))
    return "videos/" + write_grid(folder / f"{r.task}_seed{r.seed}_{agent}.mp4", frames, fps=4, notes=[])


if __name__ == "__main__":
    sys.exit(main())
