"""The AI server's composition installs Home Assistant device control when HA_URL and HA_TOKEN are
set (tests/ai_server/assist/ha_server.py: a local server speaking Home Assistant's REST API)."""

from __future__ import annotations

import pytest

from ai_server.assist.core import AssistContext, IntentMatch
from tests.ai_server.assist.ha_server import TOKEN, household, serve
from tests.ai_server.conftest import ServerFactory

pytestmark = pytest.mark.integration


async def test_the_ai_server_controls_home_assistant_when_configured(make_server: ServerFactory) -> None:
    async with serve(household()) as fake:
        server = await make_server(settings={"ha_url": fake.url, "ha_token": TOKEN, "ai_mqtt": False,
                                             "vision_enabled": False})
        assist = server.assist
        assert assist is not None
        home = server.home
        assert home is not None
        assert await home.catalog.refresh()
        assert "Kitchen Ceiling" in {row[0] for row in assist.registry.slot_rows()["name"]}
        reply = await assist.registry.handle(IntentMatch("HassTurnOn", {"area": "kitchen", "domain": "light"}),
                                             AssistContext(assist.now(), device_id="pi-1", room="kitchen"))
        assert reply is not None and reply.text == "Turned on 2 lights in the Kitchen."
        assert fake.state("light.kitchen_counter") == "on"
        assert server.pipeline.metrics.counters.get("ha_command") == 1
        await server.stop(grace=0)  # closes the Home Assistant client with the server
        assert home.client._session is None
