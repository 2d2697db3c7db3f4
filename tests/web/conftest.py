"""Web app test kit: an in-process hub with the web app on, a logged-in HTTP client, and real
headless Chromium (Debian's ``chromium`` driven by playwright) as the person at the browser.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hub.server import Hub, run_hub
from naila.browser import chromium_executable, device_args, log_in
from shared.config import HubSettings, MqttSettings, WebRTCSettings, load

WEB_TOKEN = "correct-horse-battery-staple-42"
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "screenshots"
# The docs' dashboard pictures come from scripts/screenshots.py (a realistic household, issue 24), never
# from a test's data (script tags as device names, a degraded hub): of the tests' screenshots only the
# device page's is refreshed in docs/screenshots.
DOC_SCREENSHOTS_FROM_TESTS = frozenset({"device.png"})


async def until(cond: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s}s waiting for {what}")
        await asyncio.sleep(0.05)


HubMaker = Callable[..., Awaitable[Hub]]


@pytest.fixture
async def make_web_hub(loopback_ice: None) -> AsyncIterator[HubMaker]:
    """Start hubs with the web app on; ``broker=(host, port)`` connects their MQTT component."""
    hubs: list[Hub] = []

    async def make(broker: Any = None, port: int = 0, **overrides: Any) -> Hub:
        settings = load(
            HubSettings,
            **{
                "hub_host": "127.0.0.1",
                "hub_ai_server": "127.0.0.1:9",  # nothing there: the hub runs degraded, which is fine here
                "hub_web_token": WEB_TOKEN,
                "hub_device_tokens": {},
                "hub_mqtt": broker is not None,
                # Unique per hub: the hub's MQTT session is persistent, so a reused id would hand this
                # hub what the broker queued for an earlier test's hub.
                "hub_id": f"web-test-{len(hubs)}-{os.getpid()}-{secrets.token_hex(3)}",
                "hub_dead_peer_timeout_s": 3.0,
                "hub_listening_mode": "always",  # plain questions, no wake word (issue 19 modes tested apart)
                **overrides,
            },
        )
        mqtt = MqttSettings(mqtt_host=broker.host, mqtt_port=broker.port) if broker is not None else None
        hub = await run_hub(settings, WebRTCSettings(webrtc_ice_servers=[]), port=port, mqtt=mqtt)
        hubs.append(hub)
        if hub.mqtt is not None:
            assert await hub.mqtt.wait_connected(10), "hub never connected to the broker"
        return hub

    yield make
    for hub in hubs:
        await hub.stop()


def client() -> aiohttp.ClientSession:
    """An HTTP client that keeps the login cookie (aiohttp refuses cookies from IP hosts by default)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def login(http: aiohttp.ClientSession, base: str, token: str = WEB_TOKEN) -> aiohttp.ClientResponse:
    async with http.post(f"{base}/login", data={"token": token, "next": "/dashboard"}, allow_redirects=False) as r:
        return r


@pytest.fixture
async def browser_factory() -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Launch headless Chromium; ``fake_audio`` is a WAV the fake microphone plays once."""
    from playwright.async_api import async_playwright

    try:
        exe = chromium_executable()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    pw = await async_playwright().start()
    browsers: list[Any] = []

    async def launch(fake_audio: Path | None = None) -> Any:
        browser = await pw.chromium.launch(executable_path=exe, headless=True, args=device_args(fake_audio))
        browsers.append(browser)
        return browser

    yield launch
    for b in browsers:
        await b.close()
    await pw.stop()


async def browser_login(page: Any, base: str, next_path: str = "/") -> None:
    """Log in through the real login form, as a person would."""
    await log_in(page, base, WEB_TOKEN, next_path)


def speech_wav(path: Path, text: str, lead_s: float = 3.0, tail_s: float = 2.0) -> Path:
    """espeak-ng speech padded with silence, 48 kHz mono: the fake microphone's file."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True)
    subprocess.run(
        ["sox", str(raw), "-r", "48000", "-c", "1", "-b", "16", str(path), "pad", str(lead_s), str(tail_s)],
        check=True,
    )
    raw.unlink()
    return path


def save_screenshot(png: bytes, tmp_dir: Path, name: str) -> Path:
    """Keep the run's screenshot in the test's tmp dir; with NAILA_UPDATE_SCREENSHOTS=1 also refresh
    the docs' copy of the ones in DOC_SCREENSHOTS_FROM_TESTS (not by default: a test run should not
    change tracked files)."""
    assert len(png) > 10_000 and png.startswith(b"\x89PNG"), "screenshot is empty"
    out = tmp_dir / name
    out.write_bytes(png)
    if os.environ.get("NAILA_UPDATE_SCREENSHOTS") == "1" and name in DOC_SCREENSHOTS_FROM_TESTS:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, SCREENSHOTS / name)
    return out
