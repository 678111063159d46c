"""What a measured number is written down with: command, machine, date; JSON that keeps inf/nan."""

from __future__ import annotations

import math
import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    return device


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_name(device: torch.device) -> str:
    """GPU name, or the CPU model with core and thread counts; plus the torch version."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return (f"CPU {_cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads "
            f"(torch {torch.__version__})")


def command_line(module: str, argv: list[str] | None) -> str:
    return f"python -m {module} " + shlex.join(sys.argv[1:] if argv is None else argv)


def utc_date() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return jsonable(x.item())
    return x


def provenance_lines(result: dict) -> list[str]:
    """The markdown lines every report starts with: the command, machine and date of its numbers."""
    return [f"- command: `{result['command']}`", f"- machine: {result['machine']}", f"- date: {result['date']}"]
