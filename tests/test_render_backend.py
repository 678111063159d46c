"""A GL backend that cannot work here fails early with what to install or which MUJOCO_GL to set (instead of
PyOpenGL's `'NoneType' object has no attribute 'glGetError'` when mujoco is imported)."""

import ctypes
import sys

import pytest

from envs.real import RealSceneEnv
from envs.real import render


@pytest.fixture
def no_gl_libraries(monkeypatch):
    """As on a machine without libosmesa6 or libEGL: nothing is found and nothing loads, and mujoco not yet
    imported (its backend is chosen at import)."""
    def cannot_load(name, *args, **kwargs):
        raise OSError(f"{name}: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    monkeypatch.setattr(ctypes, "CDLL", cannot_load)
    monkeypatch.delitem(sys.modules, "mujoco", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def test_library_check_finds_a_present_library():
    assert render.library_loads("c")
    assert not render.library_loads("no-such-library-xyz")


def test_missing_osmesa_says_what_to_install(no_gl_libraries, monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    for make in (lambda: render.select_backend("osmesa"), lambda: render.select_backend(),
                 lambda: RealSceneEnv(render=False)):  # OSMesa is needed even to import mujoco
        with pytest.raises(RuntimeError, match=r"(?s)MUJOCO_GL=osmesa needs the OSMesa.*apt-get install libosmesa6"):
            make()
    assert "mujoco" not in sys.modules


def test_missing_egl_names_the_cpu_backend(no_gl_libraries, monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "egl")
    with pytest.raises(RuntimeError, match=r"(?s)MUJOCO_GL=egl needs libEGL.*MUJOCO_GL=osmesa"):
        render.select_backend()


def test_no_backend_found_without_a_display(no_gl_libraries, monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "glfw")  # so that the next line's removal is undone after the test
    monkeypatch.delenv("MUJOCO_GL")
    assert render.detect_backend() == "glfw"
    with pytest.raises(RuntimeError, match=r"(?s)No GL backend.*DISPLAY is not set.*apt-get install libosmesa6"
                                           r".*MUJOCO_GL=egl"):
        render.select_backend()
    render.check_backend("glfw", render=False)  # simulation without frames needs no display
