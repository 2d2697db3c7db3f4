"""The reply's last leg into a real browser: the hub's TTS track -> aiortc -> headless Chromium's
jitter buffer (NetEq) -> the page's WebAudio analyser, on one clock.

A tone is pushed into the hub's own TtsTrack (hub/tts_track.py, Opus as a session sets it up:
pre-encoded idle silence, encoded on the loop) while the track is idle, as a reply starts after
the user's question; a page polls an analyser on the remote stream every 5 ms and notes the wall
time of each onset above -45 dBFS. Both sides read the same machine's wall clock (time.time and
performance.timeOrigin + performance.now). Compares how many frames the track sends ahead when a
reply starts (TtsTrack's ``lead_frames``), with the page's jitterBufferTarget = 0 as the
device page sets it, and reports Chromium's own jitter-buffer statistics. (The hub sends a browser
none ahead and its own devices one: hub/session.py.)

Usage: python bench/browser_playout.py [--pushes 15] [--rounds 2] [--leads 0,1,2]
writes bench/results/browser_playout.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stats import cpu as stats_cpu  # noqa: E402
from bench.stats import spread  # noqa: E402
from hub.tts_track import GapTolerantOpusEncoder, TtsTrack  # noqa: E402
from naila.browser import CHROMIUM_ARGS, chromium_executable  # noqa: E402
from shared.rtc_tuning import tune_opus_bitrate  # noqa: E402

TONE_RATE = 24_000
GAP_S = 1.5  # idle between pushes: the track is in its 400 ms idle-packet mode by then

PAGE = """<html><body><audio id=a autoplay></audio><script>
window.onsets = [];
window.offer = async (target) => {
  const pc = new RTCPeerConnection({iceServers: []});
  window.pc = pc;
  pc.addTransceiver('audio', {direction: 'recvonly'});
  pc.ontrack = (ev) => {
    if (target !== null) ev.receiver.jitterBufferTarget = target;
    const s = ev.streams[0] || new MediaStream([ev.track]);
    const el = document.getElementById('a');
    el.srcObject = s;  // Chromium feeds a remote stream to WebAudio only while an element plays it
    el.play();
    const ctx = new AudioContext();
    const an = ctx.createAnalyser();
    an.fftSize = 2048;
    ctx.createMediaStreamSource(s).connect(an);
    const buf = new Float32Array(2048);
    let loud = false, scanned = 0;
    setInterval(() => {
      an.getFloatTimeDomainData(buf);
      const wallNow = performance.timeOrigin + performance.now(), ctxNow = ctx.currentTime, rate = ctx.sampleRate;
      for (let i = 0; i + 48 <= buf.length; i += 48) {  // 1 ms pieces, each judged once
        const t = ctxNow - (buf.length - i) / rate;
        if (t <= scanned) continue;
        scanned = t;
        let e = 0;
        for (let j = i; j < i + 48; j++) e += buf[j] * buf[j];
        const isLoud = 10 * Math.log10(e / 48 + 1e-12) > -45;
        if (isLoud && !loud) window.onsets.push(wallNow - (ctxNow - t) * 1000);
        loud = isLoud;
      }
    }, 5);
  };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    if (pc.iceGatheringState === 'complete') done();
    else pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && done();
  });
  return pc.localDescription.sdp;
};
window.answer = (sdp) => window.pc.setRemoteDescription({type: 'answer', sdp});
window.stats = async () => {
  const o = {};
  (await window.pc.getStats()).forEach((r) => {
    if (r.type !== 'inbound-rtp' || r.kind !== 'audio') return;
    const n = r.jitterBufferEmittedCount || 1;
    o.jitter_buffer_delay_ms = 1000 * r.jitterBufferDelay / n;
    o.jitter_buffer_target_ms = 1000 * (r.jitterBufferTargetDelay || 0) / n;
  });
  return o;
};
</script></body></html>"""


async def trial(pw: Any, lead: int, pushes: int) -> dict[str, Any]:
    from aiortc import RTCPeerConnection, RTCSessionDescription

    browser = await pw.chromium.launch(executable_path=chromium_executable(), headless=True, args=list(CHROMIUM_ARGS))
    pc = RTCPeerConnection()
    try:
        page = await browser.new_page()
        await page.set_content(PAGE)
        offer = await page.evaluate("window.offer(0)")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        track = TtsTrack(lead_frames=lead)
        sender = pc.addTrack(track)
        encoder = GapTolerantOpusEncoder()
        if tune_opus_bitrate(sender, 32_000, encoder):  # as hub/session.py: idle packets, encoding on the loop
            track.opus_silence = True
            track.encoder = encoder
        await pc.setLocalDescription(await pc.createAnswer())
        await page.evaluate("sdp => window.answer(sdp)", pc.localDescription.sdp)
        await asyncio.sleep(3.0)
        t = np.arange(int(0.5 * TONE_RATE)) / TONE_RATE
        tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        pushed: list[float] = []
        rng = np.random.default_rng(lead)
        for _ in range(pushes):
            await asyncio.sleep(GAP_S + float(rng.uniform(0, 0.02)))  # not locked to the frame clock
            pushed.append(time.time() * 1000)
            for i in range(0, tone.size, TONE_RATE // 25):  # 40 ms chunks, as the AI server streams
                track.push(tone[i : i + TONE_RATE // 25].tobytes(), TONE_RATE)
            track.end_reply()
        await asyncio.sleep(1.5)
        onsets: list[float] = await page.evaluate("window.onsets")
        stats: dict[str, float] = await page.evaluate("window.stats()")
    finally:
        await browser.close()
        await pc.close()
    heard = [min(o - p for o in onsets if o > p - 50) for p in pushed if any(o > p - 50 for o in onsets)]
    return {"lead": lead, "heard_after_push_ms": heard, **stats}


async def run(ns: argparse.Namespace) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    trials: list[dict[str, Any]] = []
    async with async_playwright() as pw:
        for r in range(ns.rounds):
            for lead in ns.leads:
                got = await trial(pw, lead, ns.pushes)
                s = spread(got["heard_after_push_ms"])
                print(f"round {r} lead {lead}: heard {s['p50']:.1f} ms p50 (n {s['n']}), Chromium's jitter buffer "
                      f"{got.get('jitter_buffer_delay_ms', float('nan')):.1f} ms, target "
                      f"{got.get('jitter_buffer_target_ms', float('nan')):.1f} ms", flush=True)
                trials.append(got)
    by_lead = {}
    for lead in ns.leads:
        mine = [t for t in trials if t["lead"] == lead]
        by_lead[str(lead)] = {
            "heard_after_push_ms": spread([x for t in mine for x in t["heard_after_push_ms"]]),
            "jitter_buffer_delay_ms": float(np.mean([t.get("jitter_buffer_delay_ms", np.nan) for t in mine])),
            "jitter_buffer_target_ms": float(np.mean([t.get("jitter_buffer_target_ms", np.nan) for t in mine])),
        }
    return {
        "what": "reply audio pushed into the hub's TTS track -> first loud ms at a Chromium page's analyser",
        "clock": "wall clock on both sides (time.time; performance.timeOrigin + performance.now)",
        "cpu": stats_cpu(),
        "pushes_per_trial": ns.pushes, "rounds": ns.rounds,
        "by_lead_frames": by_lead,
        "trials": trials,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", type=int, default=15, help="replies per trial")
    parser.add_argument("--rounds", type=int, default=2, help="trials per lead, interleaved")
    parser.add_argument("--leads", type=lambda v: [int(x) for x in v.split(",")], default=[0, 1, 2],
                        help="frames sent ahead when a reply starts (the hub: 0 to a browser, 1 to a device)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ns = parser.parse_args()
    summary = asyncio.run(run(ns))
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / "browser_playout.json").write_text(json.dumps(summary, indent=2))
    for lead, d in summary["by_lead_frames"].items():
        h = d["heard_after_push_ms"]
        print(f"lead {lead}: heard {h['p50']:.1f} / {h['p95']:.1f} ms p50 / p95 (n {h['n']}); Chromium's jitter "
              f"buffer {d['jitter_buffer_delay_ms']:.1f} ms (target {d['jitter_buffer_target_ms']:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
