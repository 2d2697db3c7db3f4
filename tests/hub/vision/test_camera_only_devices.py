"""Camera-only and microphone-only devices through the real hub (issue 22): the real device agent,
real aiortc (VP8/Opus over DTLS/ICE on loopback), the hub's POST /connect, the fake AI server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiortc.codecs.opus import OpusEncoder

from device_agent.agent import DeviceAgent
from device_agent.audio_io import MemoryAudioBackend
from shared.config import AudioSettings, DeviceSettings, MqttSettings, VideoSettings, WebRTCSettings, load
from tests.hub.conftest import HubFactory, until
from tests.hub.vision.conftest import VisionAI, frames_grow

pytestmark = pytest.mark.integration


def agent(hub_url: str, device_id: str, **device: Any) -> DeviceAgent:
    settings = load(
        DeviceSettings,
        **{
            "device_id": device_id,
            "device_hub_url": hub_url,
            "device_mqtt": False,
            "device_reconnect_initial_s": 0.2,
            "device_reconnect_max_s": 1.0,
            "device_rtp_timeout_s": 1.0,
            **device,
        },
    )
    backend = MemoryAudioBackend() if settings.device_audio_backend != "none" else None
    return DeviceAgent(
        settings,
        audio_backend=backend,
        audio=load(AudioSettings, audio_echo_cancellation=False),
        video=load(VideoSettings, video_resolution="320x240", video_max_fps=10),
        mqtt=load(MqttSettings),
        webrtc=load(WebRTCSettings, webrtc_ice_servers=[]),
    )


async def test_a_camera_only_device_is_accepted_and_its_frames_reach_the_ai_server(
    make_hub: HubFactory, fake_ai: VisionAI
) -> None:
    hub = await make_hub()
    cam = agent(hub.url, "cam-only", device_audio_backend="none", device_camera="synthetic")
    assert cam.capabilities == ["video", "snapshot", "recording", "privacy"]
    await cam.start()
    try:
        assert await cam.wait_connected(15), cam.hub.last_error
        await frames_grow(fake_ai, "cam-only", 4, 20)
        pc = cam.hub.pc
        assert pc is not None and [t.kind for t in pc.getTransceivers()] == ["video"]
        session = hub.sessions["cam-only"]
        # No audio section, so no TTS track and nothing sent back to the device.
        assert [t.kind for t in session.pc.getTransceivers()] == ["video"]
        # No audio from the hub is normal for it: the link is not torn down after DEVICE_RTP_TIMEOUT_S.
        await asyncio.sleep(2.5)
        assert cam.hub.connected and cam.hub.connects == 1 and hub.sessions["cam-only"] is session
    finally:
        await cam.stop()


async def test_a_microphone_only_device_is_accepted_and_hears_the_reply_at_webrtc_audio_bitrate(
    make_hub: HubFactory,
) -> None:
    hub = await make_hub()
    hub.webrtc.webrtc_audio_bitrate = 24_000  # WEBRTC_AUDIO_BITRATE: the hub's TTS sender uses it too
    mic = agent(hub.url, "mic-only", device_camera="none")
    assert "video" not in mic.capabilities
    await mic.start()
    try:
        assert await mic.wait_connected(15), mic.hub.last_error
        await until(lambda: "mic-only" in hub.sessions, 5, "the hub's session")
        (audio,) = hub.sessions["mic-only"].pc.getTransceivers()
        assert audio.kind == "audio"
        reply_encoder = getattr(audio.sender, "_RTCRtpSender__encoder", None)
        assert isinstance(reply_encoder, OpusEncoder) and reply_encoder.codec.bit_rate == 24_000
    finally:
        await mic.stop()


def test_a_device_with_neither_microphone_nor_camera_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="DEVICE_AUDIO_BACKEND=none needs a camera"):
        agent("http://127.0.0.1:9", "nothing", device_audio_backend="none", device_camera="none")
