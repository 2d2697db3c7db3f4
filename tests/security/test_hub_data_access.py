"""H2 and M9 over real HTTP against a real hub: who may read /turns, /health?detail=1 and /metrics;
logout revocation; the login limiter behind a trusted proxy (and not fooled without one); the
cookie's Secure flag from the browser's real scheme; a chunked, oversized form text part.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from hub.server import Hub, run_hub
from hub.turns import TurnRecord
from hub.web.auth import COOKIE_NAME
from shared.config import HubSettings, WebRTCSettings, load
from shared.mqtt.limits import MAX_TEXT_LEN
from tests.web.conftest import WEB_TOKEN, client, login

pytestmark = pytest.mark.integration

METRICS_TOKEN = "scrape-me-0123456789-abcdef"
DATA_PATHS = ("/turns", "/health?detail=1", "/metrics")
SPEC_FIELDS = {"status", "uptime_secs", "active_devices", "grpc_connected", "frames_forwarded", "vad_onsets",
               "vad_ends", "tts_frames_routed", "grpc_reconnects"}
SECRET = "the safe code is 4711"

Maker = Callable[..., Awaitable[Hub]]


@pytest.fixture
async def make_hub(loopback_ice: None) -> AsyncIterator[Maker]:
    hubs: list[Hub] = []

    async def make(**overrides: Any) -> Hub:
        settings = load(
            HubSettings,
            **{
                "hub_host": "127.0.0.1",
                "hub_ai_server": "127.0.0.1:9",  # nothing there: /health is 503 "degraded", which is fine here
                "hub_mqtt": False,
                "hub_web_token": WEB_TOKEN,
                "hub_metrics_token": METRICS_TOKEN,
                **overrides,
            },
        )
        hub = await run_hub(settings, WebRTCSettings(webrtc_ice_servers=[]), port=0)
        hubs.append(hub)
        hub.turns.add(TurnRecord("pi-kitchen", "c1", transcript=SECRET, reply_text="noted"))
        return hub

    yield make
    for hub in hubs:
        await hub.stop()


async def get(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with http.get(url, headers=headers or {}) as r:
        return r.status, await r.text()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def assert_refused(http: aiohttp.ClientSession, base: str, headers: dict[str, str] | None = None) -> list[str]:
    errors = []
    for path in DATA_PATHS:
        async with http.get(f"{base}{path}", headers=headers or {}) as r:
            body = await r.json(content_type=None)
            assert r.status == 401, (path, r.status)
            assert set(body) == {"error"} and "\n" not in body["error"], body
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            errors.append(body["error"])
    return errors


async def test_data_endpoints_answer_only_to_the_login_or_the_metrics_token(make_hub: Maker) -> None:
    hub = await make_hub()
    async with client() as http:
        await assert_refused(http, hub.url)
        for wrong in (bearer("wrong-token-wrong-token"), bearer(""), {"Cookie": f"{COOKIE_NAME}=v1.9999999999.00.AA"},
                      {"Authorization": METRICS_TOKEN}):  # the token without "Bearer "
            await assert_refused(http, hub.url, wrong)
        # Plain /health stays public: the spec's nine fields and nothing else.
        status, text = await get(http, f"{hub.url}/health")
        assert status == 503 and set(json.loads(text)) == SPEC_FIELDS
        assert hub.metrics.web_refused["data_unauthorized"] == 3 * 5

        for headers in (bearer(WEB_TOKEN), bearer(METRICS_TOKEN)):
            status, text = await get(http, f"{hub.url}/turns", headers)
            assert status == 200 and SECRET in text
            status, text = await get(http, f"{hub.url}/health?detail=1", headers)
            assert status == 503 and '"devices"' in text  # degraded (no AI server), but the detail is there
            status, text = await get(http, f"{hub.url}/metrics", headers)
            assert status == 200 and 'naila_hub_web_refused_total{reason="data_unauthorized"} 15.0' in text
        # The metrics token opens the data endpoints only, never the web app.
        async with http.get(f"{hub.url}/api/state", headers=bearer(METRICS_TOKEN)) as r:
            assert r.status == 401

        await login(http, hub.url)  # the cookie is enough
        status, text = await get(http, f"{hub.url}/turns")
        assert status == 200 and SECRET in text
        assert (await get(http, f"{hub.url}/metrics"))[0] == 200


async def test_with_no_token_configured_the_data_endpoints_are_simply_off(make_hub: Maker) -> None:
    hub = await make_hub(hub_web_token=None, hub_metrics_token=None)
    async with client() as http:
        errors = await assert_refused(http, hub.url)
        assert all("neither HUB_WEB_TOKEN nor HUB_METRICS_TOKEN is set" in e for e in errors), errors
        await assert_refused(http, hub.url, bearer(""))
        assert (await get(http, f"{hub.url}/health"))[0] == 503


async def test_a_metrics_token_alone_opens_them_without_the_web_app(make_hub: Maker) -> None:
    hub = await make_hub(hub_web_token=None)
    async with client() as http:
        errors = await assert_refused(http, hub.url, bearer(WEB_TOKEN))
        assert "HUB_METRICS_TOKEN" in errors[0]
        for path in DATA_PATHS:
            assert (await get(http, f"{hub.url}{path}", bearer(METRICS_TOKEN)))[0] in (200, 503), path


async def test_logout_revokes_a_copied_cookie_on_the_server(make_hub: Maker) -> None:
    hub = await make_hub()
    async with client() as http:
        r = await login(http, hub.url)
        copied = {"Cookie": f"{COOKIE_NAME}={r.cookies[COOKIE_NAME].value}"}
        async with client() as thief, thief.get(f"{hub.url}/api/events", headers=copied) as stream:
            assert stream.status == 200
            assert (await get(thief, f"{hub.url}/turns", copied))[0] == 200
            assert (await get(thief, f"{hub.url}/api/state", copied))[0] == 200
            async with http.post(f"{hub.url}/logout", allow_redirects=False) as out:
                assert out.status == 303
            assert (await get(thief, f"{hub.url}/turns", copied))[0] == 401, "a stolen copy dies with the logout"
            assert (await get(thief, f"{hub.url}/api/state", copied))[0] == 401
            # The event stream it had open ends at its next event instead of carrying on.
            hub.turns.add(TurnRecord("pi-kitchen", "c2", transcript="after the logout", reply_text="x"))
            rest = await asyncio.wait_for(stream.content.read(), 5)
            assert b"after the logout" not in rest and b"snapshot" in rest
        r = await login(http, hub.url)  # logging in again works: only that one cookie was revoked
        assert (await get(http, f"{hub.url}/api/state"))[0] == 200


async def _try_login(base: str, token: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
    async with client() as http:
        return await _post_login(http, base, token, headers)


async def _post_login(
    http: aiohttp.ClientSession, base: str, token: str, headers: dict[str, str]
) -> aiohttp.ClientResponse:
    async with http.post(f"{base}/login", data={"token": token}, headers=headers, allow_redirects=False) as r:
        return r


async def test_behind_a_trusted_proxy_the_login_limit_is_per_forwarded_client(make_hub: Maker) -> None:
    hub = await make_hub(hub_trusted_proxies="127.0.0.1")

    def via_proxy(client_ip: str) -> dict[str, str]:
        # What the proxy sends: the client's own (forged) entries, then the address it saw.
        return {"X-Forwarded-For": f"10.9.9.9, {client_ip}", "X-Forwarded-Proto": "https"}

    attacker = [(await _try_login(hub.url, f"guess-{i}-guess-guess", via_proxy("192.0.2.66"))).status
                for i in range(7)]
    assert attacker[:5] == [303] * 5 and attacker[5:] == [429, 429], attacker
    # The owner behind the same proxy is not locked out by that.
    r = await _try_login(hub.url, WEB_TOKEN, via_proxy("192.0.2.10"))
    assert r.status == 303 and r.headers["Location"] == "/"
    morsel = r.cookies[COOKIE_NAME]
    assert morsel["secure"], "the browser spoke HTTPS to the proxy: the cookie is Secure"
    # Nor is an IPv6 attacker helped by rotating through its /64.
    v6 = [(await _try_login(hub.url, "nope-nope-nope-nope", via_proxy(f"2001:db8:0:1::{i:x}"))).status
          for i in range(1, 8)]
    assert v6[-1] == 429, v6
    assert hub.metrics.web_refused["login_limited"] >= 3


async def test_forwarded_headers_from_an_untrusted_peer_are_ignored(make_hub: Maker) -> None:
    hub = await make_hub()  # no HUB_TRUSTED_PROXIES: the TCP peer is the client
    statuses = [
        (await _try_login(hub.url, f"guess-{i}-guess-guess", {"X-Forwarded-For": f"198.51.100.{i}"})).status
        for i in range(6)
    ]
    assert statuses[-1] == 429, f"a made-up X-Forwarded-For must not buy fresh tries: {statuses}"
    other = await make_hub()
    r = await _try_login(other.url, WEB_TOKEN, {"X-Forwarded-Proto": "https"})
    assert r.status == 303 and not r.cookies[COOKIE_NAME]["secure"], "plain HTTP: a claimed https is not believed"


async def test_the_global_login_limit_stops_many_addresses_but_not_a_known_owner(make_hub: Maker) -> None:
    hub = await make_hub(hub_trusted_proxies="127.0.0.1")
    owner = {"X-Forwarded-For": "192.0.2.10"}
    assert (await _try_login(hub.url, WEB_TOKEN, owner)).status == 303
    statuses = [
        (await _try_login(hub.url, "guess-guess-guess-guess", {"X-Forwarded-For": f"203.0.113.{i}"})).status
        for i in range(40)
    ]
    assert statuses[:15] == [303] * 15 and statuses[-5:] == [429] * 5, statuses
    assert hub.metrics.web_refused["login_limited_global"] >= 5
    r = await _try_login(hub.url, WEB_TOKEN, owner)
    assert r.status == 303 and r.headers["Location"] == "/", "an address that logged in before still can"


async def test_a_chunked_oversized_text_part_is_refused_without_reading_it_all(make_hub: Maker) -> None:
    hub = await make_hub()
    boundary = "naila-test-boundary"
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="question"\r\n\r\n').encode()
        for _ in range(4096):  # 64 MiB if the hub kept reading
            sent += 1
            yield b"a" * 16384
        yield f"\r\n--{boundary}--\r\n".encode()

    async with client() as http:
        await login(http, hub.url)
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        async with http.post(f"{hub.url}/api/upload", data=body(), headers=headers) as r:
            answered_after = sent
            assert r.status == 400
            assert (await r.json())["error"] == f"question over {MAX_TEXT_LEN * 4} bytes"
        # The answer came while the client was still sending (what it had sent by then sits mostly in
        # socket buffers): the hub stopped at the limit instead of reading the 64 MiB first.
        assert answered_after < 2048, f"the hub read {answered_after} chunks of 16 KiB before refusing"
        assert (await get(http, f"{hub.url}/api/me"))[0] == 200, "and it keeps serving"
