"""DeviceAgent: audio backend + echo cancellation + WebRTC link + camera + MQTT, started and stopped as one.

Usable in-process (tests, ``naila demo``, benchmarks)::

    backend = MemoryAudioBackend(echo_path=EchoPath())
    agent = DeviceAgent(load(DeviceSettings, device_hub_url=url), audio_backend=backend)
    await agent.start()
    await agent.wait_connected(10)
    backend.play_into_mic(espeak("what time is it", 16000), 16000)
    ...
    await agent.stop()
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

from device_agent.aec import EchoCanceller, make_echo_canceller
from device_agent.audio_io import AudioBackend, make_backend
from device_agent.audio_pipeline import AudioPipeline, PipelineStats
from device_agent.camera import Camera, Snapshot, make_camera
from device_agent.mqtt_agent import MqttAgent
from device_agent.ptt_button import PttButton, make_ptt_button
from device_agent.webrtc_client import HubClient
from shared.config import AudioSettings, DeviceSettings, MqttSettings, VideoSettings, WebRTCSettings, load

log = logging.getLogger(__name__)


def firmware_version() -> str:
    try:
        return metadata.version("naila")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


class DeviceAgent:
    """One device. Settings not given are read from the environment; components not given are built."""

    def __init__(
        self,
        settings: DeviceSettings,
        *,
        audio_backend: AudioBackend | None = None,
        audio: AudioSettings | None = None,
        video: VideoSettings | None = None,
        mqtt: MqttSettings | None = None,
        webrtc: WebRTCSettings | None = None,
        canceller: EchoCanceller | None = None,
        camera: Camera | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.audio_settings = audio or load(AudioSettings)
        self.video_settings = video or load(VideoSettings)
        self.mqtt_settings = mqtt or load(MqttSettings)
        self.webrtc_settings = webrtc or load(WebRTCSettings)
        self.backend = audio_backend or make_backend(settings)
        self.pipeline = AudioPipeline(
            canceller or make_echo_canceller(settings, self.audio_settings),
            rate=self.backend.rate,
            ref_delay_ms=settings.device_aec_ref_delay_ms,
            echo_guard_s=settings.device_echo_guard_s,
        )
        self.camera = camera if camera is not None else make_camera(settings, self.video_settings)
        self.mqtt: MqttAgent | None = None
        if settings.device_mqtt:
            self.mqtt = MqttAgent(
                self.mqtt_settings,
                settings,
                self,
                capabilities=self.capabilities,
                firmware_version=firmware_version(),
                status_fields=lambda: {"volume": self.pipeline.volume, "muted": self.pipeline.mic_muted},
                rng=rng,
            )
        # DEVICE_SIGNALING=mqtt: offers go through the MQTT link above instead of POST /connect.
        signaling = self.mqtt.signaling if self.mqtt is not None else None
        self.hub = HubClient(
            settings, self.webrtc_settings, self.pipeline, self.camera, clock=clock, rng=rng, signaling=signaling
        )
        # DEVICE_PTT_GPIO: a push-to-talk button (gpiozero is imported only then); raises ValueError.
        self.ptt: PttButton | None = make_ptt_button(
            settings.device_ptt_gpio,
            self.hub.set_ptt,
            active_low=settings.device_ptt_active_low,
            debounce_ms=settings.device_ptt_debounce_ms,
        )
        if self.ptt is not None:
            self.hub.ptt_pressed = self.ptt.pressed
        self._started = False

    @property
    def capabilities(self) -> list[str]:
        caps = ["audio", "speaker"]
        if self.audio_settings.audio_echo_cancellation:
            caps.append("aec")
        if self.camera is not None:
            caps += ["video", "snapshot"]
        return caps

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("device agent already started")
        s = self.settings
        log.info(
            "device %s (room %s) starting: audio %s, echo canceller %s, camera %s, hub %s, mqtt %s",
            s.device_id,
            s.device_room or "-",
            self.backend.describe(),
            self.pipeline.aec.canceller.name,
            self.camera.source.name if self.camera else "none",
            self.hub.target,
            f"{self.mqtt_settings.mqtt_host}:{self.mqtt_settings.mqtt_port}" if self.mqtt else "off",
        )
        await self.backend.start(self.pipeline.duplex)
        self._started = True
        await self.hub.start()
        if self.mqtt is not None:
            await self.mqtt.start()

    async def stop(self) -> None:
        """Stop everything (idempotent): MQTT says goodbye first, then the stream and the sound card."""
        if self.ptt is not None:  # built with the agent, so released even if it never started
            self.ptt.close()
            self.ptt = None
        if not self._started:
            return
        self._started = False
        log.info("device %s stopping", self.settings.device_id)
        if self.mqtt is not None:
            await self.mqtt.stop()
        await self.hub.stop()
        await self.backend.stop()
        if self.camera is not None:
            self.camera.close()
        self.pipeline.close()
        log.info("device %s stopped: %s", self.settings.device_id, self.stats())

    async def wait_connected(self, within_s: float) -> bool:
        """Wait until the WebRTC link to the hub is up."""
        return await self.hub.wait_connected(within_s)

    def stats(self) -> PipelineStats:
        return self.pipeline.stats()

    # -- DeviceControl (what MQTT commands act on) -----------------------------------------
    def set_volume(self, level: int) -> None:
        self.pipeline.volume = level
        log.info("speaker volume %d", level)

    def set_mic_muted(self, muted: bool) -> None:
        self.pipeline.mic_muted = muted
        log.info("microphone %s", "muted" if muted else "unmuted")

    def restart_stream(self) -> None:
        self.hub.restart("restart_stream command")

    async def snapshot(self, quality: int, size: tuple[int, int] | None) -> Snapshot | None:
        if self.camera is None:
            return None
        return await self.camera.snapshot(quality, size)

    async def publish_status(self) -> dict[str, Any]:
        if self.mqtt is None:
            return {}
        return await self.mqtt.publish_status()
