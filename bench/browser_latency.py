"""A real browser as the device: end of speech -> the reply heard, on the page's own audio clock,
over several questions and conversations (the browser test, tests/web/test_browser_voice.py, times
one question).

Real stack as processes (mosquitto, the AI server, the hub with its web app on, defaults but the
web token), shipped models, and headless Chromium (Debian's, driven by playwright) as the person:
each conversation is a new browser whose fake microphone plays one WAV through Chromium's own
capture path and audio processing (echo cancellation, noise suppression, gain control on, as the
page asks): a few seconds of quiet, then the questions, each followed by ``--gap`` seconds of
quiet (a reply still playing then is interrupted by the next question, as a person would). The
page is the product's device page (hub/web/static/js/device.js) in hands-free mode; each turn's
figure is the one it shows the user: the end of the last loud 10 ms of its microphone -> the first
loud 10 ms of the reply's stream, both read from the analysers' buffers on its AudioContext clock.
The talker's voice alternates by conversation (espeak-ng, the shipped piper voice), like
bench/e2e_latency.py.

Usage: python bench/browser_latency.py [--conversations 4] [--questions 5] [--gap 10]
writes bench/results/browser_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.e2e_latency import GOAL_P50_MS, QUESTIONS, VOICES  # noqa: E402
from bench.stats import cpu as stats_cpu  # noqa: E402
from bench.stats import llm_file, pct  # noqa: E402
from naila.browser import chromium_executable, device_args, log_in  # noqa: E402
from naila.stack import Stack, new_workdir  # noqa: E402
from shared.audio import espeak, write_wav  # noqa: E402

RATE = 48_000
PEER_PROBE = """(() => {
  const Native = window.RTCPeerConnection;
  window.__peers = [];
  window.RTCPeerConnection = function (...args) { const pc = new Native(...args); window.__peers.push(pc); return pc; };
  window.RTCPeerConnection.prototype = Native.prototype;
})();"""
# The reply stream's jitter buffer as Chromium reports it (inbound-rtp, audio), over the conversation.
RTC_STATS = """async () => {
  const pc = (window.__peers || []).at(-1);
  if (!pc) return null;
  const out = {};
  (await pc.getStats()).forEach(r => {
    if (r.type === "inbound-rtp" && r.kind === "audio") {
      const n = r.jitterBufferEmittedCount || 1;
      out.jitter_buffer_delay_ms = 1000 * r.jitterBufferDelay / n;
      out.jitter_buffer_target_ms = 1000 * (r.jitterBufferTargetDelay || 0) / n;
      out.jitter_buffer_minimum_ms = 1000 * (r.jitterBufferMinimumDelay || 0) / n;
      out.jitter_ms = 1000 * r.jitter;
      out.packets_received = r.packetsReceived;
      out.concealed_samples = r.concealedSamples;
      out.total_samples_received = r.totalSamplesReceived;
    }
    if (r.type === "media-playout") {
      out.playout_delay_ms = 1000 * r.totalPlayoutDelay / (r.totalSamplesCount || 1);
    }
  });
  return out;
}"""
LEAD_S = 3.0  # quiet before the first question: the page connects meanwhile


def speech(text: str, voice: str) -> np.ndarray[Any, Any]:
    if voice == "piper":
        from shared.wakeword import piper_speech

        return piper_speech(text, RATE)
    return espeak(text, rate=RATE)


def microphone(path: Path, questions: list[str], voice: str, gap_s: float) -> Path:
    """The conversation's WAV: LEAD_S of quiet, then each question and ``gap_s`` of quiet."""
    parts = [np.zeros(round(LEAD_S * RATE), dtype=np.int16)]
    for q in questions:
        parts += [speech(q, voice), np.zeros(round(gap_s * RATE), dtype=np.int16)]
    write_wav(path, np.concatenate(parts), RATE)
    return path


async def conversation(pw: Any, stack: Stack, web_token: str, wav: Path, questions: int,
                       within_s: float) -> list[dict[str, Any]]:
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    browser = await pw.chromium.launch(executable_path=chromium_executable(), headless=True,
                                       args=device_args(wav))
    try:
        context = await browser.new_context()
        # Keep the page's peer connections reachable, for their receive statistics at the end.
        await context.add_init_script(PEER_PROBE)
        page = await context.new_page()
        await log_in(page, stack.hub_url, web_token)
        await page.check("#mode-handsfree")
        await page.click("#start")  # getUserMedia starts the WAV
        await page.locator("#conn-state[data-state=connected]").wait_for(timeout=15_000)
        device_id = (await page.locator("#device-id").text_content()) or ""
        with contextlib.suppress(PlaywrightTimeout):  # fewer answered: the summary says how many
            await page.wait_for_function(  # a function, not a string: the page's CSP forbids eval
                "n => document.querySelectorAll('#turns li.turn[data-heard-after-ms]').length >= n",
                arg=questions, timeout=within_s * 1000, polling=500,
            )
        await asyncio.sleep(2.0)  # the last reply's text and timing
        rtc = await page.evaluate(RTC_STATS)
        found = await page.eval_on_selector_all(
            "#turns li.turn",
            """cards => cards.map(c => ({
                transcript: c.dataset.transcript || "",
                reply: c.dataset.reply || "",
                heard_after_ms: c.dataset.heardAfterMs ? Number(c.dataset.heardAfterMs) : null,
            }))""",
        )
    finally:
        await browser.close()
    hub_turns: list[dict[str, Any]] = [t for t in stack.turns() if t.get("device_id") == device_id]
    out = []
    for k, card in enumerate(reversed(found), start=1):  # the page lists the newest first
        hub = next((t for t in hub_turns if t.get("transcript") == card["transcript"]), None)
        timing: dict[str, Any] = dict(hub.get("timing") or {}) if hub else {}
        out.append({**card, "turn": k, "device_id": device_id,
                    "hub_end_to_playout_ms": timing.get("hub_end_to_playout_ms")})
    if out:
        out[-1]["rtc"] = rtc
    return out


