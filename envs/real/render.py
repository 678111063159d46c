"""MuJoCo OpenGL backend selection.

MuJoCo reads ``MUJOCO_GL`` once, when ``mujoco`` is first imported, so the backend must be chosen
before anything imports it; the scene env imports the simulator only after calling
:func:`select_backend`.
"""

from __future__ import annotations

import ctypes.util
import glob
import os
import sys

BACKENDS = ("auto", "egl", "osmesa", "glfw")


def detect_backend() -> str:
    """EGL when a GPU and libEGL are present, else OSMesa when installed, else GLFW."""
    has_gpu = bool(glob.glob("/dev/nvidia[0-9]*") or glob.glob("/dev/dri/renderD*"))
    if has_gpu and ctypes.util.find_library("EGL"):
        return "egl"
    if ctypes.util.find_library("OSMesa"):
        return "osmesa"
    return "glfw"


def select_backend(backend: str = "auto") -> str:
    """Set ``MUJOCO_GL``/``PYOPENGL_PLATFORM`` for ``backend`` and return the backend in use.

    ``auto`` keeps an existing ``MUJOCO_GL`` and otherwise detects one. Once mujoco is imported its
    backend is fixed: ``auto`` then returns it, and asking for another raises ``RuntimeError``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown render backend {backend!r}; choose one of {BACKENDS}")
    current = os.environ.get("MUJOCO_GL")
    if "mujoco" in sys.modules:  # its backend is fixed already
        in_use = current or "glfw"
        if backend not in ("auto", in_use):
            raise RuntimeError(
                f"mujoco was already imported with MUJOCO_GL={current!r}; cannot switch to {backend!r}. "
                "Select the backend before importing mujoco (or set MUJOCO_GL in the environment)."
            )
        return in_use
    if backend == "auto":
        backend = current or detect_backend()
    os.environ["MUJOCO_GL"] = backend
    if backend in ("egl", "osmesa"):
        os.environ["PYOPENGL_PLATFORM"] = backend
    return backend
