"""MuJoCo OpenGL backend selection.

MuJoCo reads ``MUJOCO_GL`` once, when ``mujoco`` is first imported, so the backend must be chosen
before anything imports it; the scene env imports the simulator only after calling
:func:`select_backend`. Importing mujoco with ``MUJOCO_GL=osmesa`` or ``egl`` and the library missing
fails deep inside PyOpenGL (``'NoneType' object has no attribute 'glGetError'``), so
:func:`check_backend` first makes sure the backend's library loads and otherwise says what to install.
"""

from __future__ import annotations

import ctypes.util
import glob
import os
import sys

BACKENDS = ("auto", "egl", "osmesa", "glfw")
# How to get a working backend, for the errors below.
_HOW = ("On a CPU machine: `apt-get install libosmesa6` and set MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa "
        "(`make test` and `make demo` do both); on a GPU machine: set MUJOCO_GL=egl "
        "(libEGL comes with the GPU driver).")
# The sonames PyOpenGL falls back to when the unversioned lib<name>.so is not installed.
_SONAMES = {"OSMesa": ("libOSMesa.so.8", "libOSMesa.so.6"), "EGL": ("libEGL.so.1",)}


def library_loads(name: str) -> bool:
    """Whether the shared library ``lib<name>`` is found and loads, as PyOpenGL will load it."""
    for candidate in (ctypes.util.find_library(name), f"lib{name}.so", *_SONAMES.get(name, ())):
        if candidate:
            try:
                ctypes.CDLL(candidate)
                return True
            except OSError:
                continue
    return False


def check_backend(backend: str, render: bool = True) -> None:
    """Raise ``RuntimeError`` saying what to install or which ``MUJOCO_GL`` to set when ``backend`` cannot
    work here. OSMesa and EGL need their library even to import mujoco; GLFW needs a display to render
    (``render=False``: simulation only, which GLFW allows without one)."""
    if backend == "osmesa" and not library_loads("OSMesa"):
        raise RuntimeError(f"MuJoCo rendering with MUJOCO_GL=osmesa needs the OSMesa library (libOSMesa.so), "
                           f"which cannot be loaded here. {_HOW}")
    if backend == "egl" and not library_loads("EGL"):
        raise RuntimeError(f"MuJoCo rendering with MUJOCO_GL=egl needs libEGL, which cannot be loaded here. {_HOW}")
    if backend == "glfw" and render and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise RuntimeError("No GL backend for MuJoCo rendering: MUJOCO_GL is glfw (or unset and neither libEGL "
                           f"with a GPU nor OSMesa was found), and glfw needs a display, but DISPLAY is not set. {_HOW}")


def detect_backend() -> str:
    """EGL when a GPU and libEGL are present, else OSMesa when installed, else GLFW."""
    has_gpu = bool(glob.glob("/dev/nvidia[0-9]*") or glob.glob("/dev/dri/renderD*"))
    if has_gpu and library_loads("EGL"):
        return "egl"
    if library_loads("OSMesa"):
        return "osmesa"
    return "glfw"


def select_backend(backend: str = "auto", render: bool = True) -> str:
    """Set ``MUJOCO_GL``/``PYOPENGL_PLATFORM`` for ``backend`` and return the backend in use.

    ``auto`` keeps an existing ``MUJOCO_GL`` and otherwise detects one. Once mujoco is imported its
    backend is fixed: ``auto`` then returns it, and asking for another raises ``RuntimeError``.
    A backend that cannot work here raises ``RuntimeError`` (:func:`check_backend`); ``render=False``
    is for simulation without frames.
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
        check_backend(in_use, render)
        return in_use
    if backend == "auto":
        backend = current or detect_backend()
    check_backend(backend, render)
    os.environ["MUJOCO_GL"] = backend
    if backend in ("egl", "osmesa"):
        os.environ["PYOPENGL_PLATFORM"] = backend
    return backend
