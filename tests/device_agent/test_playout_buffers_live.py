"""A live device session (real aiortc) runs with the configured reply buffers (issue 20)."""

from __future__ import annotations

import pytest

from device_agent.audio_io import MemoryAudioBackend
from tests.conftest import free_port
from tests.device_agent.conftest import Answerer
from tests.device_agent.test_integration import make_agent

pytestmark = pytest.mark.integration


async def test_the_device_receiver_and_playback_run_with_the_configured_buffers(
    loopback_ice: None, answerers: list[Answerer]
) -> None:
    hub = Answerer(free_port())
    await hub.start()
    answerers.append(hub)
    agent = make_agent(
        hub.url, "it-playout", MemoryAudioBackend(), device_jitter_prefetch=1, device_playback_prebuffer_ms=20
    )
    await agent.start()
    try:
        assert await agent.wait_connected(10), agent.hub.last_error
        pc = agent.hub.pc
        assert pc is not None
        [receiver] = [t.receiver for t in pc.getTransceivers() if t.kind == "audio"]
        # aiortc's default is JitterBuffer(capacity=16, prefetch=4): 80 ms before the first packet.
        assert receiver._RTCRtpReceiver__jitter_buffer._prefetch == 1  # type: ignore[attr-defined]
        assert agent.pipeline.playback.prebuffer_ms == 20
    finally:
        await agent.stop()
