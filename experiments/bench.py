"""The paper's Table 1: time per generated sample and peak memory with vs without Temp-LoRA.

    python -m experiments.bench                                        # shipped model (else tiny), CPU, fp32
    python -m experiments.bench --preset small --device cuda --dtype bf16 --out runs/bench_small
    python -m experiments.bench --preset modelscope --device cuda --dtype bf16 --chunks 2 --repeats 3

Two copies of one model with the same weights are measured side by side in one run, on the same inputs
(random start frames, instruction and action vectors, the same sampling noise): without Temp-LoRA (the
plain model) and with Temp-LoRA (peft ``TempLoRA``, the model's own config: after each generated chunk,
fast steps on it; Θ merged into the weights for sampling when ``merge_for_inference``). Samples:

- ``chunk``: one chunk (``new_frames`` frames after ``context_frames`` given frames); with Temp-LoRA it
  includes the fast update that follows it, mid-episode (Θ already non-zero).
- ``video``: a long video of ``--chunks`` chunks (``model.rollout``); with Temp-LoRA, Θ starts from zero
  (a new episode) and learns after every chunk.

Each is timed ``--repeats`` times after one warm-up of each kind (excluded), alternating which of the
two goes first. Peak memory of a row = resident model tensors (+ Temp-LoRA factors, their rollback
snapshot and Adam state for the Temp-LoRA row) + the transient peak during the sample: on CUDA from
``torch.cuda.max_memory_allocated`` (synchronised), on CPU from the process RSS sampled every 2 ms
(psutil; without psutil ``resource.getrusage`` max-RSS growth, a lower bound). Overheads are
(with - without) / without. On a GPU, ``--preset modelscope`` (the ModelScope-T2V UNet3D size, random
weights, built on the device) also reports the chunk time against the paper's 12.93 s (V100).
Writes ``bench.json`` and ``bench.md`` (with command, machine and date) into ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from evaluation.run_info import command_line, machine_name, provenance_lines, resolve_device, utc_date
from worldmodel.config import PRESETS
from worldmodel.loading import DEFAULT_MODEL_DIR, load_model
from worldmodel.memory import TempLoRA

PAPER = {"s_without": 12.93, "s_with": 13.81, "mb_without": 9579, "mb_with": 9931, "gpu": "V100"}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
INSTRUCTION = "open the drawer"


# ------------------------------------------------------------------------------------------- memory
def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers (the frozen text model lives outside the module)."""
    return _tensor_bytes(model.parameters()) + _tensor_bytes(model.buffers())


def temp_lora_state_bytes(memory: Any) -> int:
    """Temp-LoRA tensors beyond its factors (which are model parameters): Adam moments and the rollback
    snapshot (a copy of the factors and of the Adam state)."""
    opt = [v for s in memory.optimizer.state.values() for v in s.values()]
    good = getattr(memory, "_good", None)
    snap = 0
    if good is not None:
        snap = _tensor_bytes(good[0]) + _tensor_bytes(
            v for s in good[1].get("state", {}).values() for v in s.values())
    return _tensor_bytes(opt) + snap


class PeakMemory:
    """Transient peak bytes above the level at entry: CUDA allocator, or sampled process RSS on CPU."""

    def __init__(self, device: torch.device, interval: float = 0.002):
        self.device, self.interval = device, interval
        self.delta = 0
        try:
            import psutil

            self._proc = psutil.Process()
        except ImportError:
            self._proc = None
        self.method = ("torch.cuda.max_memory_allocated" if device.type == "cuda" else
                       "RSS sampled every 2 ms (psutil)" if self._proc is not None else
                       "resource.getrusage max-RSS growth (lower bound; psutil not installed)")

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        elif self._proc is not None:
            self._start = self._peak = self._proc.memory_info().rss
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        else:
            import resource

            self._start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.delta = torch.cuda.max_memory_allocated(self.device) - self._start
        elif self._proc is not None:
            self._stop.set()
            self._thread.join()
            self.delta = max(self._peak, self._proc.memory_info().rss) - self._start
        else:
            import resource

            self.delta = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self._start)


