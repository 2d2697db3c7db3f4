"""The hub's HTTP surface on a real socket: /connect refusals (400/401), /health, /turns, /metrics."""

from __future__ import annotations

import json

import aiohttp
import pytest

from shared.config import HubSettings, WebRTCSettings, load

from .conftest import METRICS_TOKEN, FakeAI, HubFactory, connect_device, get_json, get_text, post_connect

pytestmark = pytest.mark.integration

LOCKED_TOKEN = "pi-locked-token-0123456789abcdef"  # 24+ characters (HUB_DEVICE_TOKENS' minimum)
AUDIO_NO_ICE = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


async def test_every_bad_connect_is_refused_and_nothing_else_is_disturbed(
    make_hub: HubFactory, fake_ai: FakeAI
) -> None:
    hub = await make_hub(hub_max_body_bytes=4096, hub_device_tokens={"pi-locked": LOCKED_TOKEN})
    live = await connect_device(hub.url, "pi-live")
    session = hub.sessions["pi-live"]
    try:
        cases: list[tuple[object, bytes | None, str]] = [
            (None, b"{not json", "bad_json"),
            (None, b"\xff\xfe\x00", "bad_json"),
            (["device_id", "sdp"], None, "bad_json"),
            ({"sdp": AUDIO_NO_ICE}, None, "missing_field"),
            ({"device_id": "pi-live"}, None, "missing_field"),
            ({"device_id": 12, "sdp": AUDIO_NO_ICE}, None, "bad_type"),
            ({"device_id": "pi-live", "sdp": ["v=0"]}, None, "bad_type"),
            ({"device_id": "../../etc", "sdp": AUDIO_NO_ICE}, None, "bad_device_id"),
            ({"device_id": "x" * 65, "sdp": AUDIO_NO_ICE}, None, "bad_device_id"),
            ({"device_id": "pi-live", "sdp": "hello"}, None, "bad_sdp"),
            ({"device_id": "pi-live", "sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"}, None, "bad_sdp"),
            # Parses, has audio, but aiortc cannot apply it (no ICE credentials): still a 400, and
            # the live session with the same device_id is NOT replaced.
            ({"device_id": "pi-live", "sdp": AUDIO_NO_ICE}, None, "bad_sdp"),
            (None, json.dumps({"device_id": "pi-x", "sdp": "v=0\r\n" + "a=x\r\n" * 2000}).encode(), "too_large"),
        ]
        for payload, raw, reason in cases:
            before = hub.metrics.bad_requests[reason]
            status, body = await post_connect(hub.url, payload, raw=raw)
            assert status == 400, (payload, raw, body)
            assert set(body) == {"error"} and isinstance(body["error"], str) and "\n" not in body["error"]
            assert hub.metrics.bad_requests[reason] == before + 1, reason
        # A chunked body (no Content-Length) over the limit is cut off too.
        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(10):
                yield b" " * 1000

        async with aiohttp.ClientSession() as http, http.post(f"{hub.url}/connect", data=chunks()) as resp:
            assert resp.status == 400 and "error" in await resp.json()
        assert hub.metrics.bad_requests["too_large"] == 2
        # Tokens: missing or wrong -> 401 (counted); right -> a session.
        for token in (None, "wrong"):
            status, body = await post_connect(hub.url, {"device_id": "pi-locked", "sdp": AUDIO_NO_ICE}, token)
            assert status == 401 and set(body) == {"error"}
        assert hub.metrics.unauthorized == 2
        locked = await connect_device(hub.url, "pi-locked", token=LOCKED_TOKEN)
        await locked.close()
        # The live session was never touched.
        assert hub.sessions["pi-live"] is session and not session.closed
        assert live.pc.connectionState == "connected"
        text = await get_text(f"{hub.url}/metrics")
        assert 'naila_hub_bad_requests_total{reason="bad_sdp"} 3.0' in text
        assert "naila_hub_unauthorized_requests_total 2.0" in text
    finally:
        await live.close()


async def test_health_is_degraded_503_while_the_ai_server_is_unreachable(loopback_ice: None) -> None:
    from hub.server import run_hub
    from tests.conftest import free_port

    settings = load(
        HubSettings, hub_host="127.0.0.1", hub_ai_server=f"127.0.0.1:{free_port()}", hub_metrics_token=METRICS_TOKEN
    )
    hub = await run_hub(settings, WebRTCSettings(webrtc_ice_servers=[]), port=0)
    try:
        assert hub.port > 0
        status, health = await get_json(f"{hub.url}/health", headers={})
        assert status == 503 and health["status"] == "degraded" and health["grpc_connected"] is False
        # Transcripts are not for anonymous readers (issue 18, H2): 401 without the token.
        status, body = await get_json(f"{hub.url}/turns", headers={})
        assert status == 401 and set(body) == {"error"}
        status, turns = await get_json(f"{hub.url}/turns")
        assert status == 200 and turns == []
        text = await get_text(f"{hub.url}/metrics")
        assert "naila_hub_grpc_connected 0.0" in text
    finally:
        await hub.stop()


async def test_two_hubs_in_one_process_have_separate_metrics(make_hub: HubFactory) -> None:
    a = await make_hub()
    b = await make_hub()
    await post_connect(a.url, None, raw=b"nope")
    assert a.metrics.bad_requests["bad_json"] == 1 and b.metrics.bad_requests["bad_json"] == 0
    assert a.port != b.port
