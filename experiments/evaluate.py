"""The paper's Table 2: SlowFast-VGen and its ablations on held-out memory episodes.

    python -m experiments.evaluate --data data/scene_eval --episodes 50 --out runs/table2
    python -m experiments.evaluate --data data/scene_eval --device cuda --batch 16 --i3d i3d_torchscript.pt
    python -m experiments.evaluate --synthetic --model tiny --episodes 4 --steps 2     # smoke test (CPU)

Variants (``--variants``, default all five):

- ``full``: Temp-LoRA with the local learning rule (the model's own rank/lr/steps/objective).
- ``no_temp_lora``: the slow weights Φ alone.
- ``no_chunk_input``: a separately trained model that conditions on one frame (context_frames=1),
  with its own Temp-LoRA; give it with ``--no-chunk-model PATH`` (skipped with a note otherwise).
- ``no_local_rule``: Temp-LoRA trained on windows over the whole generated sequence (``full_sequence``).
- ``original``: Temp-LoRA trained on the generated chunk alone (the text-generation design).

Rollout (``--mode``):

- ``free`` (default): start from the episode's first real frame, feed the episode's recorded per-chunk
  actions (language + action vectors), generate the whole video chunk after chunk, each chunk conditioned
  on the last generated frames; Temp-LoRA learns from each generated chunk right after it is made.
- ``teacher``: every chunk is generated from the *real* previous frames; Temp-LoRA then learns from the
  real chunk (real context + the true new frames), as an agent's world model learns from what it
  observes. Scores still use generated frames only, and a chunk is always generated before its real
  frames reach the memory.
- ``recall`` (the memory benchmark): teacher-forced up to the chunk that holds the episode's last first
  visit of an out-of-context revisit pair (the cube shown in the drawer before it closes), free after it,
  so what is drawn at the revisit (the reopen) comes from Φ and what Temp-LoRA stored.

The episode's frames are strided by ``--frame-skip`` (as in training); model chunk c makes frames
``1 + c*new_frames ...`` with the action vectors behind those frames and the language of the episode chunk
it starts in, so episodes whose chunk length differs from the model's ``new_frames`` work too.

Metrics per episode (mean ± std over episodes): SCuts (PySceneDetect cuts in the generated video),
SRC x100 (frames i and j of each recorded revisit pair, in the generated video; features from
``--src-features`` or the offline pixel stand-in), PSNR (dB) / SSIM x100 / LPIPS x100 against the real
video on generated frames only, PSNR/SSIM over the dynamic region alone (pixels whose real value differs
from the real start frame by more than 24/255 in any channel: the arm, the cube, the drawer), FVD over clips of ``--fvd-frames`` generated frames (I3D from ``--i3d``),
the mean time of one Temp-LoRA update call and of one chunk's generation. A reference row scores the
real video itself (SCuts and SRC of the ground truth). Writes ``table2.json``, ``table2.md`` (with
command, machine and date) and ``table2_grid.mp4`` (real video beside every variant, one episode).

Held-out data: collect the evaluation episodes separately from the training data (another seed), e.g.
``python -m experiments.collect out_dir=data/scene_eval seed=1 num_episodes=60 '~tasks'
'+tasks={memory_drawer: 1, memory_drawer_locked: 1, memory_cube_return: 1}'`` (training used seed 0);
for Crafter, ``python -m experiments.collect domain=crafter out_dir=data/crafter_eval seed=1 num_episodes=60
'~tasks' '+tasks={path_and_return: 1}'`` and ``--data data/crafter_eval`` here.
``--batch B`` rolls B episodes out together, each with its own Temp-LoRA memory (per-sample LoRA
factors, `worldmodel.memory.BatchedTempLoRA`); ``--batch 1`` (default) uses the peft ``TempLoRA``.
Episode i draws its noise from its own generator (seed ``seed * 1000003 + i``), whatever its batch.

Subcommands (each has its own ``--help``):

- ``python -m experiments.evaluate action-test --model default --starts 4``: from the same real start, do
  two different skills give imagined videos that differ where the real ones do (`evaluation.action_test`)?
- ``python -m experiments.evaluate outcome --model default --data data/scene``: imagined outcome agreement,
  the heads (trained on real frames) judge the imagined rollout of the expert's skills on tasks 1-5
  (`evaluation.outcome`).

Generate here, score elsewhere: ``--save-videos`` also writes the generated videos (``OUT/videos``, one
compressed npz per episode, plus ``rollout.json`` with settings and timings); ``--from-videos OUT/videos``
scores them later without a model. Where the metrics' packages (scenedetect, scikit-image) are missing,
the videos are saved automatically and the command prints the scoring command.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from evaluation.episodes import MEMORY_TASKS, EvalEpisode, load_h5_episodes, synthetic_episodes
from evaluation.report import LABELS, VARIANTS, markdown
from evaluation.rollout import MODES, check_compatible, rollout, variant_config, variant_memory
from evaluation.run_info import command_line, jsonable, machine_name, resolve_device, utc_date
from evaluation.scoring import Collector, Scorer, summarize
from evaluation.temp_lora_flags import NEEDS_ORDINARY, TEMP_LORA_FLAGS, add_temp_lora_flags, given_temp_lora
from evaluation.videos import comparison_sheet, grid_frames, write_grid
from worldmodel.config import TEMP_LORA_RULES
from worldmodel.loading import load_model
from worldmodel.memory import TempLoRA

METRICS = ("scuts", "src", "psnr", "ssim", "psnr_dynamic", "ssim_dynamic", "psnr_revisit", "ssim_revisit", "lpips",
           "cube_recall", "psnr_revisit_terrain")


# The TempLoRAConfig fields the settings record as temp_lora_<field> (target_modules as temp_lora_targets); the
# variants' own configs are recorded whole beside them (``variants.<name>.temp_lora``)
# The --temp-lora-* flags evaluate takes: all but those whose bases come from episodes it does not read (protect: the
# probe `experiments.reopen_oracle --ordinary` has it)
TEMP_LORA_FIELDS = tuple(f for f in TEMP_LORA_FLAGS if f not in NEEDS_ORDINARY)
RECORDED_TEMP_LORA = ("steps", "lr", "objective", "draws", "timesteps", "rehearsal", "reverse", "reverse_phases",
                      "reuse_sampler_pass", "update_every", "blocks", "target_modules", "rank", "write", "event_gate",
                      "event_top", "replay", "event_slots", "slots_alone", "event_change")
NO_CHUNK_NOTE = ("no_chunk_input skipped: pass --no-chunk-model PATH (a model trained with context_frames=1, "
                 "e.g. `python -m experiments.train ... model.context_frames=1`)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.evaluate", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default",
                   help="model folder (save_pretrained), 'default' (the shipped model) or a preset name "
                        "(random weights)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", help="h5 episode file or folder of held-out episodes")
    src.add_argument("--synthetic", action="store_true", help="two-lap synthetic panning loops instead of --data")
    p.add_argument("--episodes", type=int, default=50, help="episodes to evaluate (default 50)")
    p.add_argument("--tasks", default=",".join(MEMORY_TASKS),
                   help="comma-separated episode tasks to keep, or 'all' (default: the memory tasks)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    p.add_argument("--mode", choices=MODES, default="free",
                   help="free-running, teacher-forced, or recall (teacher-forced up to the last first visit of an "
                        "out-of-context revisit, free after it: the memory benchmark)")
    p.add_argument("--no-chunk-model", default=None, help="model folder trained with context_frames=1")
    p.add_argument("--steps", type=int, default=None, help="denoising steps per chunk (default: the model's)")
    add_temp_lora_flags(p, TEMP_LORA_FIELDS)
    p.add_argument("--temp-lora-rule", choices=sorted(TEMP_LORA_RULES), default=None,
                   help="a named fast rule (worldmodel.config.TEMP_LORA_RULES: 'recall', the event rule measured in "
                        "docs/RESULTS.md, 'Session 64' to 'Session 66') over the model's config; the --temp-lora-* "
                        "flags override its fields")
    p.add_argument("--frame-skip", type=int, default=1, help="stride over the stored frames (as in training)")
    p.add_argument("--batch", type=int, default=1, help="episodes rolled out together (each with its own memory)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--i3d", default=None, help="I3D TorchScript file for FVD (never downloaded)")
    p.add_argument("--lpips", default=None, help="LPIPS TorchScript file (never downloaded)")
    p.add_argument("--src-features", default=None, help="SRC image features: TorchScript or ResNet-18 state dict")
    p.add_argument("--fvd-frames", type=int, default=16, help="frames per FVD clip")
    p.add_argument("--text-cache", default=None, help="safetensors of instruction embeddings (no text model needed)")
    p.add_argument("--synthetic-lap-chunks", type=int, default=4, help="chunks per lap of a synthetic loop")
    p.add_argument("--video-episode", type=int, default=0, help="index of the episode shown in the grid video")
    p.add_argument("--video-fps", type=int, default=4)
    p.add_argument("--no-video", action="store_true", help="skip the grid video")
    p.add_argument("--sheet", action="store_true",
                   help="also write table2_sheet.png: 8 evenly spaced frames of the grid episode, real above every variant")
    p.add_argument("--save-videos", action="store_true",
                   help="also save the generated videos (OUT/videos/*.npz + rollout.json) for --from-videos; "
                        "automatic when the metrics' packages (scenedetect, scikit-image) are missing")
    p.add_argument("--from-videos", default=None, metavar="DIR",
                   help="score videos saved by --save-videos (no model needed; the episodes are re-read from "
                        "--data, or the synthetic settings of that run)")
    p.add_argument("--time-limit-min", type=float, default=None,
                   help="stop starting new batches after this many minutes (the table says how many ran)")
    p.add_argument("--out", default="runs/evaluate", help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if not (args.data or args.synthetic or args.from_videos):
        p.error("pass --data PATH or --synthetic (or --from-videos DIR)")
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variant_list if v not in VARIANTS]
    if unknown or not args.variant_list:
        p.error(f"unknown variant(s) {unknown or args.variants!r}; valid variants: {', '.join(VARIANTS)}")
    args.variant_list = [v for v in VARIANTS if v in args.variant_list]  # table order
    for name in ("episodes", "batch", "fvd_frames", "frame_skip", "synthetic_lap_chunks"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.steps is not None and args.steps < 1:
        p.error("--steps must be >= 1")
    given = given_temp_lora(p, args, TEMP_LORA_FIELDS)
    args.temp_lora = {**TEMP_LORA_RULES.get(args.temp_lora_rule, {}), **given}  # a rule, the flags over it
    if args.temp_lora.get("write") == "events":
        other_rules = [v for v in args.variant_list if v in ("no_local_rule", "original")]
        if other_rules:
            p.error(f"--temp-lora-write events (or a --temp-lora-rule that writes events) learns windows with the "
                    f"local rule; the variants {other_rules} use another rule: leave them out of --variants")
    if args.temp_lora.get("replay") and args.temp_lora.get("write") != "events":
        p.error("--temp-lora-replay needs --temp-lora-write events")
    args.task_list = None if args.tasks.strip() == "all" else [t.strip() for t in args.tasks.split(",") if t.strip()]
    return args


def load_episodes(args: argparse.Namespace, frame_size: int, new_frames: int,
                  notes: list[str]) -> tuple[list[EvalEpisode], str, list[str] | None]:
    if args.synthetic:
        episodes = synthetic_episodes(args.episodes, args.seed, frame_size, new_frames, args.synthetic_lap_chunks)
        return episodes, "synthetic loops (envs.synthetic.loop_episode)", ["panning"]
    episodes = load_h5_episodes(args.data, args.task_list, args.episodes, args.frame_skip)
    if not episodes:
        raise SystemExit(f"no episodes with tasks {args.task_list} in {args.data!r}")
    if len(episodes) < args.episodes:
        notes.append(f"only {len(episodes)} episodes matched (asked for {args.episodes})")
    return episodes, args.data, args.task_list


def generate(args: argparse.Namespace, model, no_chunk, episodes: list[EvalEpisode], variants: list[str],
             collector: Collector, started: float, notes: list[str]) -> dict:
    """Roll out every variant on every episode (in batches); returns timings, rollbacks and what ran."""
    from tqdm.auto import tqdm

    model_of = {v: (no_chunk if v == "no_chunk_input" else model) for v in variants}
    singles: dict[int, Any] = {}  # one peft TempLoRA per model (batch 1); variants swap its config
    if args.batch == 1 and not args.temp_lora.get("reuse_sampler_pass", model.config.temp_lora.reuse_sampler_pass):
        for v in variants:  # (a reused sampler pass is the batched memory's)
            m = model_of[v]
            if v != "no_temp_lora" and id(m) not in singles:
                singles[id(m)] = TempLoRA(m, variant_config("full", m, args.temp_lora))
    times: dict[str, dict[str, list[float]]] = {v: {"update": [], "generate": []} for v in variants}
    rollbacks = {v: 0 for v in variants}
    new_frames = model.config.new_frames
    order = sorted(range(len(episodes)), key=lambda i: (episodes[i].num_model_chunks(new_frames), i))
    batches = [order[i: i + args.batch] for i in range(0, len(order), args.batch)]
    total = sum(max(episodes[i].num_model_chunks(model_of[v].config.new_frames) for i in b)
                for b in batches for v in variants)
    done: list[int] = []
    bar = tqdm(total=total, desc="evaluate", unit="chunk", disable=args.quiet, file=sys.stderr)
    for batch in batches:
        if args.time_limit_min is not None and time.perf_counter() - started > 60 * args.time_limit_min:
            notes.append(f"time limit reached: {len(done)} of {len(episodes)} episodes evaluated")
            break
        group = [episodes[i] for i in batch]
        videos: dict[int, dict[str, np.ndarray]] = {i: {} for i in batch}
        for v in variants:
            m = model_of[v]
            seeds = [args.seed * 1_000_003 + i for i in batch]
            memory = variant_memory(m, variant_config(v, m, args.temp_lora), len(batch), singles.get(id(m)))
            bar.set_postfix_str(v)
            res = rollout(m, memory, group, args.mode, args.steps, seeds, on_chunk=lambda: bar.update(1))
            del memory
            times[v]["update"] += res.update_s
            times[v]["generate"] += res.generate_s
            rollbacks[v] += sum(res.rollbacks)
            for i, video in zip(batch, res.videos):
                videos[i][v] = video
        for i in batch:
            collector.add(i, episodes[i], videos[i])
        done += batch
    bar.close()
    return {"times": times, "rollbacks": rollbacks, "done": sorted(done)}


def load_saved(args: argparse.Namespace) -> dict:
    """rollout.json of a --save-videos run; the episode selection settings are taken from it."""
    folder = Path(args.from_videos)
    meta_file = folder / "rollout.json"
    if not meta_file.is_file():
        raise SystemExit(f"--from-videos {str(folder)!r}: no rollout.json (write it with --save-videos)")
    meta = json.loads(meta_file.read_text())
    s = meta["settings"]
    args.synthetic = s["data"].startswith("synthetic")
    if not args.synthetic:
        args.data = args.data or s["data"]
    args.task_list = s["tasks"] if not args.synthetic else None
    for key in ("episodes", "frame_skip", "seed", "synthetic_lap_chunks", "mode", "batch"):
        setattr(args, key, s[key])
    return meta


def subcommand_parser(name: str, module: Any) -> argparse.ArgumentParser:
    """The parser of a subcommand whose logic is ``module`` (its docstring is the help), with the options
    every subcommand shares (`add_run_args` adds the rest at the end)."""
    p = argparse.ArgumentParser(prog=f"python -m experiments.evaluate {name}",
                                description=module.__doc__.split("\n\n")[0],
                                epilog=module.__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="model folder, 'default' (the shipped model) or a preset name")
    return p


def add_run_args(p: argparse.ArgumentParser, out: str, what: str) -> None:
    p.add_argument("--steps", type=int, default=None, help="denoising steps per chunk (default: the model's)")
    p.add_argument("--render-backend", default="auto", help="MuJoCo rendering: auto, egl or osmesa")
    p.add_argument("--text-cache", default=None, help="safetensors of instruction embeddings (no text model needed)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default=out, help=f"output folder ({what})")


def load_subcommand_model(args: argparse.Namespace) -> tuple[Any, Any, torch.device]:
    """(model, its folder, device) for a subcommand's arguments."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model, folder = load_model(args.model, device, text_cache=args.text_cache, seed=args.config.seed)
    return model, folder, device


