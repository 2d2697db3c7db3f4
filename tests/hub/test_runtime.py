"""The hub process's runtime (hub/runtime.py, issue 21): asyncio's loop by default, uvloop with
HUB_UVLOOP (asyncio's when it is missing), one BLAS thread; and the real hub on uvloop with a real
aiortc device and real gRPC."""

from __future__ import annotations

import asyncio
import logging
import sys

import numpy as np
import pytest

from hub.media_in import InlineAudioDecoder
from hub.runtime import loop_factory, run
from hub.server import run_hub
from shared.config import HubSettings, WebRTCSettings, load

from .conftest import RATE, FakeAI, connect_device, until

pytestmark = pytest.mark.integration


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_the_hub_runs_on_asyncios_loop_by_default_and_on_uvloop_when_asked() -> None:
    assert load(HubSettings).hub_uvloop is False
    pytest.importorskip("uvloop")  # an option (the dev extra has it)
    assert run(loop_module(), use_uvloop=True).startswith("uvloop")
    assert run(loop_module(), use_uvloop=False).startswith("asyncio")
    assert loop_factory(False) is None


def test_without_uvloop_installed_it_says_so_and_runs_on_asyncios_loop(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    with caplog.at_level(logging.WARNING, logger="naila.hub.runtime"):
        assert run(loop_module(), use_uvloop=True).startswith("asyncio")
    assert "uvloop is not installed" in caplog.text


def test_numpys_blas_gets_one_thread() -> None:
    from threadpoolctl import threadpool_info  # type: ignore[import-untyped]

    run(loop_module(), use_uvloop=False)
    blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert blas and set(blas) == {1}  # numpy's OpenBLAS (and any other BLAS loaded in this process)


def test_a_hub_on_uvloop_serves_a_real_device_end_to_end(loopback_ice: None, phrase: np.ndarray) -> None:
    """aiortc (ICE, DTLS, RTP, the inline Opus decoder), aiohttp and the gRPC link on uvloop: an
    utterance goes up, the reply comes back to the device."""
    pytest.importorskip("uvloop")

    async def main() -> None:
        assert (await loop_module()).startswith("uvloop")
        ai = FakeAI()
        await ai.start()
        settings = load(
            HubSettings,
            hub_host="127.0.0.1",
            hub_ai_server=f"127.0.0.1:{ai.port}",
            hub_allow_unauthenticated=True,
            hub_listening_mode="always",
            hub_mqtt=False,
        )
        hub = await run_hub(settings, WebRTCSettings(webrtc_ice_servers=[]), port=0)
        dev = None
        try:
            assert await hub.link.wait_connected(5)
            dev = await connect_device(hub.url, "pi-uv")
            silence = np.zeros(RATE // 2, dtype=np.int16)
            dev.mic.say(np.concatenate([silence, phrase, silence, silence, silence]))
            await until(lambda: len(ai.utterances("pi-uv")) == 1, 15, "the utterance upstream")
            await until(lambda: dev is not None and dev.loud_frames() >= 40, 10, "the reply at the device")
            [receiver] = [t.receiver for t in hub.sessions["pi-uv"].pc.getTransceivers() if t.kind == "audio"]
            decoder = getattr(receiver, "_RTCRtpReceiver__decoder_queue")  # noqa: B009 (name-mangled)
            assert isinstance(decoder, InlineAudioDecoder) and decoder.frames > 50
        finally:
            if dev is not None:
                await dev.close()
            await hub.stop()
            await ai.stop()

    run(main(), use_uvloop=True)
