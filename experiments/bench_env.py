"""Imagined frames/s of SlowFastVGen-v0 (single env and the batched vector env) vs the real simulator.

    python -m experiments.bench_env                                  # shipped model if present, else tiny
    python -m experiments.bench_env --preset tiny --sizes 1,16,64,256 --threads 2 --out runs/bench_env.json
    python -m experiments.bench_env --model path/to/model --device cuda --real off --precision bf16
    python -m experiments.bench_env --model default --device cpu --sizes 1 --denoise-steps 2 --precision auto

One env step generates one chunk (``new_frames`` frames: ``denoise_steps`` UNet passes over the
batch, a VAE decode, and with Temp-LoRA one fast forward/backward per env, batched). Each size is
timed over ``--chunks`` steps after warm-up steps (``--update-every`` of them, so that a fast update is among
them; with ``--compile`` they compile the UNet's graphs; with Temp-LoRA on, ``--chunks`` is a multiple of
``--update-every``, so that the timed chunks hold Θ's steps at the rate the row names); imagined frames/s =
N * new_frames * chunks / seconds. The phases (denoise, decode, fast update) are timed with the GPU synchronised
around each (until session 11 they were not: rows before then split their step time unreliably; their totals
hold). The real OGBench scene (``envs.real.RealSceneEnv``, skill actions, rendered at the model's resolution)
is timed on the same machine when it can run (``--real-workers`` scenes side by side, one process each, as
data collection runs them), and each imagined row is given as a multiple of its frames/s. Temp-LoRA is timed
on and off in the same run by default (`--temp-lora on,off`), so the memory's overhead is read off one table.
Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import psutil
import torch

from envs.world_model_env import WorldModelEnv, WorldModelVectorEnv
from evaluation.run_info import command_line, machine_name, resolve_device, utc_date
from worldmodel.imagination import resolve_precision
from worldmodel.loading import DEFAULT_MODEL_DIR, load_model, set_cpu_threads


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_env", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None,
                   help="'default' (shipped), a preset name or a model folder (default: shipped model if present, "
                        "else the tiny preset)")
    p.add_argument("--preset", default=None, help="a preset name (tiny, small, base); overrides --model")
    p.add_argument("--sizes", default="1,16,64,256", help="comma-separated batch sizes N for the vector env")
    p.add_argument("--chunks", type=int, default=3,
                   help="timed env steps (chunks) per size, after --update-every warm-up steps; with Temp-LoRA on a "
                        "multiple of --update-every")
    p.add_argument("--denoise-steps", type=int, default=None, help="denoising steps per chunk (default: model's)")
    p.add_argument("--temp-lora", default="on,off",
                   help="Temp-LoRA fast learning every chunk: on, off, or on,off (both, one table)")
    p.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                   help="arithmetic of generation and fast updates (auto: bf16 where the device has it natively)")
    p.add_argument("--update-every", type=int, default=1,
                   help="Temp-LoRA learns every k-th chunk of an episode (TempLoRAConfig.update_every; 1: every chunk)")
    p.add_argument("--temp-lora-blocks", default=None,
                   help="UNet block prefixes joined by '+' where Θ lives, e.g. up_blocks.2 (TempLoRAConfig.blocks: "
                        "the fast backward stops at the first of them; default: the model's)")
    p.add_argument("--temp-lora-targets", default="default",
                   help="the layer kinds Θ adapts, joined by '+' (TempLoRAConfig.target_modules, e.g. to_q+to_k+to_v+"
                        "to_out.0), or several such sets joined by commas: a Temp-LoRA row each; default: the model's")
    p.add_argument("--temp-lora-rank", default=None,
                   help="Θ's rank (TempLoRAConfig.rank; alpha stays the model's), or several joined by commas: a "
                        "Temp-LoRA row each; default: the model's")
    p.add_argument("--reuse-pass", action="store_true",
                   help="Temp-LoRA's fast step is scored on the sampler's first denoising pass, no forward of its own "
                        "(TempLoRAConfig.reuse_sampler_pass)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the UNet in place (SlowFastVGen.compile_unet); the warm-up steps compile")
    p.add_argument("--compile-fast-update", action="store_true",
                   help="with --compile: Temp-LoRA's fast update runs compiled too (default: eager)")
    p.add_argument("--compile-decoder", action="store_true",
                   help="torch.compile the VAE's decoder in place too (SlowFastVGen.compile_decoder)")
    p.add_argument("--fast-batch", default=None,
                   help="envs per Temp-LoRA forward/backward (bounds memory at large N; default: the env's), or "
                        "several joined by commas: a Temp-LoRA row each (memory against time in one run)")
    p.add_argument("--fast-recompute", default="off",
                   help="Temp-LoRA's fast backward recomputes the adapted blocks' activations layer by layer "
                        "(activation checkpointing: less memory, more time): on, off, or on,off (a Temp-LoRA row each)")
    p.add_argument("--action-mode", choices=("auto", "skill", "continuous"), default="auto")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--threads", default="auto",
                   help="torch CPU threads: a number, or auto (the cores not busy at the start)")
    p.add_argument("--real", choices=("auto", "on", "off"), default="auto",
                   help="also time the real simulator (auto: when it can be imported)")
    p.add_argument("--real-steps", type=int, default=3, help="timed real-sim chunks (per worker)")
    p.add_argument("--real-workers", type=int, default=1,
                   help="real scenes stepped side by side, one process each (the machine's real throughput, as "
                        "`experiments.collect` runs it: e.g. 13 on the 16-core GPU machine); 1: in this process")
    p.add_argument("--no-single", action="store_true", help="skip the single (non-vector) env row")
    p.add_argument("--profile", default=None, metavar="DIR",
                   help="torch.profiler over each vector row's timed chunks: DIR/<row>.txt, the ops by GPU and by CPU "
                        "time (the fast update's parts are labelled temp_lora.*); a profiled row's times include the "
                        "profiler's own cost")
    p.add_argument("--out", default="runs/bench_env.json", help="JSON output path")
    return p.parse_args(argv)


def _model_spec(args: argparse.Namespace) -> str:
    if args.preset:
        return args.preset
    if args.model:
        return args.model
    return "default" if (DEFAULT_MODEL_DIR / "config.json").is_file() else "tiny"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _actions(space: Any, rng: np.random.Generator) -> Any:
    import gymnasium as gym

    if isinstance(space, gym.spaces.Discrete):
        return int(rng.integers(space.n))
    if isinstance(space, gym.spaces.MultiDiscrete):
        return rng.integers(0, space.nvec)
    return rng.uniform(-1, 1, space.shape).astype(np.float32)


def _time_env(env: Any, n: int, chunks: int, device: torch.device, batched: bool, seed: int = 0,
              warmup: int = 1, profile: Path | None = None) -> dict:
    rng = np.random.default_rng(seed)
    # exact per-phase GPU times (denoise / decode / fast update): without it the phases time kernel launches and
    # a phase that reads a value back (the fast update's losses) also waits for the kernels queued before it
    env.batch.imagination.sync_timings = True
    env.reset(seed=seed)
    start = time.perf_counter()
    for _ in range(warmup):  # text cache, allocator, kernels; with compile, the graphs
        env.step(_actions(env.action_space, rng))
    _sync(device)
    warmup_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    phases: dict[str, float] = {}
    with _profiled(profile, device):
        start = time.perf_counter()
        for _ in range(chunks):
            out = env.step(_actions(env.action_space, rng))
            info = out[4]
            timings = info["timings"]
            t = timings[np.flatnonzero(info["_timings"])[0]] if batched else timings
            for key, value in t.as_dict().items():
                phases[key] = phases.get(key, 0.0) + value
        _sync(device)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "phases_s_per_step": {k: v / chunks for k, v in phases.items()},
            "warmup_s": warmup_s}


@contextlib.contextmanager
def _profiled(path: Path | None, device: torch.device) -> Iterator[None]:
    """torch.profiler around the timed chunks when ``path`` is given: the ops' totals written there, by GPU time and by
    CPU time (where a step's time goes when its GPU idles: launches, host copies, synchronisations)."""
    if path is None:
        yield
        return
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        yield
    averages = prof.key_averages()
    tables = [f"== by {key} ==\n{averages.table(sort_by=key, row_limit=45, max_name_column_width=60)}"
              for key in (["self_cuda_time_total"] if device.type == "cuda" else []) + ["cpu_time_total"]]
    parts = [f"{e.key:<28} calls {e.count:>5}  CPU total {e.cpu_time_total / 1e3:10.1f} ms" for e in averages
             if e.key.startswith("temp_lora.")]
    tables.append("== the fast update's parts (wall time on the host, GPU waits included) ==\n" + "\n".join(parts))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(tables))
    print(f"bench_env: profile written to {path}", file=sys.stderr)


