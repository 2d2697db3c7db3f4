"""The dashboard's household panels in real headless Chromium (issue 24), against a real AI server
(scripted STT/LLM/TTS; the store, timers, assist router and gRPC are real), a real hub and mosquitto.

* an alert published on MQTT with its snapshot_id shows its snapshot (loaded through the hub, behind
  the login) with the box drawn over it; the same URL without the login is refused with 401;
* a timer set by voice (an utterance on StreamConversation, as the hub sends it) appears on the
  page and counts down; Cancel on the page ends it on the AI server;
* a timer that rings shows as ringing, and Stop on the page ends the ringing;
* a timer set from the page's form (POST /api/timers -> Household.SetTimer) for a device appears
  and counts down, Cancel ends it; a bad duration is answered in one line on the form.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest
from PIL import Image
from playwright.async_api import expect

from ai_server.client import StreamClient, silence
from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS
from shared.config import AIServerSettings, load
from shared.mqtt import Alert, DeviceStatus, build, outbound, topics
from tests.web.conftest import HubMaker, browser_login, save_screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


# A loud stretch, then quiet: not silence, so the AI server transcribes it (the scripted STT).
SPEECH = np.concatenate([np.full(9600, 3000, np.int16), silence(300)])


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (320, 240), (30, 90, 160)).save(out, "JPEG")
    return out.getvalue()


async def test_alert_snapshot_and_a_voice_timer_on_the_dashboard(
    make_web_hub: HubMaker, mosquitto: Any, browser_factory: Any, tmp_path: Path
) -> None:
    from ai_server.app import start_server

    said = ["set a timer for 5 minutes"]
    settings = load(AIServerSettings, vision_enabled=False, ai_media_dir=str(tmp_path / "ai"), assist_ring_max_s=60.0)
    tts = FakeTTS()
    ai = await start_server(
        settings,
        stt=FakeSTT(lambda _audio: said[0]),
        llm=FakeLLM(),
        tts=tts,
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        warm=False,
    )
    try:
        hub = await make_web_hub(broker=mosquitto, hub_ai_server=ai.address)
        # An alert snapshot in the AI server's store, with the box the vision pipeline keeps beside it.
        store = ai.storage.store
        snap = store.add(
            _jpeg(), source="alert_snapshot", media_type="image", format="jpeg", device_id="door-cam", zone="front_door"
        )
        store.set_analysis(
            snap.id,
            {
                "alert": {
                    "width": 320,
                    "height": 240,
                    "detections": [
                        {
                            "label": "person",
                            "confidence": 0.9,
                            "box": [40, 30, 100, 180],
                            "track_id": 3,
                            "zone": "front_door",
                        }
                    ],
                }
            },
        )

        browser = await browser_factory()
        page = await (await browser.new_context()).new_page()
        await browser_login(page, hub.url, "/dashboard")
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=f"household-{time.monotonic_ns()}") as mq:
            out = outbound(
                topics.ALERTS_ALL,
                build(
                    Alert,
                    alert_type="person_detected",
                    zone="front_door",
                    confidence=0.9,
                    source_device="door-cam",
                    snapshot_available=True,
                    snapshot_id=snap.id,
                ),
            )
            await mq.publish(out.topic, out.payload, qos=out.qos, retain=out.retain)
        card = page.locator(f'#alert-cards figure[data-snapshot-id="{snap.id}"]')
        await expect(card).to_have_count(1, timeout=10_000)
        img = card.locator("img.snapshot")
        await expect(img).to_have_js_property("complete", True, timeout=10_000)
        assert await img.evaluate("i => i.naturalWidth") == 320
        await expect(card.locator("svg.boxes rect")).to_have_count(1, timeout=10_000)
        assert await card.locator("svg.boxes text").text_content() == "person 90%"

        # Without the login: refused.
        stranger = await browser.new_context()
        refused = await stranger.request.get(f"{hub.url}/api/alerts/{snap.id}/snapshot")
        assert refused.status == 401
        assert (await page.request.get(f"{hub.url}/api/alerts/{snap.id}/snapshot")).status == 200

        # A timer set by voice: the utterance goes up StreamConversation like the hub's, the scripted
        # STT hears "set a timer for 5 minutes", the assist router starts a real timer.
        async with StreamClient(ai.address) as client:
            reply = await client.turn("kitchen-pi", await client.speak("kitchen-pi", SPEECH), within_s=30)
            assert reply.final is not None and "5 minutes" in reply.final.reply_text, reply.final
            row = page.locator("#timer-list li[data-kind=timer]")
            await expect(row).to_have_count(1, timeout=10_000)
            countdown = row.locator(".countdown")
            first = await countdown.text_content()
            await page.wait_for_timeout(2200)
            second = await countdown.text_content()
            secs = [int(m) * 60 + int(sec) for m, sec in (str(t).split(":") for t in (first, second))]
            assert 290 <= secs[1] < secs[0] <= 300, (first, second)  # counting down from 5:00, locally
            save_screenshot(await page.screenshot(full_page=True), tmp_path, "dashboard-household.png")
            await row.locator("button.cancel").click()
            await expect(row).to_have_count(0, timeout=10_000)
            listed = await page.request.get(f"{hub.url}/api/timers")
            assert (await listed.json())["timers"] == [], "the AI server still runs the cancelled timer"

            # A timer that rings: Stop on the page ends the ringing.
            said[0] = "set a timer for 2 seconds"
            await client.turn("kitchen-pi", await client.speak("kitchen-pi", SPEECH), within_s=30)
            ringing = page.locator("#timer-list li .countdown.ringing")
            await expect(ringing).to_have_count(1, timeout=15_000)
            await page.locator("#timer-list li button.cancel").click()
            await expect(ringing).to_have_count(0, timeout=10_000)
            listed = await page.request.get(f"{hub.url}/api/timers")
            assert (await listed.json())["timers"] == []
            rings = sum("is done" in t for t in tts.texts)
            assert rings >= 1, tts.texts
            await page.wait_for_timeout(4000)  # a ring cycle is the chime, the words and a 2 s pause
            assert sum("is done" in t for t in tts.texts) == rings, "it kept ringing after Stop"

        # A timer from the page's form, to ring on a device the hub knows (its MQTT status).
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=f"household-{time.monotonic_ns()}") as mq:
            status = outbound(
                topics.device_status("hall-pi"),
                build(
                    DeviceStatus,
                    device_id="hall-pi",
                    online=True,
                    capabilities=["audio"],
                    firmware_version="1",
                    room="Hall",
                ),
            )
            await mq.publish(status.topic, status.payload, qos=1, retain=False)
        await expect(page.locator('#timer-device option[value="hall-pi"]')).to_have_count(1, timeout=10_000)
        await page.fill("#timer-minutes", "0")
        await page.fill("#timer-seconds", "0")
        await page.click("#timer-set")
        await expect(page.locator("#timer-form-status")).to_contain_text("1 second to 24 hours", timeout=10_000)
        await page.fill("#timer-minutes", "3")
        await page.fill("#timer-label", "Eggs")
        await page.select_option("#timer-device", "hall-pi")
        await page.click("#timer-set")
        row = page.locator("#timer-list li[data-kind=timer]")
        await expect(row).to_have_count(1, timeout=10_000)
        await expect(row.locator(".label")).to_have_text("eggs timer")
        countdown = row.locator(".countdown")
        first = await countdown.text_content()
        await page.wait_for_timeout(2200)
        second = await countdown.text_content()
        secs = [int(m) * 60 + int(sec) for m, sec in (str(t).split(":") for t in (first, second))]
        assert 170 <= secs[1] < secs[0] <= 180, (first, second)
        [made] = (await (await page.request.get(f"{hub.url}/api/timers")).json())["timers"]
        assert (made["device_id"], made["room"], made["duration_ms"]) == ("hall-pi", "Hall", 180_000)
        save_screenshot(await page.screenshot(full_page=True), tmp_path, "dashboard-timer-form.png")
        await row.locator("button.cancel").click()
        await expect(row).to_have_count(0, timeout=10_000)
        assert (await (await page.request.get(f"{hub.url}/api/timers")).json())["timers"] == []
    finally:
        await ai.stop()