def summary_of(samples: list[dict[str, Any]]) -> dict[str, Any]:
    heard = [s["heard_after_ms"] for s in samples if s["heard_after_ms"] is not None]
    hub = [s["hub_end_to_playout_ms"] for s in samples if s.get("hub_end_to_playout_ms") is not None]
    return {"n": len(heard), "heard_after_ms": {"p50": pct(heard, 0.5), "p95": pct(heard, 0.95)},
            "hub_end_to_playout_ms": {"p50": pct(hub, 0.5), "p95": pct(hub, 0.95)}}


async def run(ns: argparse.Namespace) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    load_at_start = os.getloadavg()
    web_token = secrets.token_urlsafe(18)
    stack = Stack(workdir=new_workdir("naila-bench-"), progress=lambda m: print(m.replace("[demo]", "[bench]")),
                  extra_env={"HUB_WEB_TOKEN": web_token})
    samples: list[dict[str, Any]] = []
    try:
        stack.start_mosquitto()
        stack.start_ai_server()
        stack.start_hub()
        stack.wait_grpc_connected()
        async with async_playwright() as pw:
            for c in range(ns.conversations):
                voice = ns.voices[c % len(ns.voices)]
                start = (c * ns.questions) % len(QUESTIONS)
                questions = [QUESTIONS[(start + k) % len(QUESTIONS)] for k in range(ns.questions)]
                wav = microphone(stack.workdir / f"mic-{c}.wav", questions, voice, ns.gap)
                within = LEAD_S + ns.questions * (ns.gap + 4) + 30
                got = await conversation(pw, stack, web_token, wav, ns.questions, within)
                for s in got:
                    s.update(conversation=c, voice=voice)
                    print(f"  {voice:6} turn {s['turn']} heard after {s['heard_after_ms']} ms "
                          f"(hub END->playout {s['hub_end_to_playout_ms']} ms)  {s['transcript']!r} -> "
                          f"{s['reply'][:50]!r}", flush=True)
                if got and got[-1].get("rtc"):
                    print(f"  {voice:6} the reply stream in Chromium: {got[-1]['rtc']}", flush=True)
                if len(got) < ns.questions:
                    print(f"  {voice:6} conversation {c}: {len(got)} of {ns.questions} questions answered", flush=True)
                samples += got
    finally:
        stack.stop()
    return {
        "what": "a real Chromium device: end of its speech -> the reply heard (the device page's own figure)",
        "clock": "the page's AudioContext clock (both analysers' sample buffers)",
        "cpu": stats_cpu(),
        "machine": f"2-core CPU, shipped models (Whisper tiny.en int8, {llm_file()}, piper joe-us), "
                   "Chromium on the same cores",
        "load_average_1_5_15": {"start": [round(x, 2) for x in load_at_start],
                                "end": [round(x, 2) for x in os.getloadavg()]},
        "conversations": ns.conversations,
        "questions_per_conversation": ns.questions,
        "gap_s": ns.gap,
        "voices": ns.voices,
        "goal_p50_ms": GOAL_P50_MS,
        "all_turns": summary_of(samples),
        "turn_1": summary_of([s for s in samples if s["turn"] == 1]),
        "later_turns": summary_of([s for s in samples if s["turn"] > 1]),
        "by_voice": {v: summary_of([s for s in samples if s["voice"] == v]) for v in ns.voices},
        "samples": samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=4, help="browsers in turn (each a new device)")
    parser.add_argument("--questions", type=int, default=5, help="questions per conversation")
    parser.add_argument("--gap", type=float, default=10.0, help="quiet after each question, s")
    parser.add_argument("--voices", type=lambda v: v.split(","), default=VOICES,
                        help="talker voices (espeak, piper), one per conversation in turn")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ns = parser.parse_args()
    summary = asyncio.run(run(ns))
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / "browser_latency.json").write_text(json.dumps(summary, indent=2))
    for name in ("all_turns", "turn_1", "later_turns"):
        d = summary[name]
        print(f"{name}: heard after p50 / p95 {d['heard_after_ms']['p50']:.0f} / {d['heard_after_ms']['p95']:.0f} ms, "
              f"hub END->playout {d['hub_end_to_playout_ms']['p50']:.0f} ms p50 (n {d['n']})")
    for v, d in summary["by_voice"].items():
        h = d["heard_after_ms"]
        print(f"{v}: heard after p50 / p95 {h['p50']:.0f} / {h['p95']:.0f} ms (n {d['n']})")
    print(f"load average at the start {summary['load_average_1_5_15']['start']}, "
          f"at the end {summary['load_average_1_5_15']['end']}; wrote {ns.out / 'browser_latency.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
