"""Python 3.13: rapidocr-onnxruntime has no release for it (scripts/vision-no-deps.txt leaves it out
there), and the AI server still starts with vision, without OCR, and says so."""

from __future__ import annotations

import pytest

from ai_server import assembly
from ai_server.app import start_server
from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS
from shared.config import AIServerSettings, load
from tests.ai_server.vision.conftest import ShapeDetector

pytestmark = pytest.mark.integration


async def test_without_rapidocr_the_ai_server_starts_with_vision_and_no_ocr(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(assembly, "rapidocr_installed", lambda: False)
    settings = load(AIServerSettings, ai_server_host="127.0.0.1", ai_mqtt=False, vision_enabled=True)
    server = await start_server(
        settings, stt=FakeSTT(), llm=FakeLLM(), tts=FakeTTS(), port=0, warm=False, detector=ShapeDetector()
    )
    try:
        assert any(
            r.getMessage().startswith("vision: no OCR, rapidocr-onnxruntime is not installed") for r in caplog.records
        )
    finally:
        await server.stop(grace=0)
