"""/health keeps the spec's nine fields; ?detail=1 (for the web login or HUB_METRICS_TOKEN only) adds the
connected devices and their rooms (and vision)."""

from __future__ import annotations

import pytest

from tests.hub.conftest import FakeAI, HubFactory, connect_device, get_json

pytestmark = pytest.mark.integration

SPEC_FIELDS = {"status", "uptime_secs", "active_devices", "grpc_connected", "frames_forwarded", "vad_onsets",
               "vad_ends", "tts_frames_routed", "grpc_reconnects"}


async def test_health_detail_lists_devices_with_their_rooms(make_hub: HubFactory, fake_ai: FakeAI) -> None:
    hub = await make_hub()
    hub.rooms.set("pi-kitchen", "kitchen")
    dev = await connect_device(hub.url, "pi-kitchen")
    try:
        _, plain = await get_json(f"{hub.url}/health", headers={})
        assert set(plain) == SPEC_FIELDS, "plain /health is public and has the spec's nine fields"
        status, denied = await get_json(f"{hub.url}/health?detail=1", headers={})
        assert status == 401 and set(denied) == {"error"}, "no devices, rooms or levels without the token"
        _, detail = await get_json(f"{hub.url}/health?detail=1")
        assert set(detail) == SPEC_FIELDS | {"devices", "vision", "ai_servers"}
        [server] = detail["ai_servers"]  # HUB_AI_SERVER's one address: its stream, status, devices on it
        assert server["connected"] is True and server["status"] in ("", "ok")  # "" until its first heartbeat
        [entry] = detail["devices"]
        assert entry["device_id"] == "pi-kitchen" and entry["room"] == "kitchen" and entry["connected_s"] >= 0
    finally:
        await dev.close()
