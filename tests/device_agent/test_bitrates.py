"""WEBRTC_AUDIO_BITRATE and WEBRTC_VIDEO_BITRATE reach the encoders of a live session (issue 22)."""

from __future__ import annotations

import pytest
from aiortc.codecs.opus import OpusEncoder

from device_agent.audio_io import MemoryAudioBackend
from shared.config import WebRTCSettings, load
from shared.rtc_tuning import VP8_FLOOR, CappedVp8Encoder
from tests.conftest import free_port
from tests.device_agent.conftest import Answerer
from tests.device_agent.test_integration import make_agent, wait_until

pytestmark = pytest.mark.integration


def encoder(sender: object) -> object:
    return getattr(sender, "_RTCRtpSender__encoder", None)


async def test_the_configured_bitrates_are_what_the_opus_and_vp8_encoders_run_at(
    loopback_ice: None, answerers: list[Answerer]
) -> None:
    hub = Answerer(free_port())
    await hub.start()
    answerers.append(hub)
    agent = make_agent(hub.url, "it-bitrate", MemoryAudioBackend(), camera="synthetic")
    agent.webrtc_settings = agent.hub.webrtc = load(
        WebRTCSettings, webrtc_ice_servers=[], webrtc_audio_bitrate=24_000, webrtc_video_bitrate=300_000
    )
    await agent.start()
    try:
        assert await agent.wait_connected(10), agent.hub.last_error
        assert await wait_until(lambda: hub.video_frames > 5, 5)
        pc = agent.hub.pc
        assert pc is not None
        senders = {t.kind: t.sender for t in pc.getTransceivers()}
        opus, vp8 = encoder(senders["audio"]), encoder(senders["video"])
        assert isinstance(opus, OpusEncoder) and opus.codec.bit_rate == 24_000
        assert isinstance(vp8, CappedVp8Encoder) and vp8.codec is not None
        assert vp8.codec.bit_rate == 300_000  # what libvpx was opened with (CBR: min = max = this)
        assert "VP8" in pc.remoteDescription.sdp
    finally:
        await agent.stop()


def test_congestion_lowers_vp8_but_never_above_the_setting() -> None:
    enc = CappedVp8Encoder(2_000_000)  # above aiortc's own 1.5 Mbit/s ceiling: the setting wins
    assert enc.target_bitrate == 2_000_000
    enc.target_bitrate = 5_000_000  # a REMB asking for more
    assert enc.target_bitrate == 2_000_000
    enc.target_bitrate = 400_000  # a congested link
    assert enc.target_bitrate == 400_000
    enc.target_bitrate = 1_000
    assert enc.target_bitrate == VP8_FLOOR
