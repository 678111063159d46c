# The front door: `make demo` and `make test` do all the set-up on a fresh Debian/Ubuntu machine (system
# packages where missing, a venv with the CPU torch wheel and the project), then run the demo / the tests.
# A second run reuses the venv (the stamp file below); editing pyproject.toml reinstalls the project.

# System packages (Debian names), installed with apt-get only where missing. libosmesa6: MuJoCo rendering
# without a GPU; chromium, chromium-driver: the browser-driven human-study test.
APT_PACKAGES = python3 python3-venv libosmesa6 chromium chromium-driver
# torch goes in first, pinned, so that the project's `torch>=...` does not pull the 3 GB CUDA build: on a
# CPU-only machine point pip at a CPU wheel (a local wheel folder or
# `TORCH_INDEX=--index-url https://download.pytorch.org/whl/cpu`).
TORCH = torch==2.13.0
TORCH_INDEX =
PYTHON = python3
VENV = .venv
STAMP = $(VENV)/.installed
# MuJoCo's GL backend: OSMesa (software) by default; `make test MUJOCO_GL=egl PYOPENGL_PLATFORM=egl` on a GPU.
MUJOCO_GL = osmesa
PYOPENGL_PLATFORM = osmesa
# Extra arguments: `make test PYTEST_ARGS="-x tests/test_real_scene.py"`, `make demo DEMO_ARGS="--steps 1"`.
PYTEST_ARGS =
DEMO_ARGS =

SUDO = $(if $(filter 0,$(shell id -u)),,sudo)
RUN = . $(VENV)/bin/activate && MUJOCO_GL=$(MUJOCO_GL) PYOPENGL_PLATFORM=$(PYOPENGL_PLATFORM)

.DEFAULT_GOAL := help
.PHONY: help system setup demo test clean-venv

help:
	@echo "make demo        set up (if needed), then python -m experiments.demo on the shipped default model"
	@echo "make test        set up (if needed), then python -m pytest -q"
	@echo "make setup       set up only: apt packages where missing ($(APT_PACKAGES)),"
	@echo "                 $(VENV) with $(TORCH) first, then pip install -e \".[test]\""
	@echo "make clean-venv  remove $(VENV) (the next setup reinstalls)"
	@echo "Variables: PYTEST_ARGS, DEMO_ARGS, MUJOCO_GL/PYOPENGL_PLATFORM (default osmesa; egl on a GPU), TORCH_INDEX"

system:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y $$missing; \
	fi

$(VENV)/bin/python: | system
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install $(TORCH_INDEX) "$(TORCH)"
	$(VENV)/bin/python -m pip install -e ".[test]"
	touch $@

setup: system $(STAMP)

demo: setup
	$(RUN) python -m experiments.demo $(DEMO_ARGS)

test: setup
	$(RUN) python -m pytest -q $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
