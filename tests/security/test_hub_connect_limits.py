"""H1/H6 on a real hub over real HTTP: per-address limits (429 + Retry-After, on a hand-moved clock),
the session cap and the negotiation cap shared with MQTT (503), un-bundled or many-section offers
refused before any peer exists, per-id state freed when a device leaves, the fd gauge.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from hub.signaling import Busy
from tests.hub.conftest import connect_device, post_connect

from .test_hub_connect_auth import AUDIO_NO_ICE, KITCHEN, Clock, Maker, make_hub, real_offer

pytestmark = pytest.mark.integration
__all__ = ["make_hub"]  # the fixture, shared with test_hub_connect_auth


async def post_raw(url: str, body: bytes, token: str | None = None) -> tuple[int, dict[str, str], str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.post(f"{url}/connect", data=body, headers=headers) as r:
        return r.status, dict(r.headers), await r.text()


async def test_connects_per_address_are_limited_with_retry_after(make_hub: Maker) -> None:
    clock = Clock()
    hub = await make_hub(clock, hub_connect_per_min=6, hub_allow_unauthenticated=True)
    for _ in range(6):  # one minute's worth back to back (a household reconnecting after a restart)
        status, _, _ = await post_raw(hub.url, b"{not json")
        assert status == 400
    status, headers, text = await post_raw(hub.url, b"{not json")
    assert status == 429 and headers["Retry-After"] == "10" and "error" in json.loads(text)
    assert hub.metrics.connect_refused == {"rate_limited": 1} and hub.metrics.bad_requests["bad_json"] == 6
    clock.now += 10  # one request's worth refills
    assert (await post_raw(hub.url, b"{not json"))[0] == 400
    assert (await post_raw(hub.url, b"{not json"))[0] == 429


async def test_failed_tokens_bar_the_address_before_the_token_is_even_looked_at(make_hub: Maker) -> None:
    clock = Clock()
    hub = await make_hub(clock, hub_auth_failures_per_min=3, hub_device_tokens={"kitchen": KITCHEN})
    body = json.dumps({"device_id": "kitchen", "sdp": AUDIO_NO_ICE}).encode()
    for n in range(4):  # 3 failures spend the budget, the 4th bars the address
        status, _, _ = await post_raw(hub.url, body, f"guess-{n}")
        assert status == 401
    # Now even the right token is not checked: a guesser learns nothing while barred.
    status, headers, _ = await post_raw(hub.url, body, KITCHEN)
    assert status == 429 and headers["Retry-After"] == "20"
    assert hub.metrics.unauthorized == 4 and hub.metrics.connect_refused == {"auth_failures": 1}
    clock.now += 20
    status, _, text = await post_raw(hub.url, body, KITCHEN)  # past the token (this SDP has no ICE: 400)
    assert status == 400 and "offer rejected" in text


async def test_the_session_cap_refuses_new_devices_but_not_reconnects(make_hub: Maker) -> None:
    hub = await make_hub(hub_max_sessions=2, hub_allow_unauthenticated=True)
    a = await connect_device(hub.url, "dev-a")
    b = await connect_device(hub.url, "dev-b")
    try:
        status, body = await post_connect(hub.url, {"device_id": "dev-c", "sdp": await real_offer()})
        assert status == 503 and "HUB_MAX_SESSIONS" in body["error"]
        assert hub.metrics.connect_refused == {"too_many_sessions": 1}
        a2 = await connect_device(hub.url, "dev-a")  # a known device replacing its session is always let in
        await a2.close()
        assert hub.metrics.sessions_closed["replaced"] == 1
    finally:
        await a.close()
        await b.close()


async def test_one_negotiation_cap_for_http_and_mqtt(make_hub: Maker) -> None:
    """Hub.connect_device is the one path of both; the cap refuses at once instead of queueing."""
    hub = await make_hub(hub_max_negotiations=1, hub_allow_unauthenticated=True)
    offer_a, offer_b = await real_offer(), await real_offer()
    first = asyncio.create_task(hub.connect_device("dev-a", offer_a))
    await asyncio.sleep(0)  # dev-a is now inside its negotiation (ICE gathering)
    with pytest.raises(Busy) as exc:
        await hub.connect_device("dev-b", offer_b)
    assert exc.value.status == 503 and exc.value.reason == "busy"
    assert hub.metrics.negotiations() == 1
    await first
    assert hub.metrics.negotiations() == 0 and set(hub.sessions) == {"dev-a"}


async def test_many_section_and_unbundled_offers_build_no_peer(make_hub: Maker) -> None:
    """The review's one-request fd bomb: ~450 un-bundled m=audio sections in one body."""
    hub = await make_hub(hub_allow_unauthenticated=True)
    head = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    bomb = head + "".join(f"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:{i}\r\n" for i in range(450))
    unbundled = head + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n"
    for sdp, reason in ((bomb, "too_many_media"), (unbundled, "no_bundle")):
        status, body = await post_connect(hub.url, {"device_id": "dev-x", "sdp": sdp})
        assert status == 400 and hub.metrics.bad_requests[reason] == 1, body
    assert hub.metrics.negotiations() == 0 and not hub.sessions and hub.metrics.sessions_opened == 0


async def test_a_departed_device_leaves_nothing_behind(make_hub: Maker) -> None:
    hub = await make_hub(hub_allow_unauthenticated=True)
    for n in range(3):
        dev = await connect_device(hub.url, f"made-up-{n}")
        hub.next_sequence(f"made-up-{n}")  # as the uplink does
        await hub.sessions[f"made-up-{n}"].close("test")
        await dev.close()
    assert not hub.sessions and not hub._locks and not hub._sequences


async def test_the_open_fd_gauge_is_exported(make_hub: Maker) -> None:
    token = "metrics-token-0123456789-abcdef"
    hub = await make_hub(hub_metrics_token=token)
    async with aiohttp.ClientSession() as http, http.get(
        f"{hub.url}/metrics", headers={"Authorization": f"Bearer {token}"}
    ) as r:
        text = await r.text()
    fds = [line for line in text.splitlines() if line.startswith(("naila_hub_open_fds ", "naila_hub_max_fds "))]
    assert len(fds) == 2 and all(float(line.split()[1]) > 0 for line in fds)
