"""Each deployable's declared dependencies stay within what its machine should carry."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(reqs: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def _install_set(*extras: str) -> set[str]:
    names = _names(PROJECT["dependencies"])
    for e in extras:
        names |= _names(PROJECT["optional-dependencies"][e])
    return names


HEAVY_AI = {"torch", "torchvision", "faster-whisper", "ctranslate2", "ultralytics", "llama-cpp-python",
            "piper-tts", "onnxruntime"}


def test_device_agent_is_light() -> None:
    got = _install_set("device", "camera")
    assert not got & (HEAVY_AI | {"grpcio-tools", "grpcio"}), got & (HEAVY_AI | {"grpcio-tools"})


def test_hub_pulls_no_torch_or_models() -> None:
    got = _install_set("hub")
    assert not got & (HEAVY_AI | {"grpcio-tools"}), got & HEAVY_AI


def test_ai_server_has_its_models_and_no_build_tools() -> None:
    got = _install_set("ai")
    assert {"faster-whisper", "grpcio", "piper-tts"} <= got
    assert "grpcio-tools" not in got and "torch" not in got


def test_the_real_resolution_of_device_extra_has_no_torch() -> None:
    """Check the installed metadata too: transitive requirements of the device extra."""
    from importlib import metadata

    seen: set[str] = set()
    todo = sorted(_install_set("device"))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [r for r in _names([x for x in reqs if "extra ==" not in x]) if r not in seen]
    assert not seen & HEAVY_AI, seen & HEAVY_AI
