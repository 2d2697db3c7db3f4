"""scripts/check-install.sh's contract with CI: a missing Python is a clear, distinct exit (3) that
.ci/run reports as skipped; bad usage is exit 2. The installs themselves run in .ci/run (about a
minute each, with network), not in the test suite."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts/check-install.sh"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30, check=False)


def test_usage_without_arguments_is_exit_2() -> None:
    r = run()
    assert r.returncode == 2
    assert r.stderr.startswith("usage:")


def test_a_missing_python_is_one_clear_line_and_exit_3(tmp_path: Path) -> None:
    r = run(str(tmp_path / "python3.99"), "hub")
    assert r.returncode == 3
    missing = tmp_path / "python3.99"
    assert r.stderr.strip() == f"check-install: {missing} not found (install it, e.g. with pyenv or apt)"


def test_ci_checks_every_supported_python() -> None:
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert spec == ">=3.11,<3.14"
    ci = (ROOT / ".ci/run").read_text()
    assert "for version in 3.11 3.12 3.13; do" in ci  # 3.12: Ubuntu 24.04, hub, device and ai extras
    assert "scripts/check-install.sh" in ci and "SKIPPED" in ci


def ci_extras() -> dict[str, set[str]]:
    """The extras .ci/run's fresh-install check gives each Python (3.11 is the loop's last branch)."""
    ci = (ROOT / ".ci/run").read_text()
    found: dict[str, set[str]] = {}
    for branch, version in [('"$version" = 3.12', "3.12"), ('"$version" = 3.13', "3.13"), ("  else\n", "3.11")]:
        start = ci.index(branch)
        line = next(ln for ln in ci[start:].splitlines() if 'scripts/check-install.sh "$py"' in ln)
        found[version] = set(line.split('"$py" ')[1].split()[0].split(","))
    return found


def test_ci_installs_the_ai_server_on_every_python_and_vision_on_the_oldest_and_newest() -> None:
    extras = ci_extras()
    assert all({"hub", "device", "ai"} <= found for found in extras.values()), extras
    assert "vision" in extras["3.11"] and "vision" in extras["3.13"], extras
    assert "test" in extras["3.13"], extras  # the unit tests under the newest Python


def test_the_vision_check_runs_the_shipped_detector_and_caches_torch() -> None:
    script = SCRIPT.read_text()
    assert "YoloDetector(shipped_checkpoint()" in script and "'person' in labels" in script
    assert '--find-links "$CACHE/wheels" -d "$CACHE/wheels" $pins' in script


def test_ocr_is_left_out_only_on_the_python_it_has_no_release_for() -> None:
    from packaging.requirements import Requirement

    lines = (ROOT / "scripts/vision-no-deps.txt").read_text().splitlines()
    reqs = [Requirement(ln) for ln in lines if ln.strip() and not ln.startswith("#")]
    for version, expected in [("3.11", 3), ("3.12", 3), ("3.13", 2)]:
        wanted = [r.name for r in reqs if r.marker is None or r.marker.evaluate({"python_version": version})]
        assert len(wanted) == expected, (version, wanted)
        assert ("rapidocr-onnxruntime" in wanted) == (version != "3.13")
