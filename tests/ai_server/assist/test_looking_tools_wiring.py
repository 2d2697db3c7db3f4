"""The LLM's camera and history tools are wired by the composition root: with a control plane (and so
the store's history) the history tool is offered, and without vision the camera tool is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from ai_server.app import start_server
from ai_server.assist.tools import CAMERA_INTENT, HISTORY_INTENT
from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS
from shared.config import AIServerSettings, MediaSettings, MqttSettings, load
from tests.conftest import Broker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_history_tool_is_offered_with_the_store_and_camera_tool_only_with_vision(
    mosquitto: Broker, tmp_path: Path
) -> None:
    settings = load(AIServerSettings, vision_enabled=False, ai_media_dir=str(tmp_path), llm_tools=True)
    mqtt = load(MqttSettings, mqtt_host=mosquitto.host, mqtt_port=mosquitto.port)
    ai = await start_server(settings, stt=FakeSTT(), llm=FakeLLM(), tts=FakeTTS(), host="127.0.0.1", port=0,
                            metrics_port=0, warm=False, mqtt=mqtt, media=load(MediaSettings))
    try:
        intents = ai.assist.registry.intents
        assert HISTORY_INTENT in intents
        assert CAMERA_INTENT not in intents  # no vision: no camera view to offer the model
    finally:
        await ai.stop(grace=0)
