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
from dataclasses import replace
from typing import Any

from device_agent.aec import EchoCanceller, make_echo_canceller
from device_agent.audio_io import AudioBackend, NoAudioBackend, make_backend
from device_agent.audio_pipeline import AudioPipeline, PipelineStats
from device_agent.camera import Camera, CameraOff, Snapshot, make_camera
from device_agent.commands import CommandFailed
from device_agent.mqtt_agent import MqttAgent
from device_agent.privacy import Privacy, load_privacy, save_privacy
from device_agent.ptt_button import PttButton, make_ptt_button
from device_agent.recorder import AUDIO_FORMATS, VIDEO_FORMATS, Clip, RecordingFailed, record_audio, record_video
from device_agent.webrtc_client import HubClient
from shared.config import AudioSettings, DeviceSettings, MqttSettings, VideoSettings, WebRTCSettings, load
from shared.version import naila_version

log = logging.getLogger(__name__)


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
            prebuffer_ms=settings.device_playback_prebuffer_ms,
        )
        self.camera = camera if camera is not None else make_camera(settings, self.video_settings)
        self.has_audio = not isinstance(self.backend, NoAudioBackend)
        if not self.has_audio and self.camera is None:
            raise ValueError("DEVICE_AUDIO_BACKEND=none needs a camera (DEVICE_CAMERA): the device would send nothing")
        # The privacy switches (issue 22), as last set (DEVICE_STATE_FILE), apply before anything streams.
        self.privacy = load_privacy(settings.device_state_file)
        self.pipeline.mic_muted = not self.privacy.microphone
        if self.camera is not None:
            self.camera.set_enabled(self.privacy.camera)
        self.mqtt: MqttAgent | None = None
        if settings.device_mqtt:
            self.mqtt = MqttAgent(
                self.mqtt_settings,
                settings,
                self,
                capabilities=self.capabilities,
                firmware_version=naila_version(),
                status_fields=self._status_fields,
                rng=rng,
            )
        # DEVICE_SIGNALING=mqtt: offers go through the MQTT link above instead of POST /connect.
        signaling = self.mqtt.signaling if self.mqtt is not None else None
        self.hub = HubClient(
            settings,
            self.webrtc_settings,
            self.pipeline,
            self.camera,
            clock=clock,
            rng=rng,
            signaling=signaling,
            audio=self.has_audio,
            listening_mode=self.listening_mode,
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
    def has_microphone(self) -> bool:
        return self.has_audio

    @property
    def capabilities(self) -> list[str]:
        caps = ["audio", "speaker"] if self.has_audio else []
        if self.has_audio and self.audio_settings.audio_echo_cancellation:
            caps.append("aec")
        if self.camera is not None:
            caps += ["video", "snapshot"]
        return [*caps, "recording", "privacy"]

    def _status_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "camera_enabled": self.camera.enabled if self.camera is not None else None,
            "listening_mode": self.listening_mode or None,
        }
        if self.has_audio:
            fields.update(volume=self.pipeline.volume, muted=self.pipeline.mic_muted,
                          microphone_enabled=not self.pipeline.mic_muted)
        return fields

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
            self.camera.name if self.camera else "none",
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
        self.set_microphone_enabled(not muted)

    def set_microphone_enabled(self, enabled: bool) -> None:
        """The microphone privacy switch (and ``mute``): silence before anything leaves the device, kept."""
        if not self.has_audio:
            raise CommandFailed("this device has no microphone")
        self.pipeline.mic_muted = not enabled
        self._keep(replace(self.privacy, microphone=enabled))
        log.info("microphone %s", "on" if enabled else "off (muted)")

    def set_camera_enabled(self, enabled: bool) -> None:
        """The camera privacy switch: off closes the camera and the stream carries black frames, kept."""
        if self.camera is None:
            raise CommandFailed("this device has no camera")
        self.camera.set_enabled(enabled)
        self._keep(replace(self.privacy, camera=enabled))

    @property
    def listening_mode(self) -> str:
        """The last ``listening_mode`` command's mode (kept), else DEVICE_LISTENING_MODE ("" = the hub decides)."""
        return self.privacy.listening_mode or self.settings.device_listening_mode

    def set_listening_mode(self, mode: str) -> None:
        """What starts a turn: kept, shown in the status, and told to the hub over the open control channel."""
        self._keep(replace(self.privacy, listening_mode=mode))
        self.hub.set_listening_mode(mode)
        log.info("listening mode %s", mode)

    def _keep(self, state: Privacy) -> None:
        self.privacy = state
        try:
            save_privacy(self.settings.device_state_file, state)
        except OSError as exc:  # the switch works now; only its survival across a restart is lost
            log.error("DEVICE_STATE_FILE=%s not written: %s", self.settings.device_state_file, exc)

    def restart_stream(self) -> None:
        self.hub.restart("restart_stream command")

    async def snapshot(self, quality: int, size: tuple[int, int] | None) -> Snapshot | None:
        if self.camera is None:
            return None
        try:
            return await self.camera.snapshot(quality, size)
        except CameraOff:
            raise CommandFailed("the camera is off (privacy)") from None

    async def record(self, media_type: str, duration_s: float, fmt: str) -> Clip:
        """A clip for a recording request; CommandFailed (one line) when it cannot be made."""
        if duration_s > self.settings.device_recording_max_s:
            raise CommandFailed(f"duration over DEVICE_RECORDING_MAX_S ({self.settings.device_recording_max_s:g} s)")
        try:
            if media_type == "audio":
                if not self.has_audio:
                    raise CommandFailed("this device has no microphone")
                if self.pipeline.mic_muted:
                    raise CommandFailed("the microphone is off (privacy)")
                if fmt not in AUDIO_FORMATS:
                    raise CommandFailed(f"audio recordings are {' or '.join(AUDIO_FORMATS)}, not {fmt!r}")
                return await record_audio(self.pipeline.taps, self.pipeline.rate, duration_s, fmt)
            if media_type == "video":
                if self.camera is None:
                    raise CommandFailed("this device has no camera")
                if fmt not in VIDEO_FORMATS:
                    raise CommandFailed(f"video recordings are {' or '.join(VIDEO_FORMATS)}, not {fmt!r}")
                return await record_video(self.camera, duration_s, self.webrtc_settings.webrtc_video_bitrate)
        except CameraOff:
            raise CommandFailed("the camera is off (privacy)") from None
        except RecordingFailed as exc:
            raise CommandFailed(str(exc)) from None
        raise CommandFailed(f"media_type must be audio or video, not {media_type!r}")

    async def publish_status(self) -> dict[str, Any]:
        if self.mqtt is None:
            return {}
        return await self.mqtt.publish_status()
