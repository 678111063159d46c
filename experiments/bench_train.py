"""Training throughput of the fast slow phase (latent cache, bf16, compile, fused AdamW, EMA) on 1..N GPUs.

    python -m experiments.bench_train --text-cache runs/text_cache.safetensors --out runs/bench_train/one.json
    accelerate launch --multi_gpu --num_processes 2 -m experiments.bench_train --text-cache ... --out .../two.json
    python -m experiments.bench_train --attention-probe --batch 256 --text-cache ... --out .../attention.json
    python -m experiments.bench_train --plot one.json two.json --out docs/training_scaling.png

Model: the `preset` (default `small`, the shipped default's size) with random weights; the VAE is random
too, which changes no timing. Data: synthetic panning episodes at the model's frame size with
`context_frames` frames per chunk, made in every process from the same seed (the GPU machine has no
data sets). Training: `worldmodel.train.Trainer`, slow phase, exactly as `experiments.train` runs it with
`--config-name train_fast` (`--batch` is the global batch, split over the processes). Throughput: global
chunk windows per second over the logged intervals (each `--log-every` steps; the loss is read only
there), leaving out the first `--skip` intervals (compilation, warm-up); median and mean are reported.
`--profile N` then times N more steps under `torch.profiler` and lists where the GPU time goes.
`--attention-probe` times one eager bf16 training step of the UNet with each SDPA kernel choice, each in
its own process (a failing kernel cannot take the others down).

The GPU machine has no text model: give `--text-cache` (`python -m experiments.text_cache --out ...`).
Imports no other `experiments` module.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

# (SDPA kernels, batch-chunked processor): PyTorch's own choice as diffusers calls it, then the choices
# `TrainConfig.attention` offers behind the batch-chunked processor ("auto" tries flash first).
PROBES = [("default", False), ("default", True), ("auto", True), ("efficient", True), ("cudnn", True),
          ("math", True)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--text-cache", default=None, help="safetensors of instruction embeddings (experiments.text_cache)")
    p.add_argument("--episodes", type=int, default=512, help="synthetic episodes")
    p.add_argument("--chunks", type=int, default=8, help="chunks per synthetic episode")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--time-limit", type=float, default=None,
                   help="stop training after this many seconds (compilation included); the intervals so far count")
    p.add_argument("--batch", type=int, default=256, help="global batch (windows per optimizer step)")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--ema", type=float, default=0.9995)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--skip", type=int, default=2, help="logged intervals left out of the throughput")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--attention", default="auto")
    p.add_argument("--cache-dtype", default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", type=int, default=0, help="profile this many steps after training")
    p.add_argument("--attention-probe", action="store_true")
    p.add_argument("--probe-one", nargs=2, metavar=("BACKEND", "CHUNKED"), help=argparse.SUPPRESS)
    p.add_argument("--plot", nargs="+", metavar="JSON", help="plot these results' loss curves into --out (png)")
    p.add_argument("--out", required=True, help="result JSON (or the PNG with --plot)")
    p.add_argument("--run-dir", default="runs/bench_train", help="checkpoints (a fresh one per configuration)")
    return p.parse_args(argv)


def build_model(args: argparse.Namespace):
    from safetensors.torch import load_file

    from worldmodel.model import SlowFastVGen

    torch.manual_seed(args.seed)  # the same initial model in every process
    model = SlowFastVGen.from_preset(args.preset)
    if args.text_cache:
        model.action_encoder.load_text_cache(load_file(args.text_cache))
    return model


def synthetic_windows(args: argparse.Namespace, model) -> Any:
    from envs.data import ChunkDataset
    from envs.synthetic import random_episodes

    mc = model.config
    episodes = random_episodes(args.episodes, args.chunks, seed=args.seed, frame_size=mc.frame_size,
                               chunk_len=mc.new_frames)
    return ChunkDataset(episodes, mc.context_frames, mc.new_frames)


def machine() -> dict[str, Any]:
    info = {"host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(), gpus_visible=torch.cuda.device_count(),
                    cuda=torch.version.cuda, nccl=".".join(map(str, torch.cuda.nccl.version())))
    return info


# --------------------------------------------------------------------------------------------- training
def train(args: argparse.Namespace) -> dict[str, Any] | None:
    from worldmodel.train import Trainer, TrainConfig

    t0 = time.perf_counter()
    model = build_model(args)
    windows = synthetic_windows(args, model)
    print(f"model and {len(windows)} synthetic windows: {time.perf_counter() - t0:.1f} s", flush=True)
    out = Path(args.out)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    run_dir = Path(args.run_dir) / f"{args.preset}_{world}x{args.batch}"
    cfg = TrainConfig(phase="slow", steps=args.steps, batch_size=args.batch, lr=args.lr, warmup_steps=args.warmup,
                      log_every=args.log_every, checkpoint_every=10**9, seed=args.seed,
                      out_dir=str(run_dir), latent_cache=True, cache_dtype=args.cache_dtype,
                      compile=args.compile, attention=args.attention, ema_decay=args.ema,
                      mixed_precision="bf16" if torch.cuda.is_available() else "no",
                      deadline=time.time() + args.time_limit if args.time_limit else None)
    trainer = Trainer(model, windows, cfg)
    acc = trainer.accelerator
    if acc.is_main_process and trainer.checkpoint_path.exists():
        trainer.checkpoint_path.unlink()  # a benchmark always starts fresh
    acc.wait_for_everyone()
    trainer.build_cache()
    print(f"latent cache built: {trainer.cache_seconds:.1f} s", flush=True)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    history = trainer.fit(progress=False)
    seconds = time.perf_counter() - start
    rates = [r["windows_per_s"] for r in history[args.skip:]]
    result = {
        "command": "python -m experiments.bench_train " + shlex.join(sys.argv[1:]),
        "num_processes": acc.num_processes,
        "distributed": str(acc.distributed_type),
        "backend": torch.distributed.get_backend() if acc.num_processes > 1 else None,
        "mixed_precision": acc.mixed_precision,
        "machine": machine(),
        "preset": args.preset,
        "windows": len(windows),
        "global_batch": args.batch,
        "per_process_batch": args.batch // acc.num_processes,
        "steps": trainer.step,
        "compile": args.compile,
        "attention": args.attention,
        "cache_seconds": round(trainer.cache_seconds, 2),
        "cache_mib": round(trainer.cache.nbytes / 2**20, 1),
        "fit_seconds": round(seconds, 1),
        "first_interval_seconds": round(args.log_every * args.batch / history[0]["windows_per_s"], 1)
        if history and history[0].get("windows_per_s") else None,  # the log rounds a slow CPU rate to 0
        "windows_per_s_median": _median(rates),
        "windows_per_s_mean": round(sum(rates) / len(rates), 1) if rates else None,
        "timed_intervals": len(rates),
        "history": history,
        "max_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
    }
    if args.profile:
        result["profile"] = profile(trainer, args.profile)
    if acc.is_main_process:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        print(json.dumps({k: v for k, v in result.items() if k not in ("history", "profile")}, indent=2))
    acc.wait_for_everyone()
    return result


def _median(xs: list[float]) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    mid = len(s) // 2
    return round(s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2, 1)


KERNEL_GROUPS = [("attention", ("fmha", "flash", "attention", "sdpa", "cudnn_generated_fort_native_sdpa")),
                 ("allreduce", ("nccl",)),
                 ("optimizer", ("adam",)),
                 ("matmul/conv", ("gemm", "xmma", "cutlass", "nvjet", "conv", "implicit", "winograd", "wgrad",
                                  "dgrad", "fprop", "sm90")),
                 ("norm", ("norm", "welford")),
                 ("fused elementwise (triton)", ("triton",))]


def profile(trainer, steps: int) -> dict[str, Any]:
    """GPU time of `steps` cached training steps by kernel, and by kernel group."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    trainer.model.train()
    trainer.model.vae.eval()
    optimizer = trainer.optimizer
    for s in range(2):  # warm-up (the compiled graph exists already)
        trainer.cached_step(optimizer, s)
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for s in range(steps):
            trainer.cached_step(optimizer, s)
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    kernels = []
    for e in prof.key_averages():
        t = getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0))
        if t > 0 and e.device_type == torch.autograd.DeviceType.CUDA:
            kernels.append({"name": e.key[:120], "ms_per_step": round(t / 1000 / steps, 3), "calls": e.count // steps})
    kernels.sort(key=lambda k: -k["ms_per_step"])
    groups: dict[str, float] = {}
    for k in kernels:
        name = k["name"].lower()
        group = next((g for g, keys in KERNEL_GROUPS if any(x in name for x in keys)), "other")
        groups[group] = round(groups.get(group, 0.0) + k["ms_per_step"], 3)
    gpu_ms = sum(k["ms_per_step"] for k in kernels)
    return {"steps": steps, "wall_ms_per_step": round(1000 * wall / steps, 2), "gpu_busy_ms_per_step": round(gpu_ms, 2),
            "kernel_launches_per_step": sum(k["calls"] for k in kernels), "groups_ms_per_step": groups,
            "top_kernels": kernels[:25]}


# ------------------------------------------------------------------------------------------ attention
def probe_one(args: argparse.Namespace, backend: str, chunked: bool) -> dict[str, Any]:
    """One eager bf16 forward + backward of the UNet at `--batch` with the given SDPA choice."""
    from worldmodel.attention import sdpa_backends, use_chunked_attention
    from worldmodel.diffusion import diffusion_loss

    model = build_model(args).cuda().train()
    if chunked:
        use_chunked_attention(model.unet)
    mc, b = model.config, args.batch
    lat = torch.randn(b, mc.latent_channels, mc.chunk_frames, mc.latent_size, mc.latent_size, device="cuda")
    given = torch.zeros(b, mc.chunk_frames, dtype=torch.bool, device="cuda")
    given[:, : mc.context_frames] = True
    cond = model.action_encoder.null(b).detach()
    row = {"backend": backend, "chunked": chunked, "batch": b}

    def step() -> None:
        with torch.autocast("cuda", torch.bfloat16), sdpa_backends(backend):
            loss = diffusion_loss(model.unet, model.scheduler, lat, given, cond)
        loss.backward()

    try:
        for _ in range(2):
            step()
        torch.cuda.synchronize()
        n, start = 5, time.perf_counter()
        for _ in range(n):
            step()
        torch.cuda.synchronize()
        ms = 1000 * (time.perf_counter() - start) / n
        row.update(ok=True, ms_per_step=round(ms, 1), windows_per_s=round(1000 * b / ms, 1),
                   max_memory_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2))
    except Exception as err:  # noqa: BLE001 - the probe reports any failure
        row.update(ok=False, error=f"{type(err).__name__}: {str(err)[:300]}")
    return row


def attention_probe(args: argparse.Namespace) -> None:
    gpus = max(torch.cuda.device_count(), 1)
    rows: list[dict[str, Any]] = []
    pending = list(PROBES)
    while pending:
        batch, pending = pending[:gpus], pending[gpus:]
        procs = []
        for i, (backend, chunked) in enumerate(batch):
            cmd = [sys.executable, "-m", "experiments.bench_train", "--probe-one", backend, str(int(chunked)),
                   "--batch", str(args.batch), "--preset", args.preset, "--out", args.out]
            if args.text_cache:
                cmd += ["--text-cache", args.text_cache]
            env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(i))
            procs.append((backend, chunked, subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                                             stderr=subprocess.PIPE, text=True)))
        for backend, chunked, proc in procs:
            try:
                out, err = proc.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            lines = [ln for ln in out.splitlines() if ln.startswith("{")]
            row = json.loads(lines[-1]) if lines else {
                "backend": backend, "chunked": chunked, "ok": False, "error": f"exit {proc.returncode}: {err[-300:]}"}
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"command": "python -m experiments.bench_train " + shlex.join(sys.argv[1:]), "machine": machine(),
              "preset": args.preset, "batch": args.batch, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


# ----------------------------------------------------------------------------------------------- plot
def plot(paths: list[str], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for path in paths:
        r = json.loads(Path(path).read_text())
        steps = [h["step"] for h in r["history"]]
        label = (f"{r['num_processes']} GPU{'s' if r['num_processes'] > 1 else ''}, batch {r['global_batch']} "
                 f"({r['per_process_batch']}/GPU): {r['windows_per_s_median']:,.0f} windows/s")
        ax.plot([s * r["global_batch"] / 1000 for s in steps], [h["loss"] for h in r["history"]], label=label)
    ax.set_xlabel("chunk windows seen (thousands)")
    ax.set_ylabel("training loss (mean over each logged interval)")
    first = json.loads(Path(paths[0]).read_text())
    ax.set_title(f"Slow phase, `{first['preset']}` preset, synthetic data, bf16 ({first['machine'].get('gpu', 'CPU')})",
                 fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(out)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.plot:
        plot(args.plot, args.out)
    elif args.probe_one:
        backend, chunked = args.probe_one
        print(json.dumps(probe_one(args, backend, bool(int(chunked)))), flush=True)
    elif args.attention_probe:
        attention_probe(args)
    else:
        train(args)


if __name__ == "__main__":
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    main()
