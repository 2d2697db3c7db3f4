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
    assert "for version in 3.11 3.12 3.13; do" in ci  # 3.12: Ubuntu 24.04, hub and device extras
    assert "scripts/check-install.sh" in ci and "SKIPPED" in ci