# ------------------------------------------------------------------------------------------- models
def build_model(args: argparse.Namespace, device: torch.device, dtype: torch.dtype):
    """(model, name): a preset (random weights, seeded, built on the device), 'default' or a folder."""
    spec = args.preset or args.model
    if spec is None:
        spec = "default" if (DEFAULT_MODEL_DIR / "config.json").is_file() else "tiny"
    try:
        model, _ = load_model(spec, device, dtype=dtype, seed=args.seed)
    except FileNotFoundError as err:
        raise SystemExit(f"unknown preset or model {spec!r}: {err}") from err
    return model, spec


def ensure_text(model: Any, texts: list[str]) -> str | None:
    """Embed the benchmark instruction; without a text model, a fixed random embedding (timing only)."""
    enc = model.action_encoder
    missing = [t for t in texts if t not in enc.text_cache] if enc.uses_text else []
    if not missing:
        return None
    try:
        enc.embed_texts(missing)
        return None
    except (ImportError, OSError) as err:
        g = torch.Generator().manual_seed(0)
        shape = (model.config.max_text_tokens, model.config.text_width)
        enc.load_text_cache({t: torch.randn(shape, generator=g) for t in missing})
        return f"text encoder unavailable ({type(err).__name__}): a random instruction embedding is used (timing only)"


def make_inputs(model: Any, chunks: int, seed: int) -> tuple[np.ndarray, list[Any]]:
    cfg = model.config
    rng = np.random.default_rng(seed)
    first = rng.integers(0, 256, (cfg.context_frames, cfg.frame_size, cfg.frame_size, 3), dtype=np.uint8)
    actions: list[Any] = []
    for _ in range(max(1, chunks)):
        vec = torch.from_numpy(rng.standard_normal((cfg.new_frames, cfg.action_dim)).astype(np.float32))
        if cfg.action_type == "text":
            actions.append(INSTRUCTION)
        elif cfg.action_type == "vector":
            actions.append(vec)
        else:
            actions.append({"text": INSTRUCTION, "vector": vec})
    return first, actions


