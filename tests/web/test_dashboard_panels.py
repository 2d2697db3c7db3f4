"""The dashboard's cameras, device controls and latency chart in real headless Chromium, against
an in-process hub with vision on and a real mosquitto (issue 24).

* camera frames go through the hub's camera path (VisionService.handle: ingress, motion gate,
  view); the AI server's answer arrives through the uplink's result callback (the one fake);
* a real device agent (its MQTT side) obeys the page's privacy toggle, and its status says so;
* screenshots are saved and checked: regions present, the camera tile not a flat colour.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import cv2
import numpy as np
import pytest
from av import VideoFrame
from playwright.async_api import expect

from device_agent.agent import DeviceAgent
from device_agent.audio_io import MemoryAudioBackend
from hub.server import Hub
from hub.turns import TurnRecord
from shared.config import AudioSettings, DeviceSettings, MqttSettings, VideoSettings, WebRTCSettings, load
from shared.contract import pb
from shared.mqtt import DeviceStatus, build, decode, outbound, topics
from tests.conftest import free_port
from tests.web.conftest import HubMaker, browser_login, client, login, save_screenshot

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

RED = (0, 0, 230)  # BGR
BLUE = (255, 160, 0)  # a different brightness too: the motion gate looks at grey


def _frame(bgr: tuple[int, int, int]) -> VideoFrame:
    img = np.zeros((480, 640, 3), np.uint8)
    img[:] = bgr
    img[140:340, 220:420] = (250, 250, 250)  # a bright square: the tile is never one flat colour
    return VideoFrame.from_ndarray(img, format="bgr24")


async def _feed_until_new_view(hub: Hub, feed: Any, bgr: tuple[int, int, int]) -> None:
    """Show the camera a scene at ~12 fps until the gate chooses a frame of it (the first frame of a
    stream is a refresh; a changed scene is motion, chosen once the run has settled)."""
    assert hub.vision is not None
    before = feed.view.version
    for _ in range(60):
        await hub.vision.handle(feed, _frame(bgr))
        if feed.view.version != before:
            return
        await asyncio.sleep(0.08)  # the camera's frame interval, within the hub's 15 fps ingress cap
    raise AssertionError("the motion gate never chose a frame of the new scene")


async def _tile_rgb(page: Any, selector: str) -> list[float]:
    """Mean colour of the tile's loaded image, read back through a canvas (same origin: not tainted)."""
    return list(
        await page.eval_on_selector(
            selector,
            """img => {
                const c = document.createElement("canvas");
                c.width = img.naturalWidth; c.height = img.naturalHeight;
                const g = c.getContext("2d"); g.drawImage(img, 0, 0);
                const d = g.getImageData(0, 0, 40, 40).data;  // a corner: the scene's colour
                let r = 0, gr = 0, b = 0;
                for (let i = 0; i < d.length; i += 4) { r += d[i]; gr += d[i + 1]; b += d[i + 2]; }
                const n = d.length / 4;
                return [r / n, gr / n, b / n];
            }""",
        )
    )


def _not_flat(png: bytes) -> float:
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.size > 0
    return float(img.std())


