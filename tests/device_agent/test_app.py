"""``naila device`` entry point: flags override the environment, bad config is one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device_agent.app import _parser, main, run, settings_from_args
from shared.audio import read_wav, write_wav

pytestmark = pytest.mark.unit


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICE_ID", "from-env")
    monkeypatch.setenv("DEVICE_HUB_URL", "http://env:1")
    s = settings_from_args(_parser().parse_args(["--device-id", "flag-id", "--mic-file", "in.wav", "--no-mqtt"]))
    assert (s.device_id, s.device_hub_url) == ("flag-id", "http://env:1")
    assert (s.device_audio_backend, s.device_mic_file, s.device_mqtt) == ("file", "in.wav", False)
    s = settings_from_args(_parser().parse_args(["--hub-url", "http://hub:8080"]))
    assert (s.device_id, s.device_hub_url, s.device_audio_backend) == ("from-env", "http://hub:8080", "sounddevice")


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--hub-url" in out and "--mic-file" in out


@pytest.mark.parametrize(
    ("argv", "env", "names"),
    [
        (["--device-id", "no spaces please"], {}, "DEVICE_ID"),
        ([], {"DEVICE_AEC_FILTER_MS": "5000"}, "DEVICE_AEC_FILTER_MS"),
        ([], {"DEVICE_AUDIO_BACKEND": "file"}, "DEVICE_MIC_FILE"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], env: dict[str, str],
    names: str,
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("DEVICE_MQTT", "false")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert names in err and "\n" not in err


async def test_run_with_files_for_a_moment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole agent with the file backend and no hub: starts, records the speaker, stops cleanly."""
    from tests.conftest import free_port

    mic, spk = tmp_path / "mic.wav", tmp_path / "spk.wav"
    write_wav(mic, np.zeros(1600, np.int16), 16_000)
    settings = settings_from_args(_parser().parse_args(
        ["--mic-file", str(mic), "--speaker-file", str(spk), "--no-mqtt", "--hub-url", f"http://127.0.0.1:{free_port()}"]
    ))
    monkeypatch.setenv("AUDIO_NOISE_SUPPRESSION", "false")
    assert await run(settings, duration=0.5) == 0
    data, rate = read_wav(spk)
    assert rate == 48_000 and 0.3 * rate < data.size < 0.8 * rate
