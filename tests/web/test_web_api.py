"""Web app security and API over real HTTP: nothing without a login, the login cookie, browser
device tokens on POST /connect, security headers, the event stream; plus the auth primitives."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from hub.turns import TurnRecord
from hub.web.auth import COOKIE_NAME, DeviceTokenTable, WebAuth
from hub.web.upload import safe_filename, sniff_image
from tests.web.conftest import WEB_TOKEN, HubMaker, client, login

pytestmark = pytest.mark.integration

PROTECTED_GET = ["/api/me", "/api/events", "/api/events?device_id=web-abc", "/api/state", "/api/alerts"]
PROTECTED_POST = ["/api/upload", "/api/device-token"]


# ----- primitives -----


def test_cookie_round_trip_tamper_and_expiry() -> None:
    now = [1000.0]
    auth = WebAuth("a" * 20, session_s=60, clock=lambda: now[0])
    cookie = auth.mint_cookie()
    assert auth.check_cookie(cookie)
    body, _, mac = cookie.rpartition(".")
    parts = body.split(".")
    forged = f"{parts[0]}.{int(parts[1]) + 3600}.{parts[2]}.{mac}"  # extend the expiry
    assert not auth.check_cookie(forged)
    assert not auth.check_cookie(cookie[:-2] + ("A" if cookie[-2] != "A" else "B") + cookie[-1])
    assert not WebAuth("b" * 20, session_s=60, clock=lambda: now[0]).check_cookie(cookie), "another web token"
    assert not auth.check_cookie("") and not auth.check_cookie(None) and not auth.check_cookie("x" * 500)
    now[0] += 61
    assert not auth.check_cookie(cookie), "expired cookie accepted"


def test_device_tokens_are_per_device_and_per_web_token() -> None:
    now = [1000.0]
    a = WebAuth("a" * 20, 60, clock=lambda: now[0])
    b = WebAuth("b" * 20, 60, clock=lambda: now[0])
    token = a.device_token("web-1")
    assert a.check_device_token("web-1", token)
    assert WebAuth("a" * 20, 60, clock=lambda: now[0]).check_device_token("web-1", token), "survives a restart"
    assert not a.check_device_token("web-2", token), "a token opens its own id only"
    assert not b.check_device_token("web-1", token), "another web token revokes it"
    assert not a.check_device_token("web-1", token.split(".")[0] + ".forged")
    later = str(int(token.split(".")[0]) + 3600) + "." + token.split(".")[1]
    assert not a.check_device_token("web-1", later), "the expiry cannot be moved"
    now[0] += 61
    assert not a.check_device_token("web-1", token), "an expired token is refused"
    assert a.check_device_token("web-1", a.device_token("web-1")), "a fresh one works again"
    with pytest.raises(ValueError):
        a.device_token("pi-kitchen")  # a browser token can never be minted for a Pi device


def test_token_table_keeps_device_tokens_and_adds_browsers() -> None:
    auth = WebAuth("a" * 20, 60)
    table = DeviceTokenTable({"pi-kitchen": "k", "web-pinned": "p"}, auth)
    assert table.get("pi-kitchen") == "k"
    assert table.verify("pi-kitchen", "k") is None, "HUB_DEVICE_TOKENS entries are checked as before"
    assert table.verify("web-pinned", "p") is None, "an explicit HUB_DEVICE_TOKENS entry wins"
    assert table.verify("web-x1", auth.device_token("web-x1")) is True
    assert table.verify("web-x1", "k") is False
    assert table.verify("pi-other", "k") is None and table.get("pi-other", table.get("*")) is None
    star = DeviceTokenTable({"*": "s"}, auth)
    assert star.get("pi-other", star.get("*")) == "s"
    assert star.verify("web-x1", "s") is False, "the * token does not open browsers"


def test_image_sniffing_and_file_names() -> None:
    assert sniff_image(b"\xff\xd8\xff\xe0rest") == "jpeg"
    assert sniff_image(b"\x89PNG\r\n\x1a\nrest") == "png"
    assert sniff_image(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "webp"
    assert sniff_image(b"GIF89a") is None
    assert sniff_image(b"<svg onload=alert(1)>") is None
    assert sniff_image(b"") is None
    assert safe_filename("../../etc/passwd", "png") == "passwd.png"
    assert safe_filename("C:\\x\\holiday photo.JPG", "jpeg") == "holiday photo.jpg"
    assert safe_filename("<script>.png", "png") == "_script_.png"
    assert safe_filename(None, "webp") == "upload.webp"


# ----- over HTTP -----


async def test_nothing_is_served_without_a_login(make_web_hub: HubMaker) -> None:
    hub = await make_web_hub()
    async with client() as http:
        for path in ("/", "/dashboard"):
            async with http.get(f"{hub.url}{path}", allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == f"/login?next={path}", path
                assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        for path in PROTECTED_GET:
            async with http.get(f"{hub.url}{path}") as r:
                assert r.status == 401, path
                assert "error" in await r.json()
        for path in PROTECTED_POST:
            async with http.post(f"{hub.url}{path}", data=b"{}") as r:
                assert r.status == 401, path
        # A made-up cookie and a wrong bearer token are no better.
        bad_cookie = {"Cookie": f"{COOKIE_NAME}=v1.99999999999.00.AAAA"}
        for headers in (bad_cookie, {"Authorization": "Bearer wrong-token-wrong-token"}):
            async with http.get(f"{hub.url}/api/state", headers=headers) as r:
                assert r.status == 401
        # The login page and the static code are public; they hold no data.
        async with http.get(f"{hub.url}/login") as r:
            assert r.status == 200 and "<form" in await r.text()
        async with http.get(f"{hub.url}/static/js/dashboard.js") as r:
            assert r.status == 200 and "javascript" in r.headers["Content-Type"]
        async with http.get(f"{hub.url}/static/../routes.py") as r:
            assert r.status in (403, 404)


async def test_login_sets_a_strict_http_only_cookie(make_web_hub: HubMaker) -> None:
    hub = await make_web_hub()
    async with client() as http:
        r = await login(http, hub.url, "not-the-token-at-all")
        assert r.status == 303 and "failed=1" in r.headers["Location"]
        assert COOKIE_NAME not in r.cookies
        r = await login(http, hub.url)
        assert r.status == 303 and r.headers["Location"] == "/dashboard"
        morsel = r.cookies[COOKIE_NAME]
        assert morsel["httponly"] and morsel["samesite"] == "Strict" and morsel["path"] == "/"
        async with http.get(f"{hub.url}/api/state") as s:
            assert s.status == 200
            state = await s.json()
            assert set(state) == {"devices", "levels", "alerts", "cameras", "turns", "latency", "health"}
            assert s.headers["Cache-Control"] == "no-store"
        async with http.get(f"{hub.url}/dashboard") as s:
            assert s.status == 200 and "dashboard.js" in await s.text()
            assert "script-src 'self'" in s.headers["Content-Security-Policy"]
        async with http.post(f"{hub.url}/logout", allow_redirects=False) as s:
            assert s.status == 303
    async with client() as http, http.get(f"{hub.url}/api/me", headers={"Authorization": f"Bearer {WEB_TOKEN}"}) as r:
        assert r.status == 200, "scripts may use the web token as a bearer token"


async def test_login_is_rate_limited_and_same_origin_only(make_web_hub: HubMaker) -> None:
    hub = await make_web_hub()
    async with client() as http:
        async with http.post(
            f"{hub.url}/login",
            data={"token": WEB_TOKEN},
            headers={"Origin": "http://evil.example"},
            allow_redirects=False,
        ) as r:
            assert r.status == 403
        statuses = [(await login(http, hub.url, f"guess-{i}-guess-guess")).status for i in range(6)]
        assert statuses[:4] == [303] * 4 and statuses[-1] == 429, statuses
        r = await login(http, hub.url)
        assert r.status == 429, "the right token does not skip the limit either"


async def test_web_app_off_without_a_token(make_web_hub: HubMaker) -> None:
    hub = await make_web_hub(hub_web_token=None)
    async with client() as http:
        for path in ("/", "/dashboard", "/login"):
            async with http.get(f"{hub.url}{path}") as r:
                assert r.status == 503 and "HUB_WEB_TOKEN" in await r.text()
        async with http.get(f"{hub.url}/api/state") as r:
            assert r.status == 404
        async with http.get(f"{hub.url}/health") as r:
            assert r.status in (200, 503)  # the hub itself is unaffected


async def _offer() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def test_browser_device_tokens_open_connect_for_their_own_id_only(make_web_hub: HubMaker) -> None:
    hub = await make_web_hub()  # HUB_DEVICE_TOKENS empty: Pi devices are refused (default-deny), browsers need theirs
    pcs: list[RTCPeerConnection] = []

    async def connect(http: aiohttp.ClientSession, device_id: str, token: str | None) -> int:
        pc, sdp = await _offer()
        pcs.append(pc)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with http.post(f"{hub.url}/connect", json={"device_id": device_id, "sdp": sdp}, headers=headers) as r:
            return r.status

    try:
        async with client() as http:
            await login(http, hub.url)
            async with http.post(f"{hub.url}/api/device-token", json={"room": "office"}) as r:
                assert r.status == 200
                issued = await r.json()
            device_id, token = issued["device_id"], issued["token"]
            assert device_id.startswith("web-") and issued["room"] == "office"
            async with http.post(f"{hub.url}/api/device-token", json={"device_id": device_id}) as r:
                assert (await r.json())["token"] == token, "the same browser keeps its token"
            for body in ({"device_id": "pi-kitchen"}, {"device_id": "web-<x>"}, {"room": "a/b"}, [1]):
                async with http.post(f"{hub.url}/api/device-token", json=body) as r:
                    assert r.status == 400, body
            async with http.post(
                f"{hub.url}/api/device-token", json={}, headers={"Origin": "http://evil.example"}
            ) as r:
                assert r.status == 403

        async with client() as http:  # /connect needs no login, only the device token
            assert await connect(http, device_id, None) == 401
            assert await connect(http, device_id, "x" * 43) == 401
            assert await connect(http, "web-someone-else", token) == 401
            assert await connect(http, device_id, token) == 200
            assert await connect(http, "pi-kitchen", None) == 401, "no token table entry: refused (issue 18, H1)"
        assert device_id in hub.sessions
        assert hub.metrics.unauthorized == 4
    finally:
        for pc in pcs:
            await pc.close()


async def _read_events(resp: aiohttp.ClientResponse, want: int, within_s: float = 5.0) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    name = ""

    async def read() -> None:
        nonlocal name
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
                if len(events) >= want:
                    return

    await asyncio.wait_for(read(), within_s)
    return events


async def test_event_streams(make_web_hub: HubMaker) -> None:
    hub = await make_web_hub()
    async with client() as http:
        await login(http, hub.url)
        async with (
            http.get(f"{hub.url}/api/events") as dash,
            http.get(f"{hub.url}/api/events?device_id=web-mine") as mine,
        ):
            assert dash.headers["Content-Type"] == "text/event-stream"
            first = await _read_events(dash, 2)
            assert [e for e, _ in first] == ["hello", "snapshot"]
            assert first[0][1]["hub_instance"]
            assert [e for e, _ in await _read_events(mine, 2)] == ["hello", "device"]
            hub.turns.add(TurnRecord("web-other", "c1", transcript="not yours", reply_text="x"))
            hub.turns.add(TurnRecord("web-mine", "c2", transcript="yours", reply_text="y", timing={"stt_ms": 5}))
            got = [d for e, d in await _read_events(mine, 1) if e == "turn"]
            assert got and got[0]["transcript"] == "yours" and got[0]["timing"]["stt_ms"] == 5
            dash_turns: list[Any] = []
            while len(dash_turns) < 2:
                dash_turns += [d["transcript"] for e, d in await _read_events(dash, 1) if e == "turn"]
            assert dash_turns == ["not yours", "yours"]
