"""The one way to get a model from a name: ``"default"``, a preset name, a model folder or an instance.

Every entry point and the env call `load_model`; nothing else resolves model specs.
"""

from __future__ import annotations

import os
import time
import weakref
from pathlib import Path
from typing import Any

import torch

from .config import PRESETS
from .diffusion import make_train_scheduler
from .model import SlowFastVGen

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "weights" / "default"
RESTORE_HINT = ("Restore the shipped default model with `git checkout worldmodel/weights` (from the repository "
                "root), or pass model='tiny' (a preset) or a folder written by SlowFastVGen.save_pretrained.")

_SHARED: "weakref.WeakValueDictionary[tuple, SlowFastVGen]" = weakref.WeakValueDictionary()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _others_running() -> int:
    """Threads of other processes in the running state now (Linux /proc; OSError elsewhere)."""
    me, count = str(os.getpid()), 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == me:
            continue
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    count += f.read().rsplit(")", 1)[1].split()[0] == "R"
        except (OSError, IndexError):  # the process ended meanwhile
            continue
    return count


def free_cpu_threads() -> int:
    """The CPU cores this process may use that are not busy now: usable cores minus the threads of other
    processes running at this moment (the median of 5 looks over ~50 ms), at least 1.

    Not the 1-minute load average (the fallback off Linux): it lags a minute behind and counts this
    process's own threads. torch's OpenMP threads spin at their barriers: with 2 threads on 2 cores shared
    with another busy process, a step of the shipped default took 10x longer than with 1 thread
    (docs/RESULTS.md, "The CPU path"), so a process that shares the cores should not claim them all.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        samples = []
        for _ in range(5):
            samples.append(_others_running())
            time.sleep(0.01)
        busy = sorted(samples)[len(samples) // 2]
    except OSError:
        busy = int(round(os.getloadavg()[0])) if hasattr(os, "getloadavg") else 0
    return max(1, min(cores, cores - busy))


def set_cpu_threads(threads: int | str | None) -> int:
    """Set torch's CPU threads: an int, "auto" (`free_cpu_threads`) or None (left as it is); returns the count."""
    if threads is None:
        return torch.get_num_threads()
    if threads == "auto":
        threads = free_cpu_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"cpu threads must be a positive int, 'auto' or None, got {threads!r}")
    torch.set_num_threads(threads)
    return threads


def model_folder(spec: str | Path) -> Path | None:
    """The folder a spec names: the shipped default's, a model folder, or None for a preset name."""
    if str(spec) == "default":
        if not (DEFAULT_MODEL_DIR / "config.json").is_file():
            raise FileNotFoundError(f"the shipped default model is missing ({DEFAULT_MODEL_DIR} has no config.json). "
                                    f"{RESTORE_HINT}")
        return DEFAULT_MODEL_DIR
    if str(spec) in PRESETS:
        return None
    folder = Path(spec)
    if not folder.is_dir():
        raise FileNotFoundError(f"model {str(spec)!r} is neither a preset ({', '.join(PRESETS)}), 'default', nor a "
                                "model folder")
    return folder


def load_model(spec: Any = "default", device: str | torch.device | None = None, dtype: torch.dtype | None = None,
               text_cache: str | Path | None = None, seed: int | None = 0, shared: bool = False,
               **overrides: Any) -> tuple[SlowFastVGen, Path | None]:
    """(model in eval mode on ``device``, its folder or None) from a spec.

    - ``"default"``: the shipped model; a folder: `SlowFastVGen.from_pretrained` (``overrides`` replace
      config fields that leave weight shapes alone); a preset name: random weights drawn with ``seed``
      (None: from the global RNG as it stands), built directly on the device; a `SlowFastVGen`: itself, with
      the folder it was loaded from (``model.folder``, None if it was built).
    - ``dtype``: cast the weights (e.g. torch.bfloat16 for benchmarks).
    - ``text_cache``: a safetensors file of instruction embeddings (`experiments.text_cache`), so no
      text model is needed on this machine.
    - ``shared``: reuse a live instance loaded with the same arguments (several envs, one model).
    """
    device = torch.device(device) if device is not None else default_device()
    if isinstance(spec, SlowFastVGen):
        if device != spec.device:
            spec.to(device)
        return spec, spec.folder
    if not isinstance(spec, (str, Path)):
        raise TypeError(f"model must be 'default', a preset name, a folder or a SlowFastVGen, got {type(spec).__name__}")
    folder = model_folder(spec)
    key = (str(folder.resolve()) if folder else f"preset:{spec}", str(device), str(dtype), str(text_cache), seed,
           tuple(sorted((k, repr(v)) for k, v in overrides.items())))
    model = _SHARED.get(key) if shared else None  # a strong reference: the cache holds weak ones
    if model is None:
        model = _build(str(spec), folder, device, seed, overrides)
        if dtype is not None:
            model = model.to(dtype=dtype)
        if text_cache:
            from safetensors.torch import load_file

            model.action_encoder.load_text_cache(load_file(str(text_cache)))
        if shared:
            _SHARED[key] = model
    return model.eval(), folder


def _build(spec: str, folder: Path | None, device: torch.device, seed: int | None,
           overrides: dict[str, Any]) -> SlowFastVGen:
    if folder is not None:
        hint = RESTORE_HINT if folder == DEFAULT_MODEL_DIR else ""
        return SlowFastVGen.from_pretrained(folder, device=device, restore_hint=hint, **overrides)
    if seed is None:  # the caller's RNG as it stands (training seeds it)
        return _build_preset(spec, device, overrides)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return _build_preset(spec, device, overrides)


def _build_preset(spec: str, device: torch.device, overrides: dict[str, Any]) -> SlowFastVGen:
    if device.type == "cuda":  # a large preset (modelscope) is built where it runs
        with torch.device(device):
            model = SlowFastVGen.from_preset(spec, **overrides)
        model.scheduler = make_train_scheduler(model.config)  # scheduler tables stay on the CPU
        return model
    return SlowFastVGen.from_preset(spec, **overrides).to(device)
