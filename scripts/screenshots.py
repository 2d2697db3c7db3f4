"""Fresh dashboard screenshots of a realistic household, for the README and docs/web.md (issue 24).

Brings up the demo's stack (mosquitto, the AI server with the shipped models, the hub; ``naila.stack``)
with two device agents in named rooms, as ``naila demo --stay`` does with one:

* ``hall-pi`` (Hall): its camera zooms out onto the street of ultralytics' bus.jpg (``naila.demo``'s
  clip), so the AI server raises a person alert with a snapshot; it asks "What do you see?";
* ``kitchen-pi`` (Kitchen, no camera): "What time is it?", then "Set a timer for ten minutes.".

The questions are ones code answers (the camera's detections, the clock, the timer), so the pictures
never show the small shipped LLM's occasional wrong fact.

Then real headless Chromium logs in to the dashboard, waits until it shows the camera's picture, the
alert card's snapshot, the running timer and the latency of the turns, and saves
``dashboard.png`` (1280 px wide) and ``dashboard-phone.png`` (390 px wide) into ``--out``
(default docs/screenshots). Needs scripts/setup.sh's venv with the vision extra and Debian's chromium:

    .venv/bin/python scripts/screenshots.py
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from naila.demo import STAY_TIMER_COMMAND, demo_camera_clip, demo_photo  # noqa: E402
from naila.stack import Stack, new_workdir  # noqa: E402

# The launch flags of tests/web/conftest.py, less the fake media devices (no page here captures).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
READY = {  # what the dashboard must show before the picture is taken
    "the camera's picture": "#cameras .tile img",
    "the alert's snapshot": "#alert-cards figure img.snapshot",
    "the running timer": "#timer-list li[data-kind=timer]",
    "the latency chart": "#latency-chart rect",
}


def household_mic(path: Path, *phrases: str, lead_s: float = 2.0) -> Path:
    """A device's microphone: each phrase after "Okay Nabu." and a pause (the hub listens for the wake
    word, the product default), in the shipped piper voice, with time for the answer in between."""
    import numpy as np

    from shared.audio import write_wav
    from shared.wakeword import piper_speech

    rate = 48_000
    parts = [np.zeros(int(lead_s * rate), np.int16)]
    for text in phrases:
        parts += [
            piper_speech("Okay Nabu.", rate),
            np.zeros(2 * rate, np.int16),
            piper_speech(text, rate),
            np.zeros(8 * rate, np.int16),
        ]
    write_wav(path, np.concatenate(parts), rate)
    return path


def start_household(stack: Stack, workdir: Path, web_token: str) -> None:
    photo = demo_photo()
    if photo is None:
        raise RuntimeError("ultralytics is not installed (the vision extra): no camera picture to show")
    stack.start_mosquitto()
    stack.extra_env["HUB_WEB_TOKEN"] = web_token
    stack.start_ai_server()
    stack.start_hub()
    stack.wait_grpc_connected()
    devices: dict[str, dict[str, str]] = {
        "hall-pi": {
            "DEVICE_ROOM": "Hall",
            "DEVICE_CAMERA": "file",
            "DEVICE_CAMERA_FILE": str(demo_camera_clip(photo, workdir / "hall-camera.mp4")),
            "DEVICE_MIC_FILE": str(household_mic(workdir / "hall.wav", "What do you see?", lead_s=6.0)),
        },
        "kitchen-pi": {
            "DEVICE_ROOM": "Kitchen",
            "DEVICE_CAMERA": "none",
            "DEVICE_CAMERA_FILE": "",
            "DEVICE_MIC_FILE": str(household_mic(workdir / "kitchen.wav", "What time is it?", STAY_TIMER_COMMAND)),
        },
    }
    for device_id, env in devices.items():
        stack.extra_env.update(
            DEVICE_ID=device_id,
            DEVICE_HUB_URL=stack.hub_url,
            DEVICE_AUDIO_BACKEND="file",
            DEVICE_SPEAKER_FILE=str(workdir / f"{device_id}-speaker.wav"),
            **env,
        )
        stack.progress(f"[screenshots] starting {device_id} ({env['DEVICE_ROOM']})")
        stack._spawn(device_id, [sys.executable, "-m", "naila", "device"])


async def shoot(hub_url: str, web_token: str, out: Path, within_s: float) -> list[Path]:
    from playwright.async_api import ViewportSize, async_playwright

    exe = shutil.which("chromium")
    if exe is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium)")
    saved: list[Path] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            for name, viewport in (
                ("dashboard.png", ViewportSize(width=1280, height=900)),
                ("dashboard-phone.png", ViewportSize(width=390, height=844)),
            ):
                page: Any = await (await browser.new_context(viewport=viewport)).new_page()
                await page.goto(f"{hub_url}/dashboard")
                await page.fill("#login-token", web_token)
                await page.click("#login-submit")
                await page.wait_for_url(f"{hub_url}/dashboard")
                for what, selector in READY.items():
                    print(f"[screenshots] {name}: waiting for {what}", flush=True)
                    await page.locator(selector).first.wait_for(timeout=within_s * 1000)
                await page.wait_for_function(
                    "() => [...document.querySelectorAll('#cameras img, #alert-cards img')]"
                    ".every(i => i.complete && i.naturalWidth > 0)",
                    timeout=within_s * 1000,
                )
                await page.wait_for_timeout(1500)  # the countdown and the mic sparklines settle
                path = out / name
                await page.screenshot(path=str(path), full_page=True)
                saved.append(path)
                print(f"[screenshots] saved {path}", flush=True)
        finally:
            await browser.close()
    return saved


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots", help="folder for the PNGs")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for each panel")
    ns = parser.parse_args(argv)
    ns.out.mkdir(parents=True, exist_ok=True)
    workdir = new_workdir("naila-screenshots-")
    stack = Stack(workdir=workdir, progress=lambda m: print(m, flush=True), listening_mode="wake_word")
    web_token = secrets.token_urlsafe(18)
    try:
        start_household(stack, workdir, web_token)
        asyncio.run(shoot(stack.hub_url, web_token, ns.out, ns.timeout))
        return 0
    except (RuntimeError, TimeoutError) as exc:
        print(f"[screenshots] FAILED: {exc}", file=sys.stderr)
        for name, part in stack.parts.items():
            print(f"--- {name} log tail ---\n{part.tail()}", file=sys.stderr)
        return 1
    finally:
        for device_id in ("hall-pi", "kitchen-pi"):
            if device_id in stack.parts:
                stack.parts.pop(device_id).stop()
        stack.stop()
        print(f"[screenshots] stopped everything; logs in {workdir}", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