def _dynamo_counts() -> dict:
    """torch.compile's running totals in this process: graphs compiled, graph breaks, frames compiled. A compiled
    row whose phase times match eager ones is explained here (and by the recompilation reasons that ``--compile``
    logs: a frame over dynamo's recompile limit runs eager)."""
    from torch._dynamo.utils import counters

    return {"unique_graphs": counters["stats"].get("unique_graphs", 0),
            "graph_breaks": sum(counters["graph_break"].values()), "frames": dict(counters["frames"])}


def bench_imagined(spec: str, sizes: list[int], args: argparse.Namespace, device: torch.device,
                   temp_lora: str, fast_batch: int | None = None, recompute: bool = False,
                   targets: tuple[str, ...] | None = None, rank: int | None = None) -> list[dict]:
    model, _ = load_model(spec, device, shared=True)
    mc = model.config
    mode = args.action_mode
    if mode == "auto":
        mode = "continuous" if mc.action_type in ("vector", "both") else "skill"
    blocks = mc.temp_lora.blocks if args.temp_lora_blocks is None else tuple(args.temp_lora_blocks.split("+"))
    memory = dataclasses.replace(mc.temp_lora, update_every=args.update_every, blocks=blocks,
                                 target_modules=targets or mc.temp_lora.target_modules,
                                 rank=rank or mc.temp_lora.rank,
                                 reuse_sampler_pass=args.reuse_pass) if temp_lora == "on" else False
    opts = dict(model=model, action_mode=mode, denoise_steps=args.denoise_steps, temp_lora=memory,
                max_episode_steps=None, precision=args.precision, cpu_threads=args.threads, compile=args.compile,
                compile_fast_update=args.compile_fast_update, compile_decoder=args.compile_decoder,
                fast_recompute=recompute and temp_lora == "on")
    if fast_batch is not None:
        opts["fast_batch_size"] = fast_batch
    steps = args.denoise_steps or mc.sample_steps
    if temp_lora == "on" and args.reuse_pass and steps == 1:
        raise ValueError("--reuse-pass at one denoising pass: the env's chunks are generated, and a generated chunk "
                         "scores exactly 0 on the sampler's one pass, so Θ takes the usual step there (Imagination."
                         "step); bench one pass without --reuse-pass")
    # as many warm-up steps with Temp-LoRA off as on (a fast update among them): with one, the off rows of session 53's
    # later runs on a warm machine spent 0.009-0.016 s per timed step more in the heads than their first run did
    warmup = max(1, args.update_every)
    rows = []

    def row(kind: str, n: int, timing: dict, fast_batch_size: int | None, theta_values: int | None) -> dict:
        frames = n * mc.new_frames * args.chunks
        return {"env": kind, "num_envs": n, "model": spec, "frame_size": mc.frame_size, "new_frames": mc.new_frames,
                "denoise_steps": steps, "temp_lora": temp_lora, "action_mode": mode,
                "update_every": args.update_every if temp_lora == "on" else None,
                "temp_lora_blocks": "+".join(blocks) if temp_lora == "on" else None,
                "temp_lora_targets": "+".join(targets) if memory and targets else None,  # None: the model's
                "temp_lora_rank": memory.rank if memory else None,
                "theta_values_per_env": theta_values,
                "reuse_sampler_pass": args.reuse_pass if temp_lora == "on" else None,
                "fast_batch": fast_batch_size if temp_lora == "on" else None,
                "fast_recompute": recompute if temp_lora == "on" else None,
                "precision": resolve_precision(args.precision, device), "cpu_threads": torch.get_num_threads(),
                "compile": args.compile, "compile_fast_update": args.compile_fast_update,
                "compile_decoder": args.compile_decoder, "warmup_steps": warmup,
                "warmup_s": timing["warmup_s"],
                "s_per_step": timing["seconds"] / args.chunks, "frames_per_s": frames / timing["seconds"],
                "phases_s_per_step": timing["phases_s_per_step"],
                "rss_after_mib": psutil.Process().memory_info().rss / 2**20,
                "peak_cuda_mib": (torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None,
                "dynamo": _dynamo_counts() if args.compile or args.compile_decoder else None}

    if not args.no_single:
        env = WorldModelEnv(**opts)
        rows.append(row("single", 1, _time_env(env, 1, args.chunks, device, batched=False, warmup=warmup),
                        env.config.fast_batch_size, _theta_values(env)))
        env.close()
        _print_progress(rows[-1])
    for n in sizes:
        venv = WorldModelVectorEnv(num_envs=n, **opts)
        profile = None
        if args.profile:
            layout = (f"_fb{venv.config.fast_batch_size}{'_rec' if recompute else ''}_r{memory.rank}"
                      f"_{'-'.join(memory.target_modules)}" if memory else "")  # '+': not a file name everywhere
            profile = Path(args.profile) / f"n{n}_temp_lora_{temp_lora}{layout}.txt"
        try:
            rows.append(row("vector", n, _time_env(venv, n, args.chunks, device, batched=True, warmup=warmup,
                                                   profile=profile),
                            venv.config.fast_batch_size, _theta_values(venv)))
            if profile is not None:
                rows[-1]["profile"] = str(profile)
        except (RuntimeError, MemoryError) as err:  # e.g. out of memory at large N
            rows.append({"env": "vector", "num_envs": n, "model": spec, "error": f"{type(err).__name__}: {err}"[:300]})
        venv.close()
        del venv
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        _print_progress(rows[-1])
    return rows


def _theta_values(env: Any) -> int | None:
    """Θ's factor values per env (what its state holds, three times with Adam's moments), None without Temp-LoRA."""
    return env.memory.num_parameters_per_env if env.memory is not None else None


def _memory_label(row: dict, sep: str) -> str:
    """How a Temp-LoRA row's memory ran, beyond on/off: fast batch, recomputed, and Θ's layers and rank where given."""
    parts = [f"fast batch {row['fast_batch']}"] if row.get("fast_batch") else []
    parts += ["recomputed"] if row.get("fast_recompute") else []
    parts += [f"Θ on {row['temp_lora_targets']}"] if row.get("temp_lora_targets") else []
    if row.get("theta_values_per_env"):
        parts.append(f"rank {row['temp_lora_rank']}, {row['theta_values_per_env']:,} Θ values per env")
    return "".join(sep.format(p) for p in parts)


def _real_chunks(frame_size: int, steps: int, seed: int, barrier: Any = None) -> tuple[int, float, int, int]:
    """(frames, seconds, chunk_len, frame_skip) of ``steps`` random-skill chunks of one real scene (after a
    warm-up chunk; with a barrier, timed from the moment every worker is ready)."""
    from envs.real import RealSceneEnv
    from envs.real.skills import SKILLS

    env = RealSceneEnv(task="task1_open", width=frame_size, height=frame_size)
    try:
        env.reset(seed=seed)
        env.step(0)  # warm-up
        rng = np.random.default_rng(seed)
        if barrier is not None:
            barrier.wait(timeout=600)
        frames = 0
        start = time.perf_counter()
        for _ in range(steps):
            frames += len(env.step(int(rng.integers(len(SKILLS))))[4]["frames"])
        return frames, time.perf_counter() - start, env.config.chunk_len, env.config.frame_skip
    finally:
        env.close()


def _real_worker(frame_size: int, steps: int, seed: int, barrier: Any, queue: Any) -> None:
    try:
        queue.put(_real_chunks(frame_size, steps, seed, barrier))
    except Exception as err:  # noqa: BLE001  (reported by the parent)
        barrier.abort()
        queue.put(f"{type(err).__name__}: {err}")


def bench_real(frame_size: int, steps: int, mode: str, workers: int = 1) -> dict | None:
    """The real scene's frames/s on this machine: ``workers`` processes side by side (the machine's
    throughput, as data collection runs it), or one in this process."""
    if mode == "off":
        return None
    try:
        if workers <= 1:
            results = [_real_chunks(frame_size, steps, 0)]
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")  # no forked GL / torch state
            barrier, queue = ctx.Barrier(workers), ctx.Queue()
            procs = [ctx.Process(target=_real_worker, args=(frame_size, steps, w, barrier, queue), daemon=True)
                     for w in range(workers)]
            for proc in procs:
                proc.start()
            results = [queue.get(timeout=900) for _ in procs]
            for proc in procs:
                proc.join(timeout=60)
            failed = [r for r in results if isinstance(r, str)]
            if failed:
                raise RuntimeError(f"{len(failed)} of {workers} real-scene workers failed: {failed[0]}")
    except Exception as err:  # noqa: BLE001  (any import/GL failure means "not available here")
        if mode == "on":
            raise
        return {"env": "real (OGBench scene)", "error": f"{type(err).__name__}: {err}"[:300]}
    frames = sum(r[0] for r in results)
    seconds = max(r[1] for r in results)  # the workers start together: the slowest one's time is the wall
    chunk_len, frame_skip = results[0][2], results[0][3]
    return {"env": "real (OGBench scene)", "num_envs": workers, "frame_size": frame_size, "new_frames": chunk_len,
            "s_per_step": seconds / steps, "frames_per_s": frames / seconds,
            "sim_steps_per_s": steps * workers * chunk_len * frame_skip / seconds,
            "render_backend": os.environ.get("MUJOCO_GL", "")}


def _print_progress(row: dict) -> None:
    if "error" in row:
        print(f"  {row['env']} N={row.get('num_envs')}: {row['error']}", file=sys.stderr)
    else:
        phases = " ".join(f"{k} {v:.3f}" for k, v in row.get("phases_s_per_step", {}).items())
        fast = _memory_label(row, " ({})")
        print(f"  {row['env']} N={row['num_envs']} Temp-LoRA {row.get('temp_lora', '-')}{fast}: "
              f"{row['frames_per_s']:.4g} frames/s, {row['s_per_step']:.3f} s/step ({phases}), "
              f"warm-up {row.get('warmup_s', 0):.0f} s",
              file=sys.stderr, flush=True)


def add_ratios(rows: list[dict]) -> None:
    """Each imagined row's frames/s as a multiple of the real simulator's, and Temp-LoRA's time and
    memory overhead (on vs off at the same env kind and N)."""
    real = next((r for r in rows if r["env"].startswith("real") and "error" not in r), None)
    off = {(r["env"], r["num_envs"]): r for r in rows if r.get("temp_lora") == "off" and "error" not in r}
    for r in rows:
        if "error" in r or r["env"].startswith("real"):
            continue
        if real is not None:
            r["x_real"] = r["frames_per_s"] / real["frames_per_s"]
        base = off.get((r["env"], r["num_envs"]))
        if r.get("temp_lora") == "on" and base is not None:
            r["temp_lora_time_overhead"] = r["s_per_step"] / base["s_per_step"] - 1
            if r.get("peak_cuda_mib") and base.get("peak_cuda_mib"):
                r["temp_lora_memory_overhead"] = r["peak_cuda_mib"] / base["peak_cuda_mib"] - 1


def markdown_table(rows: list[dict], machine: str) -> str:
    lines = [f"Machine: {machine}", "",
             "| env | N | frames | denoise steps | precision | Temp-LoRA | s / step | frames/s | frames/s per env "
             "| x real | Temp-LoRA overhead (time / memory) |",
             "|---|---:|---|---:|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['env']} | {r.get('num_envs', '')} | | | | | error | {r['error'][:60]} | | | |")
            continue
        n = r["num_envs"]
        size = f"{r['frame_size']}x{r['frame_size']}, {r['new_frames']}/chunk"
        ratio = f"{r['x_real']:.2f}" if "x_real" in r else ""
        overhead = ""
        if "temp_lora_time_overhead" in r:
            overhead = f"{r['temp_lora_time_overhead']:+.0%}"
            if "temp_lora_memory_overhead" in r:
                overhead += f" / {r['temp_lora_memory_overhead']:+.0%}"
        fast = _memory_label(r, ", {}")
        precision = r.get("precision", "") + (", compiled" if r.get("compile") else "") \
            + (" (the fast update too)" if r.get("compile_fast_update") else "") \
            + (", decoder compiled" if r.get("compile_decoder") else "")
        lines.append(f"| {r['env']} | {n} | {size} | {r.get('denoise_steps', '')} | {precision} | "
                     f"{r.get('temp_lora', '')}{fast} | {r['s_per_step']:.3g} | {r['frames_per_s']:.3g} | "
                     f"{r['frames_per_s'] / n:.3g} | {ratio} | {overhead} |")
    return "\n".join(lines)


def _positive_ints(text: str, option: str) -> list[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise SystemExit(f"{option} must be positive integers joined by commas, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> dict:
    args = _parse_args(argv)
    if args.threads != "auto":
        args.threads = int(args.threads)
    set_cpu_threads(args.threads)  # before any work: "auto" reads the load while this process is idle
    args.threads = torch.get_num_threads()
    settings = [s.strip() for s in args.temp_lora.split(",") if s.strip()]
    if not settings or set(settings) - {"on", "off"}:
        raise SystemExit(f"--temp-lora must be on, off or on,off, got {args.temp_lora!r}")
    if "on" in settings and args.chunks % args.update_every:
        # after K warm-up steps, C timed chunks hold floor(C / K) of Θ's steps per env: at C = 32, K = 24 and K = 32
        # both timed one step in 32 chunks (session 56), a rate the row's K does not say
        whole = -(-args.chunks // args.update_every) * args.update_every
        raise SystemExit(f"--chunks {args.chunks} is not a multiple of --update-every {args.update_every}: the timed "
                         f"chunks would hold {args.chunks // args.update_every} of Θ's steps per env, not one in every "
                         f"{args.update_every}; time --chunks {whole}")
    device = resolve_device(args.device)
    if args.compile:
        torch._logging.set_logs(recompiles=True)  # why a graph compiles again, on stderr
    sizes = _positive_ints(args.sizes, "--sizes")
    fast_batches = [None] if args.fast_batch is None else _positive_ints(args.fast_batch, "--fast-batch")
    recomputes = [s.strip() for s in args.fast_recompute.split(",") if s.strip()]
    if not recomputes or set(recomputes) - {"on", "off"}:
        raise SystemExit(f"--fast-recompute must be on, off or on,off, got {args.fast_recompute!r}")
    targets = [None if t.strip() == "default" else tuple(t.strip().split("+"))
               for t in args.temp_lora_targets.split(",") if t.strip()]
    ranks = [None] if args.temp_lora_rank is None else _positive_ints(args.temp_lora_rank, "--temp-lora-rank")
    if not targets:
        raise SystemExit(f"--temp-lora-targets needs layer kinds joined by '+', got {args.temp_lora_targets!r}")
    spec = _model_spec(args)
    machine = machine_name(device)
    print(f"bench_env: model={spec} device={device} sizes={sizes}", file=sys.stderr)
    memories = list(itertools.product(fast_batches, recomputes, targets, ranks))  # a Temp-LoRA row each
    rows = [row for setting in settings
            for fast_batch, recompute, target, rank in (memories if setting == "on" else [(None, "off", None, None)])
            for row in bench_imagined(spec, sizes, args, device, setting, fast_batch, recompute == "on", target, rank)]
    frame_size = next((r["frame_size"] for r in rows if "frame_size" in r), 64)
    real = bench_real(frame_size, args.real_steps, args.real, args.real_workers)
    if real is not None:
        rows.append(real)
    add_ratios(rows)
    table = markdown_table(rows, machine)
    print(table)
    result = {"date": utc_date(), "machine": machine, "device": str(device), "torch": torch.__version__,
              "command": command_line("experiments.bench_env", argv), "rows": rows, "table": table}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
