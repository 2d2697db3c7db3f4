"""DEVICE_STATE_FILE: the privacy switches kept across restarts, failing closed on a bad file."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_agent.privacy import Privacy, load_privacy, save_privacy

pytestmark = pytest.mark.unit


def test_switches_round_trip_and_no_file_means_both_on(tmp_path: Path) -> None:
    path = str(tmp_path / "state.json")
    assert load_privacy("") == Privacy() and load_privacy(path) == Privacy()
    save_privacy(path, Privacy(camera=False, microphone=True))
    assert load_privacy(path) == Privacy(camera=False, microphone=True)
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file, renamed
    save_privacy("", Privacy(camera=False))  # no file configured: nothing written, no error


def test_the_listening_mode_is_kept_and_an_old_file_without_it_leaves_it_to_the_settings(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    save_privacy(str(path), Privacy(camera=True, microphone=False, listening_mode="always"))
    assert load_privacy(str(path)) == Privacy(camera=True, microphone=False, listening_mode="always")
    path.write_text('{"camera": false, "microphone": true}')  # written before the listening_mode command
    assert load_privacy(str(path)) == Privacy(camera=False, microphone=True, listening_mode="")


@pytest.mark.parametrize("content", ["{not json", "[]", '{"camera": "off"}', '{"listening_mode": "loud"}'])
def test_an_unreadable_state_file_turns_both_off(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    assert load_privacy(str(path)) == Privacy(camera=False, microphone=False)
    assert "stay off until switched on" in caplog.text