# ------------------------------------------------------------------------------------------ measuring
def run_bench(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    dtype = DTYPES[args.dtype if args.dtype != "auto" else ("bf16" if device.type == "cuda" else "fp32")]
    model_on, spec = build_model(args, device, dtype)
    cfg = model_on.config
    notes = []
    if (note := ensure_text(model_on, [INSTRUCTION])) is not None:
        notes.append(note)
    model_off = copy.deepcopy(model_on)  # the plain model: same weights, no Temp-LoRA layers at all
    tl_config = cfg.temp_lora if args.temp_lora_steps is None else dataclasses.replace(
        cfg.temp_lora, steps=args.temp_lora_steps)
    memory = TempLoRA(model_on, tl_config)
    first, actions = make_inputs(model_on, args.chunks, args.seed)
    steps = args.steps or cfg.sample_steps

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def gen() -> torch.Generator:
        return torch.Generator(device=device).manual_seed(args.seed)

    update_s: list[float] = []

    def chunk_off() -> None:
        model_off.generate_chunk(first, actions[0], steps=steps, generator=gen())

    def chunk_on() -> None:
        chunk = model_on.generate_chunk(first, actions[0], steps=steps, generator=gen(), memory=memory)
        sync()
        t0 = time.perf_counter()
        with torch.enable_grad():
            memory.update(chunk)
        sync()
        update_s.append(time.perf_counter() - t0)

    def video_off() -> None:
        model_off.rollout(first, actions[: args.chunks], steps=steps, generator=gen())

    def video_on() -> None:
        model_on.rollout(first, actions[: args.chunks], memory=memory, steps=steps, generator=gen())

    def measure(fn: Callable[[], None], resident: Callable[[], int], before: Callable[[], None] | None = None) -> dict:
        if before is not None:
            before()  # not timed (e.g. resetting Θ for a new episode)
        base = resident()
        sync()
        with PeakMemory(device) as peak:
            t0 = time.perf_counter()
            fn()
            sync()
            seconds = time.perf_counter() - t0
        return {"s": seconds, "peak_bytes": base + peak.delta, "transient_bytes": peak.delta}

    resident_off = lambda: model_bytes(model_off)  # noqa: E731
    resident_on = lambda: model_bytes(model_on) + temp_lora_state_bytes(memory)  # noqa: E731
    kinds = [("chunk", chunk_off, chunk_on, None)]
    if args.chunks > 0:
        kinds.append((f"video ({args.chunks} chunks)", video_off, video_on, memory.reset))

    print(f"bench: model={spec} device={device} dtype={dtype} steps={steps} repeats={args.repeats}", file=sys.stderr)
    with torch.no_grad():
        chunk_off()  # warm-up: kernels, allocator, text cache; Θ becomes non-zero (mid-episode)
        chunk_on()
        update_s.clear()
        raw: dict[str, dict[str, list[dict]]] = {k[0]: {"off": [], "on": []} for k in kinds}
        for r in range(args.repeats):
            for name, off, on, reset in kinds:
                pair = [("off", off, resident_off, None), ("on", on, resident_on, reset)]
                for which, fn, res, before in (pair if r % 2 == 0 else pair[::-1]):
                    raw[name][which].append(measure(fn, res, before))
            print(f"  repeat {r + 1}/{args.repeats} done", file=sys.stderr)
    rows = []
    overhead = {}
    for name, _, _, _ in kinds:
        pair = {}
        for which in ("off", "on"):
            runs = raw[name][which]
            secs = [x["s"] for x in runs]
            row = {
                "sample": name, "temp_lora": which == "on",
                "s_mean": float(np.mean(secs)), "s_std": float(np.std(secs)), "s_min": float(np.min(secs)),
                "s_per_chunk": float(np.mean(secs)) / (args.chunks if name.startswith("video") else 1),
                "peak_mib": max(x["peak_bytes"] for x in runs) / 2**20,
                "transient_mib": max(x["transient_bytes"] for x in runs) / 2**20,
                "runs_s": secs,
            }
            rows.append(row)
            pair[which] = row
        overhead[name] = {
            "time_pct": 100 * (pair["on"]["s_mean"] / pair["off"]["s_mean"] - 1),
            "memory_pct": 100 * (pair["on"]["peak_mib"] / pair["off"]["peak_mib"] - 1),
        }
    result = {
        "model": spec, "dtype": str(dtype).replace("torch.", ""), "device": str(device),
        "frame_size": cfg.frame_size, "context_frames": cfg.context_frames, "new_frames": cfg.new_frames,
        "denoise_steps": steps, "temp_lora": {"rank": tl_config.rank, "steps": tl_config.steps,
                                             "variant": tl_config.variant,
                                             "merge_for_inference": tl_config.merge_for_inference},
        "parameters_m": sum(p.numel() for p in model_off.parameters()) / 1e6,
        "temp_lora_parameters_m": memory.num_parameters() / 1e6,
        "fast_update_ms": 1000 * float(np.mean(update_s)) if update_s else None,
        "temp_lora_rollbacks": sum(memory.rollbacks),
        "repeats": args.repeats, "memory_method": PeakMemory(device).method,
        "rows": rows, "overhead": overhead, "notes": notes,
    }
    if spec == "modelscope" and device.type == "cuda":
        chunk = {r["temp_lora"]: r["s_mean"] for r in rows if r["sample"] == "chunk"}
        result["modelscope_chunk"] = {
            "s_without": chunk[False], "s_with": chunk[True],
            "paper_s_without": PAPER["s_without"], "paper_s_with": PAPER["s_with"],
            "speedup_without": PAPER["s_without"] / chunk[False], "speedup_with": PAPER["s_with"] / chunk[True],
        }
    return result


# -------------------------------------------------------------------------------------------- report
def markdown(result: dict) -> str:
    lines = [
        "# Table 1: time per generated sample and peak memory, with vs without Temp-LoRA",
        "",
        *provenance_lines(result),
        f"- model: `{result['model']}` ({result['parameters_m']:.1f} M parameters, {result['dtype']}, "
        f"{result['frame_size']}x{result['frame_size']}, {result['context_frames']} context + "
        f"{result['new_frames']} new frames per chunk, {result['denoise_steps']} denoising steps); Temp-LoRA rank "
        f"{result['temp_lora']['rank']} ({result['temp_lora_parameters_m']:.2f} M), {result['temp_lora']['steps']} "
        f"fast step(s) per chunk, merge for inference: {result['temp_lora']['merge_for_inference']}",
        f"- {result['repeats']} repeats after a warm-up; memory: {result['memory_method']}",
        "",
        "| sample | Temp-LoRA | time (s) | s / chunk | peak memory (MiB) | transient (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['sample']} | {'with' if r['temp_lora'] else 'without'} | {r['s_mean']:.4g} ± "
                     f"{r['s_std']:.2g} | {r['s_per_chunk']:.4g} | {r['peak_mib']:.1f} | {r['transient_mib']:.1f} |")
    lines += ["", "| sample | time overhead | memory overhead |", "|---|---|---|"]
    for name, o in result["overhead"].items():
        lines.append(f"| {name} | {o['time_pct']:+.1f}% | {o['memory_pct']:+.1f}% |")
    lines.append(f"| paper (one {PAPER['gpu']}, per sample) | "
                 f"{100 * (PAPER['s_with'] / PAPER['s_without'] - 1):+.1f}% | "
                 f"{100 * (PAPER['mb_with'] / PAPER['mb_without'] - 1):+.1f}% |")
    lines.append("")
    if result.get("temp_lora_rollbacks"):
        lines.append(f"- Warning: {result['temp_lora_rollbacks']} Temp-LoRA update(s) were rolled back (non-finite or "
                     "exploding loss), so those updates skipped their optimizer step.")
    if result.get("fast_update_ms") is not None:
        lines.append(f"- One Temp-LoRA update (mid-episode): {result['fast_update_ms']:.1f} ms.")
    if "modelscope_chunk" in result:
        m = result["modelscope_chunk"]
        lines.append(f"- ModelScope-size chunk: {m['s_without']:.3f} s without / {m['s_with']:.3f} s with Temp-LoRA; "
                     f"the paper's {m['paper_s_without']} s / {m['paper_s_with']} s on a {PAPER['gpu']}: "
                     f"{m['speedup_without']:.1f}x / {m['speedup_with']:.1f}x faster.")
    lines.append("- Peak memory = resident model tensors (+ Temp-LoRA factors, snapshot and Adam state with it) + "
                 "the transient peak during the sample.")
    lines += [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None,
                   help="'default' (shipped), a save_pretrained folder or a preset name (default: the shipped model "
                        "if present, else tiny)")
    p.add_argument("--preset", default=None,
                   help="tiny | small | base | modelscope (random weights; overrides --model)")
    p.add_argument("--dtype", choices=("auto", *DTYPES), default="auto", help="auto: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--chunks", type=int, default=4, help="chunks of the long video sample (0: one-chunk samples only)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps per chunk (default: the model's)")
    p.add_argument("--temp-lora-steps", type=int, default=None, help="fast steps per chunk (default: the model's)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each sample (after one warm-up)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench", help="output folder (bench.json, bench.md)")
    args = p.parse_args(argv)
    if args.preset is not None and args.preset not in PRESETS:
        p.error(f"unknown preset {args.preset!r}; choose one of {', '.join(PRESETS)}")
    if args.chunks < 0 or args.repeats < 1 or (args.steps is not None and args.steps < 1):
        p.error("need --chunks >= 0, --repeats >= 1 and --steps >= 1")
    if args.temp_lora_steps is not None and args.temp_lora_steps < 1:
        p.error("--temp-lora-steps must be >= 1 (Temp-LoRA must learn to be measured)")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_bench(args)
    device = torch.device(result["device"])
    result = {"command": command_line("experiments.bench", argv), "machine": machine_name(device),
              "date": utc_date(), "torch": torch.__version__, **result}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    table = markdown(result)
    (out / "bench.md").write_text(table)
    print(table)
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
