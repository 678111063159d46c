#!/usr/bin/env bash
# Build what experiments/device_session.sh carries to the GPU machine, on the CPU machine, from a fresh checkout:
#   .whl/*.whl                   packages the GPU image lacks (cp312 wheels; the same versions as the CPU venv)
#   .whl/collect_site.tar.xz     mujoco, ogbench and dm_control (trimmed) unpacked as /tmp/.whlc
#   .whl/text_cache.safetensors  the frozen text encoder's embeddings (the GPU machine has no MiniLM copy)
#   .gl/*.deb                    the EGL/GL loaders for MuJoCo's EGL rendering
# Both folders are git-ignored. Needs the project's venv (`make setup`) and a package index (PyPI, Debian's apt).
#
#   bash experiments/device_carry.sh        # about 2 minutes; 26 MB in .whl, 0.4 MB in .gl
#
# Why a tarball for the scene packages: dm_control's wheel is 56 MB, 48 of them model assets OGBench does not use
# (suite, locomotion, blender); unpacked and trimmed it is 7.9 MB. A wheel is a zip, so unpacking it is installing it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || { echo "no $PY: run 'make setup' first" >&2; exit 2; }
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
TARGET="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
    --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT

rm -rf .whl && mkdir -p .whl
# packages the GPU image lacks (hydra's antlr4 4.9.3 exists only as a source archive: built here, pure Python)
# (scenedetect: evaluation.metrics and vae_check import it; without it every evaluation there fails, session 20)
for pkg in diffusers gymnasium farama-notifications stable-baselines3 hydra-core omegaconf scenedetect-headless \
        platformdirs; do
    "$PY" -m pip download -q $TARGET -d .whl "$pkg==$(version "$pkg")"
done
"$PY" -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==$(version antlr4-python3-runtime)"

# the scene's packages, unpacked into .whlc (device_session.sh puts /tmp/.whlc on PYTHONPATH)
for pkg in mujoco mujoco-core ogbench dm_control dm-env dm-tree glfw pyopengl; do
    "$PY" -m pip download -q $TARGET -d "$TMP/site" "$pkg==$(version "$pkg")"
done
mkdir -p "$TMP/unpacked/.whlc"
for w in "$TMP"/site/*.whl; do unzip -q -o "$w" -d "$TMP/unpacked/.whlc"; done
rm -rf "$TMP"/unpacked/.whlc/dm_control/{suite,locomotion,blender}
tar cJf .whl/collect_site.tar.xz -C "$TMP/unpacked" .whlc

"$PY" -m experiments.text_cache --out .whl/text_cache.safetensors

# the GL loaders (the device README's recipe)
rm -rf .gl && mkdir -p .gl "$TMP/apt/partial"
apt_o="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=$TMP/apt"
apt-get $apt_o update > /dev/null
(cd .gl && apt-get $apt_o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 2> /dev/null)
du -sh .whl .gl
