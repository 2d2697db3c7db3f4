"""The household endpoints over HTTP (issue 24): 401 without the login, 403 cross-site, 400 for bad
ids and parameters in one line, and 503 (counted) when the AI server cannot be reached."""

from __future__ import annotations

import pytest

from tests.web.conftest import HubMaker, client, login

pytestmark = pytest.mark.integration

GETS = ("/api/alerts/abc/snapshot", "/api/alerts/abc/boxes", "/api/history", "/api/timers")


async def test_household_endpoints_need_the_login_and_check_their_input(make_web_hub: HubMaker) -> None:
    hub = await make_web_hub()  # its AI server address has nothing listening: the AI server is unreachable
    async with client() as http:
        for path in GETS:
            async with http.get(f"{hub.url}{path}") as r:
                assert r.status == 401, path
        async with http.post(f"{hub.url}/api/timers/abc/cancel") as r:
            assert r.status == 401
        await login(http, hub.url)
        for path in (
            "/api/alerts/a%20b/snapshot",
            "/api/history?camera=a/b",
            "/api/history?since=yesterday",
            "/api/history?since=2026-03-10T12:00:00Z&until=2026-03-10T11:00:00Z",
            "/api/history?limit=0",
        ):
            async with http.get(f"{hub.url}{path}") as r:
                body = await r.json()
                assert r.status == 400 and "\n" not in body["error"], (path, body)
        async with http.post(f"{hub.url}/api/timers/abc/cancel", headers={"Origin": "http://evil.example"}) as r:
            assert r.status == 403
        for path in GETS:
            async with http.get(f"{hub.url}{path}") as r:
                assert r.status == 503, path
                assert "unreachable" in (await r.json())["error"]
        async with http.post(f"{hub.url}/api/timers/abc/cancel") as r:
            assert r.status == 503
    assert hub.metrics.web_refused["ai_unreachable"] == len(GETS) + 1