async def test_camera_tile_follows_the_view_and_the_image_needs_the_login(
    make_web_hub: HubMaker, mosquitto: Any, browser_factory: Any, tmp_path: Path
) -> None:
    hub = await make_web_hub(broker=mosquitto, hub_vision=True)
    assert hub.vision is not None
    cam = f"cam-porch-{os.getpid()}"
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=f"panels-{cam}") as mq:
        out = outbound(
            topics.device_status(cam),
            build(
                DeviceStatus,
                device_id=cam,
                online=True,
                capabilities=["video"],
                firmware_version="1.0",
                zone="front_door",
                room="porch",
            ),
        )
        await mq.publish(out.topic, out.payload, qos=1, retain=False)

    feed = hub.vision.open_camera(cam)
    await _feed_until_new_view(hub, feed, RED)

    # Without the login the view is refused; with it, it is a JPEG.
    url = f"{hub.url}/api/cameras/{cam}/view"
    async with aiohttp.ClientSession() as anon, anon.get(url) as r:
        assert r.status == 401
        assert r.headers["Cache-Control"] == "no-store"

    browser = await browser_factory()
    page = await (await browser.new_context(viewport={"width": 1280, "height": 1000})).new_page()
    await browser_login(page, hub.url, "/dashboard")
    tile = page.locator(f'figure.tile[data-camera="{cam}"]')
    await expect(tile.locator(".info")).to_contain_text("zone front_door", timeout=5000)
    # No answer from the AI server yet: the tile must not claim that nothing is there.
    await expect(tile.locator(".info")).to_contain_text("not analysed yet")
    await expect(tile.locator(".info")).not_to_contain_text("nothing detected")
    await page.wait_for_function(
        "sel => { const i = document.querySelector(sel); return i && i.complete && i.naturalWidth > 0 }",
        arg=f'figure.tile[data-camera="{cam}"] img',
    )
    red = await _tile_rgb(page, f'figure.tile[data-camera="{cam}"] img')
    assert red[0] > 150 and red[2] < 80, red
    viewed = await page.evaluate("u => fetch(u).then(r => [r.status, r.headers.get('content-type')])", url)
    assert viewed == [200, "image/jpeg"]

    # The scene changes: the hub chooses a frame of it, says so over SSE, the page refetches.
    version = await tile.get_attribute("data-version")
    await _feed_until_new_view(hub, feed, BLUE)
    await expect(tile).not_to_have_attribute("data-version", version or "", timeout=5000)
    await page.wait_for_function(
        "sel => { const i = document.querySelector(sel); return i && i.complete && i.naturalWidth > 0 }",
        arg=f'figure.tile[data-camera="{cam}"] img',
    )
    blue = await _tile_rgb(page, f'figure.tile[data-camera="{cam}"] img')
    assert blue[2] > 150 and blue[0] < 80, blue

    # The AI server's answer for that frame: a box, drawn on the tile and in the larger view.
    result = pb.VisionResult(device_id=cam, frame_id=10**6, inference_ms=12)
    d = result.detections.add(label="person", confidence=0.91)
    d.bbox.x, d.bbox.y, d.bbox.w, d.bbox.h = 80, 40, 120, 160  # pixels of the analysed 320x240 frame
    hub.vision._on_result(result, 0.02)  # the uplink's result callback: the AI server's boundary
    await expect(tile.locator('g.det[data-label="person"]')).to_have_count(1, timeout=5000)
    await expect(tile.locator(".info")).to_contain_text("sees person")
    await expect(tile.locator(".info")).not_to_contain_text("not analysed")
    rect = tile.locator("g.det rect")
    assert float(await rect.get_attribute("x") or 0) == pytest.approx(160, abs=1)  # 80/320 of 640
    # The run's screenshot: the panels are laid out, the camera tile shows a picture.
    png = await page.screenshot(full_page=True)
    save_screenshot(png, tmp_path, "dashboard-cameras.png")
    for panel in ("#cameras-panel", "#health-card", "#latency-panel"):
        box = await page.locator(panel).bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 40, (panel, box)
    tile_box = await tile.locator(".view").bounding_box()
    assert tile_box is not None and tile_box["width"] > 150
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    x, y, w, h = (int(tile_box[k]) for k in ("x", "y", "width", "height"))
    assert float(img[y : y + h, x : x + w].std()) > 20, "the camera tile is one flat colour in the screenshot"
    await tile.click()
    dialog = page.locator("#camera-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog.locator('g.det[data-label="person"]')).to_have_count(1)
    await page.wait_for_function("() => document.getElementById('camera-dialog-img').naturalWidth > 0")
    shot = await dialog.screenshot()
    assert _not_flat(shot) > 20
    await page.keyboard.press("Escape")

    # When the camera's stream ends, its tile goes.
    hub.vision.close_camera(feed, "ended")
    await expect(tile).to_have_count(0, timeout=5000)


def _agent(device_id: str, mqtt: MqttSettings, backend: MemoryAudioBackend) -> DeviceAgent:
    settings = load(
        DeviceSettings,
        device_id=device_id,
        device_hub_url=f"http://127.0.0.1:{free_port()}",  # no stream: the MQTT side is what is tested
        device_mqtt=True,
        device_camera="synthetic",
        device_heartbeat_s=5.0,
        device_room="hall",
        device_reconnect_initial_s=0.2,
        device_reconnect_max_s=1.0,
    )
    return DeviceAgent(
        settings,
        audio_backend=backend,
        audio=load(AudioSettings),
        video=load(VideoSettings, video_resolution="160x120", video_max_fps=5),
        mqtt=mqtt,
        webrtc=load(WebRTCSettings, webrtc_ice_servers=[]),
    )


async def test_privacy_toggle_turns_a_real_devices_camera_off(
    make_web_hub: HubMaker, mosquitto: Any, browser_factory: Any, tmp_path: Path
) -> None:
    hub = await make_web_hub(broker=mosquitto)
    dev = f"pi-hall-{os.getpid()}-{int(time.time() * 1000) % 100000}"
    agent = _agent(dev, load(MqttSettings, mqtt_host=mosquitto.host, mqtt_port=mosquitto.port), MemoryAudioBackend())
    await agent.start()
    try:
        browser = await browser_factory()
        page = await (await browser.new_context(viewport={"width": 1280, "height": 1000})).new_page()
        await browser_login(page, hub.url, "/dashboard")
        toggle = page.locator(f'tr[data-device="{dev}"] button[data-control="camera"]')
        await expect(toggle).to_have_attribute("aria-pressed", "true", timeout=10000)

        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=f"watch-{dev}") as watch:
            await watch.subscribe(topics.device_status(dev), qos=1)
            await toggle.click()
            # The device obeys and says so in its MQTT status ...
            async with asyncio.timeout(10):
                async for msg in watch.messages:
                    status = decode(DeviceStatus, bytes(msg.payload))
                    if status.camera_enabled is False:
                        break
            # ... and only then does the page show it.
            await expect(toggle).to_have_attribute("aria-pressed", "false", timeout=5000)
            await expect(page.locator(f'tr[data-device="{dev}"] [data-privacy="camera"]')).to_have_text("camera off")
            await expect(toggle).to_be_enabled()

            # The listening mode: the same path, the listening_mode command, shown once the status says so.
            mode = page.locator(f'tr[data-device="{dev}"] select[data-control="listening_mode"]')
            await mode.select_option("always")
            async with asyncio.timeout(10):
                async for msg in watch.messages:
                    if decode(DeviceStatus, bytes(msg.payload)).listening_mode == "always":
                        break
            assert agent.listening_mode == "always"
            cell = page.locator(f'tr[data-device="{dev}"] td.listening-mode')
            await expect(cell).to_have_attribute("data-mode", "always", timeout=5000)
            await expect(mode).to_have_value("always")
            await expect(mode).to_be_enabled()
    finally:
        await agent.stop()


