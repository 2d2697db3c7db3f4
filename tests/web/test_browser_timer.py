"""Issue 19's browser scenario: real headless Chromium, its fake microphone playing (piper voice)
"Okay Nabu." then "Set a timer for ten seconds.", to an in-process hub in wake_word mode and a real
AI server; about ten seconds later the page's own <audio> element plays the alarm chime (its two
tones, found by an analyser the test installs on the page).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared.config import AIServerSettings, load
from tests.web.conftest import HubMaker, browser_login, until

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

TIMER_S = 10.0
# A frequency analyser on the page's <audio>: when both chime tones (ai_server/assist/sounds.py)
# stand well above the spectrum's median within one second, the page is ringing.
LISTEN = """
(tones) => {
  const audio = document.getElementById("remote-audio");
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 8192;
  analyser.smoothingTimeConstant = 0;
  const bins = new Float32Array(analyser.frequencyBinCount);
  const hz = ctx.sampleRate / analyser.fftSize;
  let src = null;
  const seen = tones.map(() => -1e9);
  window.__rings = [];
  setInterval(() => {
    if (!audio.srcObject) return;
    if (!src) { src = ctx.createMediaStreamSource(audio.srcObject); src.connect(analyser); }
    analyser.getFloatFrequencyData(bins);
    const sorted = Array.from(bins).sort((a, b) => a - b);
    const median = sorted[sorted.length >> 1];
    const now = performance.now();
    tones.forEach((f, i) => {
      const k = Math.round(f / hz);
      const peak = Math.max(bins[k - 1], bins[k], bins[k + 1]);
      if (peak > -55 && peak - median > 45) seen[i] = now;
    });
    if (seen.every((t) => now - t < 600)) {
      const last = window.__rings[window.__rings.length - 1];
      if (last === undefined || now - last > 2500) window.__rings.push(now);
    }
  }, 20);
}
"""


def piper_wav(path: Path, lead_s: float, tail_s: float) -> tuple[Path, float]:
    """The fake microphone's file; returns it and when the command ends, seconds into it."""
    from shared.audio import write_wav
    from shared.wakeword import piper_speech

    rate = 48_000
    speech = np.concatenate([piper_speech("Okay Nabu.", rate), np.zeros(2 * rate, np.int16),
                             piper_speech("Set a timer for ten seconds.", rate)])
    write_wav(path, np.concatenate([np.zeros(int(lead_s * rate), np.int16), speech,
                                    np.zeros(int(tail_s * rate), np.int16)]), rate)
    return path, lead_s + speech.size / rate


async def test_okay_nabu_set_a_timer_for_ten_seconds_rings_on_the_page(
    make_web_hub: HubMaker, browser_factory: Any, tmp_path: Path
) -> None:
    from ai_server.app import start_server
    from ai_server.assist.sounds import CHIME_TONES_HZ

    ai = await start_server(load(AIServerSettings, vision_enabled=False, assist_ring_max_s=8.0),
                            host="127.0.0.1", port=0, metrics_port=0)
    try:
        hub = await make_web_hub(hub_ai_server=ai.address, hub_listening_mode="wake_word")
        assert await hub.link.wait_connected(15), "hub never reached the AI server"
        wav, command_end_s = piper_wav(tmp_path / "command.wav", lead_s=3.0, tail_s=60.0)
        browser = await browser_factory(fake_audio=wav)
        page = await (await browser.new_context()).new_page()
        await browser_login(page, hub.url, "/")
        await page.check("#mode-wakeword")
        await page.click("#start")  # the WAV starts with getUserMedia
        mic_started = time.monotonic()
        await page.evaluate(LISTEN, list(CHIME_TONES_HZ))
        device_id = (await page.locator("#device-id").text_content()) or ""
        await until(lambda: device_id in hub.sessions, 15, "the browser's session")
        await until(lambda: any(hub.turns.recent(device_id)), 90, "the timer command's turn")
        turn = next(iter(hub.turns.recent(device_id)))
        assert "timer" in turn.transcript.lower(), turn.transcript
        assert "set for 10 seconds" in turn.reply_text.lower(), turn.reply_text
        confirmed = time.monotonic()
        page_confirmed = float(await page.evaluate("performance.now()"))

        # The ring reaches the page as an unprompted reply ("Your 10 second timer is done.") whose
        # audio opens with the chime: the hub carries it, and the page hears the chime. Only chimes
        # from 3 s after the confirmation count (the earcon and the confirmation come before).
        def ring() -> bool:
            return any("is done" in t.reply_text.lower() for t in hub.turns.recent(device_id))

        await until(ring, 60, "the ring's reply through the hub")
        deadline = time.monotonic() + 20
        rings: list[float] = []
        while not rings and time.monotonic() < deadline:
            await page.wait_for_timeout(200)
            rings = [r for r in await page.evaluate("window.__rings") if r > page_confirmed + 3000]
        assert rings, "the page never played the alarm chime"
        rang = confirmed + (rings[0] - page_confirmed) / 1000  # the page's clock, moved onto ours
        after = rang - (mic_started + command_end_s)
        since_confirmed = rang - confirmed
        print(f"\nbrowser timer: {turn.transcript!r} -> {turn.reply_text!r}; the page heard the chime "
              f"{after:.1f}s after the command ended")
        assert TIMER_S - 4.0 <= since_confirmed <= TIMER_S + 3.0, f"rang {since_confirmed:.1f}s after the reply"
        assert TIMER_S - 1.0 <= after <= TIMER_S + 6.0, f"rang {after:.1f}s after the command"
    finally:
        await ai.stop()
