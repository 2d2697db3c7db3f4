"""The browser device end to end: real headless Chromium speaking through its fake microphone
(an espeak-ng WAV) to an in-process hub and a real AI server with the shipped models
(faster-whisper, llama.cpp, piper), hearing the spoken answer, then surviving a hub restart.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from shared.config import AIServerSettings, load
from tests.conftest import free_port
from tests.web.conftest import HubMaker, browser_login, save_screenshot, speech_wav, until

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

# How much of the reply the page must hear. A terse answer ("Seven days.") is ~0.6 s of voice,
# of which ~440 ms is above LOUD_DBFS; silence or a cut-off reply stays far below.
MIN_HEARD_MS = 300
LOUD_DBFS = -45

# Installed by the test, not the page: an analyser on the page's own <audio> element, so the
# test measures what the page really received, independently of the page's own meters.
LISTEN = """
() => {
  const audio = document.getElementById("remote-audio");
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  let src = null;
  const buf = new Float32Array(1024);
  window.__heard = { loudMs: 0, peakDb: -120 };
  setInterval(() => {
    if (!audio.srcObject) return;
    if (!src) { src = ctx.createMediaStreamSource(audio.srcObject); src.connect(analyser); }
    analyser.getFloatTimeDomainData(buf);
    let s = 0;
    for (const v of buf) s += v * v;
    const db = 20 * Math.log10(Math.sqrt(s / buf.length) + 1e-9);
    window.__heard.peakDb = Math.max(window.__heard.peakDb, db);
    if (db > LOUD_DBFS) window.__heard.loudMs += 20;
  }, 20);
}
""".replace("LOUD_DBFS", str(LOUD_DBFS))


async def test_browser_asks_out_loud_hears_the_answer_and_survives_a_hub_restart(
    make_web_hub: HubMaker, browser_factory: Any, tmp_path: Path
) -> None:
    from ai_server.app import start_server

    # No vision here: loading YOLO beside the browser would take the cores this voice test times.
    ai = await start_server(load(AIServerSettings, vision_enabled=False), host="127.0.0.1", port=0, metrics_port=0)
    try:
        port = free_port()
        hub = await make_web_hub(hub_ai_server=ai.address, port=port)
        assert await hub.link.wait_connected(15), "hub never reached the AI server"
        # Chromium loops the fake microphone's file: a long silent tail keeps the question from
        # coming round again (and barging in) while a slow, busy machine is still answering it.
        wav = speech_wav(tmp_path / "question.wav", "How many days are in a week?", tail_s=40.0)
        browser = await browser_factory(fake_audio=wav)
        context = await browser.new_context(viewport={"width": 430, "height": 932})  # a phone's screen
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await browser_login(page, hub.url, "/")
        await page.check("#mode-handsfree")
        await page.click("#start")  # getUserMedia starts the WAV: 3 s of silence, then the question
        state = page.locator("#conn-state")
        await expect(state).to_have_attribute("data-state", "connected", timeout=15000)
        connect_ms = int(await state.get_attribute("data-connect-ms") or -1)
        await page.evaluate(LISTEN)
        device_id = (await page.locator("#device-id").text_content()) or ""
        assert device_id.startswith("web-") and device_id in hub.sessions

        card = page.locator("#turns li.turn").first
        await expect(card.locator(".you .text")).to_have_text(re.compile(r"week|days", re.I), timeout=180_000)
        await expect(card).to_have_attribute("data-recorded", "1", timeout=180_000)
        await expect(card).to_have_attribute("data-heard-after-ms", re.compile(r"^\d+$"), timeout=30_000)
        reply = (await card.locator(".naila .text").text_content() or "").strip()
        assert reply and reply != "…", "no reply text shown"
        await expect(card.locator('.timing dd[data-stage="stt_ms"]')).to_have_count(1)
        await expect(card.locator('.timing dd[data-stage="hub_end_to_first_audio_ms"]')).to_have_count(1)
        heard_after_ms = int(await card.get_attribute("data-heard-after-ms") or -1)

        async def heard() -> dict[str, float]:
            return dict(await page.evaluate("window.__heard"))

        deadline = time.monotonic() + 30
        while (h := await heard())["loudMs"] < MIN_HEARD_MS and time.monotonic() < deadline:
            await page.wait_for_timeout(200)
        assert h["loudMs"] >= MIN_HEARD_MS, f"the page heard too little of the reply: {h}"
        turn = [t for t in hub.turns.recent(device_id)][-1]
        # The page's figure and the hub's own: the speech ended before the hub's END (by the pause
        # that ends a turn) and the reply reached the page after the hub sent it, so the page's
        # figure is the hub's END -> playout plus at most the 1 s fallback and the network each way.
        # (A figure on another clock or in other units than the page's ms fails this.)
        assert 0 < heard_after_ms < 5000, heard_after_ms
        if (hub_ms := turn.timing.get("hub_end_to_playout_ms")) is not None:  # missing if the reply beat the mark
            assert hub_ms < heard_after_ms < hub_ms + 2500, (heard_after_ms, turn.timing)
        print(
            f"\nbrowser device: connected in {connect_ms} ms; transcript {turn.transcript!r}; reply {reply!r}; "
            f"reply heard {heard_after_ms} ms after the end of speech (page clock); "
            f"hub END->playout {turn.timing.get('hub_end_to_playout_ms')} ms; heard {h['loudMs']} ms of reply, "
            f"peak {h['peakDb']:.1f} dBFS"
        )
        await page.wait_for_timeout(300)
        save_screenshot(await page.screenshot(full_page=True), tmp_path, "device.png")

        # The hub restarts on the same address: the page notices (its event stream reconnects and
        # sees a new hub instance) and opens a new session by itself.
        await hub.stop()
        restarted = time.monotonic()
        hub2 = await make_web_hub(hub_ai_server=ai.address, port=port)
        await until(lambda: device_id in hub2.sessions, 30, "the browser to reconnect to the restarted hub")
        await expect(state).to_have_attribute("data-state", "connected", timeout=15000)
        session = hub2.sessions[device_id]
        media_before = session.last_media_at
        await until(lambda: session.last_media_at > media_before, 5, "audio from the reconnected browser")
        print(f"browser device back on the restarted hub {time.monotonic() - restarted:.2f} s after it started")
        assert not errors, errors
    finally:
        await ai.stop()