async def test_control_endpoint_refuses_bad_requests(make_web_hub: HubMaker, mosquitto: Any) -> None:
    hub = await make_web_hub(broker=mosquitto)
    async with client() as http:
        url = f"{hub.url}/api/devices/nobody/control"
        async with http.post(url, json={"command": "camera", "enabled": False}) as r:
            assert r.status == 401
        await login(http, hub.url)
        async with http.post(url, json={"command": "camera", "enabled": False}) as r:
            assert r.status == 404
        dev = f"pi-x-{os.getpid()}"
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=f"ctl-{dev}") as mq:
            out = outbound(
                topics.device_status(dev),
                build(DeviceStatus, device_id=dev, online=True, capabilities=[], firmware_version="1"),
            )
            await mq.publish(out.topic, out.payload, qos=1, retain=False)
        for _ in range(100):
            async with http.get(f"{hub.url}/api/state") as r:
                if any(d["device_id"] == dev for d in (await r.json())["devices"]):
                    break
            await asyncio.sleep(0.05)
        url = f"{hub.url}/api/devices/{dev}/control"
        for body, why in (
            ({"command": "reboot"}, "command must be one of"),
            ({"command": "camera", "enabled": "no"}, "true or false"),
            ({"command": "listening_mode", "mode": "whenever"}, "input should be 'wake_word'"),
            ({"command": "listening_mode"}, "missing parameter 'mode'"),
            ([1, 2], "JSON object"),
        ):
            async with http.post(url, json=body) as r:
                assert r.status == 400 and why in (await r.json())["error"]
        async with http.post(
            url, json={"command": "mute", "muted": True}, headers={"Origin": "http://evil.example"}
        ) as r:
            assert r.status == 403
        async with http.post(url, json={"command": "mute", "muted": True}) as r:
            assert r.status == 202 and (await r.json())["muted"] is True
        async with http.post(url, json={"command": "listening_mode", "mode": "push_to_talk"}) as r:
            assert r.status == 202 and (await r.json())["mode"] == "push_to_talk"


async def test_latency_chart_has_a_bar_per_turn_and_the_page_fits_a_phone(
    make_web_hub: HubMaker, browser_factory: Any, tmp_path: Path
) -> None:
    hub = await make_web_hub()
    for i in range(5):
        hub.turns.add(
            TurnRecord(
                device_id="pi-kitchen",
                conversation_id=f"c{i}",
                transcript="what time is it",
                reply_text="It is noon.",
                timing={
                    "stt_ms": 180 + i * 10,
                    "llm_first_token_ms": 420 + i * 30,
                    "first_sentence_ms": 610,
                    "tts_first_audio_ms": 760 + i * 20,
                    "hub_end_to_playout_ms": 820 + i * 25,
                },
            )
        )
    browser = await browser_factory()
    page = await (await browser.new_context(viewport={"width": 1280, "height": 1000})).new_page()
    await browser_login(page, hub.url, "/dashboard")
    bars = page.locator("#latency-chart g.bar")
    await expect(bars).to_have_count(5, timeout=5000)
    await expect(bars.first.locator("rect")).to_have_count(5)  # five stages stacked
    await expect(page.locator("#latency-summary")).to_contain_text("p95")
    hub.turns.add(TurnRecord(device_id="pi-hall", conversation_id="c5", timing={"stt_ms": 150, "total_ms": 900}))
    await expect(bars).to_have_count(6, timeout=5000)

    await page.set_viewport_size({"width": 390, "height": 844})
    # The ResizeObserver redraws the chart (a new <svg>) after the resize: wait for the redrawn one,
    # or the box may be read from the svg being replaced (None) or from the desktop-width one.
    await page.wait_for_function(
        "() => { const s = document.querySelector('#latency-chart svg');"
        " return s !== null && s.isConnected && s.getBoundingClientRect().width <= 390; }",
        timeout=5000,
    )
    width = await page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"
    chart = await page.locator("#latency-chart svg").bounding_box()
    assert chart is not None and 0 < chart["width"] <= 390
    save_screenshot(await page.screenshot(full_page=True), tmp_path, "dashboard-phone.png")
