"""The dashboard's household endpoints with two AI servers (HUB_AI_SERVER=a,b; issue 24): two real
grpc.aio servers, each with the real Household servicer on its own store and timers, and a real hub.

* the timer list and the event timeline merge both servers (over HTTP and on the SSE stream);
* a snapshot and a cancel reach the server that holds the item;
* a timer set from the page (POST /api/timers) runs on a server, bad input is a one-line 400;
* with one server gone the other's timers are still listed; with none, 503.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from hub.web.household import merge_timers
from shared.contract import pb, pb_grpc
from tests.ai_server.assist.test_timers import T0
from tests.ai_server.test_household import Household, _alert
from tests.web.conftest import HubMaker, client, login

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


class Server:
    def __init__(self, home: Household, server: grpc.aio.Server, address: str) -> None:
        self.home, self.server, self.address = home, server, address


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[list[Server]]:
    out: list[Server] = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        home = Household(tmp_path / name)
        server = grpc.aio.server()
        pb_grpc.add_HouseholdServicer_to_server(home.service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        out.append(Server(home, server, f"127.0.0.1:{port}"))
    yield out
    for s in out:
        await s.server.stop(None)
        s.home.close()


async def _timers_event(resp: aiohttp.ClientResponse, count: int) -> dict[str, Any]:
    """The first ``timers`` event with ``count`` timers (within 10 s)."""
    async with asyncio.timeout(10):
        return await _read_timers(resp, count)


async def _read_timers(resp: aiohttp.ClientResponse, count: int) -> dict[str, Any]:
    name = ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and name == "timers":
            data: dict[str, Any] = json.loads(line[6:])
            if len(data["timers"]) == count:
                return data
    raise AssertionError("the event stream ended")


async def test_two_ai_servers_are_merged_and_each_item_reaches_its_server(
    make_web_hub: HubMaker, servers: list[Server]
) -> None:
    a, b = servers
    await a.home.say("HassStartTimer", name="pasta", minutes=8)  # kitchen-pi's server
    await b.home.say("HassStartTimer", device="hall-pi", name="tea", minutes=2)  # hall-pi's
    await _alert(b.home, device="door-cam", zone="front_door", at=T0, box=(10, 5, 20, 30))
    await _alert(a.home, device="yard-cam", zone="yard", at=T0 + dt.timedelta(minutes=1), box=(1, 2, 3, 4))
    [b_event] = b.home.store.events.query()
    hub = await make_web_hub(hub_ai_server=f"{a.address},{b.address}")
    async with client() as http:
        await login(http, hub.url)
        async with http.get(f"{hub.url}/api/timers") as r:
            listed = await r.json()
        assert r.status == 200 and listed["reachable"]
        assert [(t["label"], t["server"]) for t in listed["timers"]] == [("tea timer", 1), ("pasta timer", 0)]
        pasta = listed["timers"][1]
        async with http.get(f"{hub.url}/api/history") as r:
            events = (await r.json())["events"]
        assert [(e["camera"], e["server"]) for e in events] == [("yard-cam", 0), ("door-cam", 1)], "newest first"
        async with http.get(f"{hub.url}/api/alerts/{b_event.media_id}/boxes") as r:
            assert r.status == 200 and (await r.json())["camera"] == "door-cam"  # server a says NOT_FOUND
        async with http.get(f"{hub.url}/api/alerts/{'f' * 32}/snapshot") as r:
            assert r.status == 404

        # The live list (one WatchTimers stream per server, merged) and the cancel on server a.
        async with http.get(f"{hub.url}/api/events") as stream:
            async with http.post(f"{hub.url}/api/timers/{pasta['id']}/cancel") as r:
                assert r.status == 200 and (await r.json())["kind"] == "timer"
            live = await _timers_event(stream, 1)
            assert [t["label"] for t in live["timers"]] == ["tea timer"]
        assert a.home.alarms.timers.timers == {}, "the cancel did not reach server a"
        async with http.post(f"{hub.url}/api/timers/{pasta['id']}/cancel") as r:
            assert r.status == 404

        # Set from the page: the device has no server yet, so the first one takes it.
        body = {"minutes": 1, "seconds": 30, "label": "eggs", "device_id": "hall-pi"}
        async with http.post(f"{hub.url}/api/timers", json=body) as r:
            made = await r.json()
        assert r.status == 201, made
        assert (made["label"], made["device_id"], made["server"], made["duration_ms"]) == (
            "eggs timer",
            "hall-pi",
            0,
            90_000,
        )
        [row] = a.home.alarms.timers.timers.values()
        assert row.asker == "hall-pi" and row.duration_s == 90
        for bad in (
            {"minutes": 0, "device_id": "hall-pi"},
            {"minutes": 1441, "device_id": "hall-pi"},
            {"minutes": "5", "device_id": "hall-pi"},
            {"minutes": 5},
            {"minutes": 5, "device_id": "hall-pi", "label": "x" * 61},
            [1, 2],
        ):
            async with http.post(f"{hub.url}/api/timers", json=bad) as r:
                refused = await r.json()
            assert r.status == 400 and "\n" not in refused["error"], (bad, refused)
        async with http.post(f"{hub.url}/api/timers", json=body, headers={"Origin": "http://evil.example"}) as r:
            assert r.status == 403

        # Server b goes away: a's timers are still listed; with both gone, 503.
        await b.server.stop(None)
        async with http.get(f"{hub.url}/api/timers") as r:
            assert r.status == 200 and [t["label"] for t in (await r.json())["timers"]] == ["eggs timer"]
        await a.server.stop(None)
        async with http.get(f"{hub.url}/api/timers") as r:
            assert r.status == 503
    assert hub.metrics.web_refused["household_400"] == 6


def test_an_alarm_listed_by_two_servers_is_shown_once_the_ringing_copy_first() -> None:
    """A server cut off from the broker still lists the alarm another server adopted (docs/scale.md)."""
    owner = pb.TimerList(server_time_ms=1_000, timers=[
        pb.HouseholdTimer(id="t1", kind="timer", label="tea", ends_at_ms=5_000),
        pb.HouseholdTimer(id="t2", kind="timer", label="pasta", ends_at_ms=9_000),
        pb.HouseholdTimer(id="t3", kind="timer", label="eggs", ends_at_ms=7_000),
    ])
    adopter = pb.TimerList(server_time_ms=1_000, timers=[
        pb.HouseholdTimer(id="t1", kind="timer", label="tea", ringing=True),
        pb.HouseholdTimer(id="t3", kind="timer", label="eggs", ends_at_ms=7_000),
    ])
    merged = merge_timers([(0, owner, 1_000.0), (1, adopter, 1_000.0)], 1_000.0)
    rows = merged["timers"]
    assert isinstance(rows, list)
    assert [(r["id"], r["ringing"]) for r in rows] == [("t1", True), ("t3", False), ("t2", False)]
    assert rows[0]["server"] == 1  # the Cancel goes to the server where it rings
