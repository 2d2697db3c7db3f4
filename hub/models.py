"""The hub's turn-taking model files: Smart Turn v3.2 (end of turn) and Silero VAD, both ONNX.

Each ships inside a registry wheel whose package we do not want installed: pipecat-ai would add
~500 MB of dependencies for one 8.7 MB file, and silero-vad's package imports torch (the hub's
install set has none). ``scripts/setup.sh`` runs ``python -m hub.models`` once, which downloads each
wheel with ``pip download --no-deps``, takes the one file out and checks its sha256 against the pin
below, into HUB_MODEL_DIR (default ~/.cache/naila/models, where the embedded LLMs are joined too).

At start the hub checks the file again (8.7 MB hash in ~20 ms) and refuses to start with a one-line
error naming the fix when it is missing or different: a model setting that silently did nothing
would only show up later as slower or clipped turns.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


class ModelMissing(ValueError):
    """A model file is not in the model folder (or is not the pinned file); one line, with the fix."""


@dataclass(frozen=True)
class WheelModel:
    name: str  # the file's name in the model folder
    wheel: str  # pip requirement of the wheel that carries it
    member: str  # its path inside the wheel
    sha256: str
    setting: str  # the setting that selects it (named in the error)


SMART_TURN = WheelModel(
    "smart-turn-v3.2-cpu.onnx",
    "pipecat-ai==1.14.0",
    "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
    "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
    "AUDIO_END_OF_TURN=smart_turn",
)
SILERO_VAD = WheelModel(
    "silero_vad.onnx",
    "silero-vad==6.2.3",
    "silero_vad/data/silero_vad.onnx",
    "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
    "AUDIO_VAD_MODE=silero",
)
MODELS = (SMART_TURN, SILERO_VAD)


def default_model_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "naila" / "models"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_path(model: WheelModel, folder: str | Path = "") -> Path:
    """The verified file, or :class:`ModelMissing` saying how to get it."""
    path = Path(folder or default_model_dir()) / model.name
    fix = f"run scripts/setup.sh (or python -m hub.models) or choose another engine than {model.setting}"
    if not path.is_file():
        raise ModelMissing(f"{model.setting} needs {path}, which is missing: {fix}")
    if _sha256(path) != model.sha256:
        raise ModelMissing(f"{path} is not the pinned {model.name} (sha256 differs): {fix}")
    return path


def install(model: WheelModel, folder: Path) -> Path:
    """Take ``model`` out of its wheel into ``folder`` (no-op when the verified file is there)."""
    target = folder / model.name
    if target.is_file() and _sha256(target) == model.sha256:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, model.wheel], check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(model.member)
    if hashlib.sha256(data).hexdigest() != model.sha256:
        raise ModelMissing(f"{model.member} in {model.wheel} does not match its pinned sha256")
    part = target.with_suffix(".part")
    part.write_bytes(data)
    part.replace(target)  # atomic: a hub starting meanwhile sees the old state or the whole file
    return target


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else default_model_dir()
    for model in MODELS:
        print(f"hub.models: {install(model, folder)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
