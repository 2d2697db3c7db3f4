"""``naila hub`` entry point: --help, one-line config errors (exit 2), overrides, a real start/stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hub.app import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.unit
def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--ai-server" in out and "--port" in out


@pytest.mark.unit
@pytest.mark.parametrize(
    ("argv", "env", "names"),
    [
        (["--port", "70000"], {}, "HUB_PORT"),
        ([], {"HUB_DEVICE_TOKENS": "{not json"}, "HUB_DEVICE_TOKENS"),
        ([], {"HUB_VAD_AGGRESSIVENESS": "9"}, "HUB_VAD_AGGRESSIVENESS"),
        ([], {"AUDIO_VAD_MODE": "rnnoise"}, "AUDIO_VAD_MODE"),
        # A model file setup did not fetch: one line naming the setting and the fix.
        ([], {"AUDIO_VAD_MODE": "silero", "HUB_MODEL_DIR": "/nonexistent"}, "AUDIO_VAD_MODE=silero"),
        ([], {"AUDIO_END_OF_TURN": "smart_turn", "HUB_MODEL_DIR": "/nonexistent"}, "AUDIO_END_OF_TURN=smart_turn"),
    ],
)
def test_config_errors_print_one_line_and_return_2(
    argv: list[str], env: dict[str, str], names: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and names in err


@pytest.mark.integration
def test_naila_hub_starts_logs_serves_health_and_stops_on_sigterm(tmp_path: Path) -> None:
    from tests.conftest import free_port

    port = free_port()
    env = {**os.environ, "HUB_HOST": "127.0.0.1", "HUB_AI_SERVER": f"127.0.0.1:{free_port()}"}
    log = tmp_path / "hub.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "naila", "hub", "--port", str(port)], cwd=ROOT, env=env,
                                stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline and status is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                status = 200
            except urllib.error.HTTPError as e:
                status = e.code
            except OSError:
                time.sleep(0.1)
        assert status == 503  # up, but no AI server there
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "starting hub" in text and f"listening on http://127.0.0.1:{port}" in text
