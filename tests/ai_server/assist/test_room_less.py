"""A device-control sentence that names no room ("turn off the lights"): the asking device's room is
the area (Home Assistant's satellite area), and a device without a room gets a clear answer, never
the LLM. Voice turns through the assist router's seam (recognise, then act), with the real
recognizer and Home Assistant's real handler over HTTP against tests/ai_server/assist/ha_server.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ai_server.assist import home_assistant
from ai_server.assist.core import AssistServices, IntentRegistry
from ai_server.assist.intents import Recognizer
from ai_server.assist.router import NO_HOME_ASSISTANT, AssistRouter, install_defaults
from ai_server.metrics import Metrics
from ai_server.pipeline import Turn
from shared.config import AIServerSettings
from tests.ai_server.assist.ha_server import TOKEN, FakeHomeAssistant, household, serve

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 11, 3, 18, 0, tzinfo=dt.UTC)


async def said(router: AssistRouter, text: str, room: str = "") -> str | None:
    """What a voice turn from a device in ``room`` ("" = none in its status) hears; None: the LLM answers."""
    action = router.route(Turn(1, "pi-1", "c", 0.0, room=room, transcript=text))
    return None if action is None else await action()


@pytest.fixture
async def home(tmp_path: Path) -> AsyncIterator[tuple[AssistRouter, FakeHomeAssistant]]:
    registry = IntentRegistry()
    install_defaults(registry)
    async with serve(household()) as fake:
        services = AssistServices(
            registry, lambda: NOW, str(tmp_path), AIServerSettings(ha_url=fake.url, ha_token=TOKEN)
        )
        ha = home_assistant.install(services)
        assert ha is not None and await ha.catalog.refresh()
        yield AssistRouter(registry, Recognizer("en"), Metrics(), lambda: NOW), fake
        await ha.close()


async def test_the_lights_of_the_asking_devices_room(home: tuple[AssistRouter, FakeHomeAssistant]) -> None:
    router, fake = home
    assert await said(router, "Turn off the lights.", room="living_room") == "Turned off the Living Room Lamp."
    assert fake.state("light.living_room_lamp") == "off"
    assert [c[2]["entity_id"] for c in fake.calls] == [["light.living_room_lamp"]]


async def test_a_device_without_a_room_is_asked_which_room(home: tuple[AssistRouter, FakeHomeAssistant]) -> None:
    router, fake = home
    reply = await said(router, "turn off the lights")
    assert reply is not None and reply.startswith("Which room do you mean?")
    assert fake.calls == []
    assert router.metrics.counters.get("intent:HassTurnOff") == 1


async def test_without_home_assistant_it_says_so_with_or_without_a_room() -> None:
    registry = IntentRegistry()
    install_defaults(registry)
    router = AssistRouter(registry, Recognizer("en"), Metrics(), lambda: NOW)
    assert await said(router, "turn on the lights", room="kitchen") == NO_HOME_ASSISTANT
    assert await said(router, "turn on the lights") == NO_HOME_ASSISTANT