def write_report(out: Path, name: str, result: dict, table: str, also: Sequence[str] = ()) -> None:
    """A subcommand's OUT/<name>.json and OUT/<name>.md; the table printed, the files named on stderr."""
    (out / f"{name}.json").write_text(json.dumps(jsonable(result), indent=1))
    (out / f"{name}.md").write_text(table)
    print(table)
    print("wrote " + ", ".join(str(out / f) for f in (f"{name}.json", f"{name}.md", *also)), file=sys.stderr)


def parse_action_test(argv: list[str]) -> argparse.Namespace:
    from evaluation import action_test

    p = subcommand_parser("action-test", action_test)
    d = action_test.ActionTestConfig()
    p.add_argument("--skills", default=";".join(d.skills),
                   help=f"';'-separated skills, every pair of them is compared (default: {';'.join(d.skills)})")
    p.add_argument("--tasks", default=",".join(d.tasks), help="comma-separated tasks whose reset scenes are the "
                   "starts, in turn (default: %(default)s)")
    p.add_argument("--starts", type=int, default=d.starts, help="real starts (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="start i is seeded seed * 1000 + i (default %(default)s: "
                   "not the training data's seeds)")
    p.add_argument("--prefix", type=int, default=d.prefix,
                   help="chunks of the task's expert plan played before the skills branch (default %(default)s)")
    p.add_argument("--chunks", type=int, default=d.chunks, help="chunks each skill runs (default %(default)s)")
    p.add_argument("--frame-skip", type=int, default=d.frame_skip,
                   help="sim steps per kept frame, as in the model's training data (default %(default)s)")
    add_run_args(p, "runs/action_test", "action_test.json/.md/.png")
    args = p.parse_args(argv)
    try:
        args.config = action_test.ActionTestConfig(
            skills=tuple(x.strip() for x in args.skills.split(";") if x.strip()),
            tasks=tuple(x.strip() for x in args.tasks.split(",") if x.strip()), starts=args.starts, seed=args.seed,
            prefix=args.prefix, chunks=args.chunks, frame_skip=args.frame_skip, steps=args.steps,
            render_backend=args.render_backend)
    except ValueError as err:
        p.error(str(err))
    return args


def action_test_main(argv: list[str]) -> dict:
    """``action-test``: `evaluation.action_test` on the real scene; writes action_test.json/.md/.png."""
    from evaluation import action_test

    args = parse_action_test(argv)
    model, _, device = load_subcommand_model(args)
    started = time.perf_counter()
    result = action_test.run_action_test(model, args.config, log=lambda m: print(m, file=sys.stderr))
    result.update(command=command_line("experiments.evaluate", ["action-test", *argv]),
                  machine=machine_name(device), date=utc_date(), model=args.model,
                  seconds=round(time.perf_counter() - started, 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    example = result.pop("example")
    Image.fromarray(action_test.example_sheet(example, scale=max(1, 128 // model.config.frame_size))).save(
        out / "action_test.png")
    result["sheet"] = {"file": "action_test.png", "task": example["task"], "seed": example["seed"]}
    write_report(out, "action_test", result, action_test.markdown(result), also=["action_test.png"])
    return result


def parse_outcome(argv: list[str]) -> argparse.Namespace:
    from evaluation import outcome

    p = subcommand_parser("outcome", outcome)
    d = outcome.OutcomeConfig()
    p.add_argument("--heads", default=None, help="heads folder (default: the model's heads/, else OUT/heads from an "
                   "earlier fit, else fitted on --data)")
    p.add_argument("--data", default=None, help="real h5 training episodes to fit the heads on when there are none "
                   "(every 10th episode held out for their accuracy)")
    p.add_argument("--heads-fit-steps", type=int, default=2000, help="steps when fitting heads (default %(default)s)")
    p.add_argument("--heads-data", default=None, help="held-out real h5 episodes to report the heads' accuracy on")
    p.add_argument("--tasks", default=",".join(d.tasks), help="comma-separated tasks (default: scene tasks 1-5)")
    p.add_argument("--seeds", type=int, default=d.seeds, help="episodes per task (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="episode k is seeded seed * 1000 + k (default %(default)s)")
    p.add_argument("--no-truncated", action="store_true",
                   help="only the full expert plans (default: also each plan without its last step)")
    p.add_argument("--random-plans", type=int, default=d.random_plans,
                   help="per task and seed, also this many random skill sequences of the plan's length (mostly real "
                        "failures, like a planner's candidates): the heads' false positives in imagination")
    p.add_argument("--temp-lora", action="store_true", help="imagine with Temp-LoRA memory (default: Φ alone)")
    p.add_argument("--threshold", type=float, default=d.threshold, help="P(task done) above which it counts as done")
    p.add_argument("--frame-skip", type=int, default=d.frame_skip, help="sim steps per kept frame (default %(default)s)")
    add_run_args(p, "runs/outcome", "outcome.json/.md, heads/ when fitted")
    args = p.parse_args(argv)
    try:
        args.config = outcome.OutcomeConfig(
            tasks=tuple(x.strip() for x in args.tasks.split(",") if x.strip()), seeds=args.seeds, seed=args.seed,
            truncated=not args.no_truncated, random_plans=args.random_plans, frame_skip=args.frame_skip,
            steps=args.steps, temp_lora=args.temp_lora,
            threshold=args.threshold, render_backend=args.render_backend)
    except ValueError as err:
        p.error(str(err))
    return args


def outcome_main(argv: list[str]) -> dict:
    """``outcome``: `evaluation.outcome` (heads from the model, --heads, or fitted on --data)."""
    from evaluation import outcome

    args = parse_outcome(argv)
    out = Path(args.out)
    model, folder, device = load_subcommand_model(args)
    heads, info = outcome.load_heads(args.heads, folder, args.model, args.data, out, model.config.frame_size, device,
                                     args.heads_fit_steps, args.config.seed, args.heads_data,
                                     log=lambda m: print(m, file=sys.stderr))
    started = time.perf_counter()
    result = outcome.run_outcome(model, heads, args.config, log=lambda m: print(m, file=sys.stderr))
    result.pop("example")
    result.update(command=command_line("experiments.evaluate", ["outcome", *argv]), machine=machine_name(device),
                  date=utc_date(), model=args.model, heads=info, seconds=round(time.perf_counter() - started, 1))
    write_report(out, "outcome", result, outcome.markdown(result))
    return result


SUBCOMMANDS = {"action-test": action_test_main, "outcome": outcome_main}


def main(argv: list[str] | None = None) -> dict:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in and args_in[0] in SUBCOMMANDS:
        return SUBCOMMANDS[args_in[0]](args_in[1:])
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    started = time.perf_counter()
    notes: list[str] = []
    out = Path(args.out)
    command = command_line("experiments.evaluate", argv)
    here = {"command": command, "machine": machine_name(device), "date": utc_date()}
    try:
        import evaluation.metrics  # noqa: F401  (scenedetect, scikit-image, scipy)

        metrics_error = None
    except ImportError as err:
        metrics_error = f"{type(err).__name__}: {err}"
        if args.from_videos:
            raise SystemExit(f"cannot score here: {metrics_error}")
        args.save_videos = True

    saved = load_saved(args) if args.from_videos else None
    rows: dict[str, dict] = {}
    if saved is None:
        model, _ = load_model(args.model, device, text_cache=args.text_cache, seed=args.seed)
        cfg = model.config
        fast = {**dataclasses.asdict(cfg.temp_lora), **args.temp_lora}  # the model's fast rule, the flags over it
        recorded = {"targets" if f == "target_modules" else f: fast[f] for f in RECORDED_TEMP_LORA}
        recorded["blocks"], recorded["targets"] = "+".join(recorded["blocks"]), "+".join(recorded["targets"])
        settings = {"model": args.model, "no_chunk_model": args.no_chunk_model, "mode": args.mode,
                    "steps": args.steps or cfg.sample_steps,
                    **{f"temp_lora_{name}": value for name, value in recorded.items()},
                    "temp_lora_rule": args.temp_lora_rule,
                    "frame_skip": args.frame_skip, "batch": args.batch, "seed": args.seed,
                    "episodes": args.episodes, "synthetic_lap_chunks": args.synthetic_lap_chunks,
                    "context_frames": cfg.context_frames, "new_frames": cfg.new_frames, "frame_size": cfg.frame_size}
        episodes, settings["data"], settings["tasks"] = load_episodes(args, cfg.frame_size, cfg.new_frames, notes)
        check_compatible(model, episodes, "the model")
        no_chunk = None
        variants = list(args.variant_list)
        if "no_chunk_input" in variants:
            if args.no_chunk_model:
                no_chunk, _ = load_model(args.no_chunk_model, device, text_cache=args.text_cache, seed=args.seed)
                if no_chunk.config.context_frames != 1:
                    raise SystemExit(f"--no-chunk-model must condition on one frame (context_frames=1); "
                                     f"{args.no_chunk_model!r} has context_frames={no_chunk.config.context_frames}")
                check_compatible(no_chunk, episodes, "--no-chunk-model")
            else:
                rows["no_chunk_input"] = {"label": LABELS["no_chunk_input"], "skipped": NO_CHUNK_NOTE}
                variants.remove("no_chunk_input")
        temp_lora = {v: (dataclasses.asdict(c) if (c := variant_config(
            v, no_chunk if v == "no_chunk_input" else model, args.temp_lora)) is not None else None)
            for v in variants}
        grid_index = min(args.video_episode, len(episodes) - 1)
        scorer = (Scorer(args.fvd_frames, args.i3d, args.lpips, args.src_features, device, notes,
                         (cfg.context_frames, cfg.new_frames)) if metrics_error is None else None)
        save_dir = out / "videos" if args.save_videos else None
        collector = Collector(scorer, save_dir, grid_index, args.mode, cfg.new_frames)
        gen = generate(args, model, no_chunk, episodes, variants, collector, started, notes)
        generation = dict(here)
        if save_dir is not None:
            meta = {**here, "settings": settings, "variants": variants, "temp_lora": temp_lora, "skipped": rows,
                    "notes": list(notes), **gen}
            (save_dir / "rollout.json").write_text(json.dumps(jsonable(meta), indent=1))
        if scorer is None:
            print(f"the metrics cannot run here ({metrics_error}); generated videos saved in {save_dir}: score them "
                  f"with `python -m experiments.evaluate --from-videos {save_dir} --out {out}` where scenedetect "
                  "and scikit-image are installed", file=sys.stderr)
            return {"videos": str(save_dir), "generation": gen, "metrics_error": metrics_error}
    else:
        settings = saved["settings"]
        notes += [n for n in saved["notes"] if not n.startswith(("FVD", "LPIPS"))]
        episodes, _, _ = load_episodes(args, settings["frame_size"], settings["new_frames"], [])
        variants, temp_lora, rows = saved["variants"], saved["temp_lora"], dict(saved["skipped"])
        gen = saved
        generation = {k: saved[k] for k in ("command", "machine", "date")}
        grid_index = min(args.video_episode, len(episodes) - 1)
        scorer = Scorer(args.fvd_frames, args.i3d, args.lpips, args.src_features, device, notes,
                        (settings["context_frames"], settings["new_frames"]) if "context_frames" in settings else None)
        collector = Collector(scorer, None, grid_index, settings["mode"], settings["new_frames"])
        folder = Path(args.from_videos)
        for i in tqdm_list(saved["done"], args.quiet):
            if i >= len(episodes):
                raise SystemExit(f"saved episode {i} is beyond the {len(episodes)} episodes found; pass the --data "
                                 "of the generating run")
            with np.load(folder / f"episode_{i:05d}.npz") as f:
                if str(f["name"]) != episodes[i].name:
                    raise SystemExit(f"saved episode {i} is {str(f['name'])!r} but the data gives "
                                     f"{episodes[i].name!r}; pass the --data of the generating run")
                collector.add(i, episodes[i], {v: f[f"video_{v}"] for v in variants})

    for v in variants:
        recs = [r for r in collector.per_episode if r["variant"] == v]
        fvd, fvd_note = scorer.fvd_value(v)
        if fvd_note and fvd_note not in notes:
            notes.append(fvd_note)
        upd, gen_s = gen["times"][v]["update"], gen["times"][v]["generate"]
        rows[v] = {
            "label": LABELS[v],
            "metrics": {k: summarize([r.get(k, float("nan")) for r in recs]) for k in METRICS},
            # what the reopen showed, over the episodes that have one (a colour's count, or "none": no cube drawn)
            "cube_seen": dict(Counter(r["cube_seen"] for r in recs if r.get("cube_seen") is not None)),
            "fvd": None if scorer.fvd is None else fvd,
            "lpips_unavailable": scorer.lpips is None,
            "fast_update_ms": 1000 * float(np.mean(upd)) if upd else None,
            "generate_ms": 1000 * float(np.mean(gen_s)) if gen_s else float("nan"),
            "temp_lora_rollbacks": gen["rollbacks"][v],
            "episodes": len(recs),
            "temp_lora": temp_lora[v],
        }
    rows = {v: rows[v] for v in VARIANTS if v in rows}

    out.mkdir(parents=True, exist_ok=True)
    video_name = None
    if not args.no_video and collector.grid:
        frames = grid_frames(episodes[grid_index], {v: collector.grid[v] for v in VARIANTS if v in collector.grid},
                             settings["new_frames"], scale=max(1, 128 // settings["frame_size"]))
        video_name = write_grid(out / "table2_grid.mp4", frames, args.video_fps, notes)
    sheet_name = None
    if args.sheet and collector.grid:
        sheet_name = "table2_sheet.png"
        Image.fromarray(comparison_sheet(episodes[grid_index], {v: collector.grid[v] for v in VARIANTS
                                                                if v in collector.grid}, settings["new_frames"],
                                         scale=max(1, 128 // settings["frame_size"]))).save(out / sheet_name)
    result = {
        **here,
        "generation": generation,
        "device": str(device),
        "torch": torch.__version__,
        "settings": {**settings, "fvd_frames": args.fvd_frames},
        "num_episodes": len(gen["done"]),
        "variants": rows,
        "reference": {k: summarize(v) for k, v in collector.reference.items()},
        "copy_last_frame": {k: summarize(v) for k, v in collector.copy_baseline.items()},
        "src_features": scorer.features_name,
        "notes": notes,
        "video": video_name,
        "video_episode": episodes[grid_index].name if video_name or sheet_name else None,
        "sheet": sheet_name,
        "seconds": round(time.perf_counter() - started, 1),
        "per_episode": collector.per_episode,
    }
    (out / "table2.json").write_text(json.dumps(jsonable(result), indent=1))
    table = markdown(result)
    (out / "table2.md").write_text(table)
    print(table)
    print(f"wrote {out / 'table2.json'}, {out / 'table2.md'}" + (f", {out / video_name}" if video_name else ""),
          file=sys.stderr)
    return result


def tqdm_list(items: list, quiet: bool):
    from tqdm.auto import tqdm

    return tqdm(items, desc="score", unit="episode", disable=quiet, file=sys.stderr)


if __name__ == "__main__":
    main()
