from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


def _naila(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "naila", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_help_lists_subcommands() -> None:
    out = _naila("--help")
    assert out.returncode == 0
    for sub in ("hub", "ai-server", "device", "demo"):
        assert sub in out.stdout


@pytest.mark.parametrize("sub", ["hub", "ai-server", "device", "demo"])
def test_each_subcommand_has_help(sub: str) -> None:
    out = _naila(sub, "--help")
    assert out.returncode == 0, out.stderr
    assert "usage" in out.stdout.lower()


def test_bad_config_stops_startup_with_one_line() -> None:
    import os

    env = dict(os.environ, HUB_PORT="not-a-port")
    out = _naila("hub", env=env)
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.splitlines() if "HUB_PORT" in ln]
    assert lines, out.stderr
