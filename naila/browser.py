"""Headless Chromium as a browser device: the launch flags and the page steps that tests/web and
bench/browser_latency.py share (Debian's ``chromium`` driven by playwright)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

# From the project's dependency notes: what makes Debian's Chromium a headless WebRTC device.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
]


def chromium_executable() -> str:
    exe = shutil.which("chromium")
    if exe is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium); scripts/setup.sh installs it")
    return exe


def device_args(fake_audio: Path | None = None) -> list[str]:
    """The flags of a browser device; ``fake_audio``: a WAV its microphone plays once (through
    Chromium's own capture path and audio processing, as a real microphone would)."""
    args = list(CHROMIUM_ARGS)
    if fake_audio is not None:
        # %noloop: say it once, then silence (by default Chromium repeats the file forever).
        args.append(f"--use-file-for-fake-audio-capture={fake_audio}%noloop")
    return args


async def log_in(page: Any, base: str, token: str, next_path: str = "/") -> None:
    """Log in through the real login form, as a person would."""
    await page.goto(f"{base}{next_path}")
    if not page.url.startswith(f"{base}/login"):
        raise AssertionError(f"expected the login page, got {page.url}")
    await page.fill("#login-token", token)
    await page.click("#login-submit")
    await page.wait_for_url(f"{base}{next_path}")
