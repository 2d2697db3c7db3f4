#!/usr/bin/env bash
# Installs this tree the way a user does (`pip install '.[EXTRAS]'`, not editable) into a fresh
# venv of the given Python, then checks that each extra brings what it promises: its imports, and
# the `naila` command for the part it installs. Optionally runs unit tests in that venv.
#
#   scripts/check-install.sh PYTHON EXTRAS [-- PYTEST_ARGS...]
#   scripts/check-install.sh python3.13 hub,device,test -- -m unit tests/hub tests/device_agent
#
# PYTHON is a command or a path. A Python that is not there is a clear error (exit 3), so CI can
# skip it on purpose; everything else that fails is a failure. pip's downloads are cached in
# $NAILA_CACHE/pip; $NAILA_CACHE/wheels holds the llama-cpp-python wheel built by scripts/setup.sh
# and, with the vision extra, this Python's torch and torchvision wheels (555 MB for 3.13), kept
# there because pip's own cache does not keep them behind every proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if [ $# -lt 2 ]; then
  echo "usage: $0 PYTHON EXTRAS[,EXTRA...] [-- PYTEST_ARGS...]" >&2
  exit 2
fi
PY=$1 EXTRAS=$2
shift 2
[ "${1:-}" = "--" ] && shift
if ! "$PY" -c "" >/dev/null 2>&1; then  # also a pyenv shim of a version that is not selected
  echo "check-install: $PY not found (install it, e.g. with pyenv or apt)" >&2
  exit 3
fi
CACHE="${NAILA_CACHE:-$HOME/.cache/naila}"
export PIP_CACHE_DIR="$CACHE/pip" PIP_DISABLE_PIP_VERSION_CHECK=1
mkdir -p "$PIP_CACHE_DIR" "$CACHE/wheels"
version=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
WORK=$(mktemp -d "${TMPDIR:-/tmp}/naila-install-$version.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
say() { echo "check-install [python $version, $EXTRAS]: $*"; }

# Build from a copy of the tracked (and new, not ignored) files: a build in the tree would leave
# build/ and *.egg-info behind, and a user's checkout has no ignored files either.
mkdir "$WORK/src"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -e "$f" ] && printf '%s\0' "$f"
done | tar -C "$ROOT" --null -T - -cf - | tar -C "$WORK/src" -xf -
"$PY" -m venv "$WORK/venv"
V="$WORK/venv/bin"
start=$(date +%s)
has() { [[ ",$EXTRAS," == *",$1,"* ]]; }
if has vision; then  # torch/torchvision as pyproject's vision extra pins them, into the wheel cache once
  pins=$("$V/python" -c '
import sys, tomllib
extra = tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["vision"]
print(" ".join(r for r in extra if r.split("==")[0] in ("torch", "torchvision")))' "$WORK/src/pyproject.toml")
  # shellcheck disable=SC2086  # two requirement words
  "$V/pip" download -q --no-deps --only-binary=:all: --find-links "$CACHE/wheels" -d "$CACHE/wheels" $pins 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
fi
say "pip install '.[$EXTRAS]'"
"$V/pip" install -q --find-links "$CACHE/wheels" "$WORK/src[$EXTRAS]" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
if has vision; then  # the documented second step (pyproject's vision extra says why)
  "$V/pip" install -q --no-deps -r "$WORK/src/scripts/vision-no-deps.txt" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
fi
say "installed in $(( $(date +%s) - start )) s"

check() {  # check DESCRIPTION PYTHON-CODE: run in the fresh venv, outside the tree
  (cd "$WORK" && "$V/python" -c "$2") || { say "FAILED: $1" >&2; exit 1; }
  say "ok: $1"
}
cli() {  # cli SUBCOMMAND: its --help works from the installed entry point
  "$V/naila" "$1" --help >/dev/null || { say "FAILED: naila $1 --help" >&2; exit 1; }
  say "ok: naila $1 --help"
}
cd "$WORK"
"$V/naila" --help >/dev/null || { say "FAILED: naila --help" >&2; exit 1; }
check "core: shared settings" "import shared.config"
if has hub; then
  check "hub imports" "import hub.app, webrtcvad, aiortc, grpc, cv2, pymicro_wakeword"
  cli hub
fi
if has device; then
  check "device imports, echo canceller on libspeexdsp" "
import device_agent.agent, sounddevice, soxr
from device_agent.speex_ctypes import EchoState
EchoState(160, 3200, 16000)"
  cli device
fi
if has ai; then
  check "ai server imports and engines" "import ai_server.app, faster_whisper, piper, llama_cpp, hassil, grpc"
  cli ai-server
fi
if has vision; then
  check "vision: torch, ultralytics and headless OpenCV" "
import importlib.metadata as md, cv2, torch, torchvision, ultralytics
names = {d.metadata['Name'].lower() for d in md.distributions()}
assert 'opencv-python' not in names, 'opencv-python was installed over opencv-python-headless'
from ai_server.vision.detector import missing_dependency, shipped_checkpoint
assert missing_dependency() is None, missing_dependency()
assert shipped_checkpoint() is not None, 'no shipped checkpoint'
import sys
from ai_server.media.ocr import rapidocr_installed  # OCR: its last release requires Python < 3.13
assert rapidocr_installed() == (sys.version_info < (3, 13)), 'rapidocr-onnxruntime: below Python 3.13 only'"
  # The shipped detector once, on CPU, as the AI server runs it (its label map): a person in
  # ultralytics' own bus.jpg. Proves this Python's torch/torchvision/ultralytics work together.
  check "vision: the shipped detector finds a person in bus.jpg" "
import importlib.util, pathlib, cv2
from ai_server.vision.detector import YoloDetector, shipped_checkpoint
from shared.config import AIServerSettings, load
assets = pathlib.Path(next(iter(importlib.util.find_spec('ultralytics').submodule_search_locations))) / 'assets'
bus = cv2.imread(str(assets / 'bus.jpg'))
assert bus is not None, assets
detector = YoloDetector(shipped_checkpoint(), device='cpu', imgsz=640, labels=load(AIServerSettings).vision_labels)
labels = [box.label for box in detector.detect_batch([bus])[0]]
assert 'person' in labels, labels
print('check-install: bus.jpg:', ', '.join(sorted(labels)), 'in %.1f s with the model load' % detector.load_s)"
fi
# Headless OpenCV must stay the only cv2 distribution whatever the extras (one module, two owners).
check "no opencv-python next to opencv-python-headless" "
import importlib.metadata as md
names = {d.metadata['Name'].lower() for d in md.distributions()}
assert not {'opencv-python', 'opencv-python-headless'} <= names, 'both OpenCV distributions own cv2'"

if [ $# -gt 0 ]; then
  say "pytest $*"
  cd "$ROOT"
  # -p no:cacheprovider: the tree may be shared; the tests import the tree's code (cwd first)
  "$V/python" -m pytest -q -p no:cacheprovider "$@"
fi
