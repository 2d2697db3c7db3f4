"""Device agent settings: identity, hub and audio/camera backends, echo cancellation."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from shared.config.base import NailaSettings
from shared.ids import check_id


class DeviceSettings(NailaSettings):
    device_id: str = Field("pi-1", description="Device identity (letters, digits, _ . -)")
    device_room: str = Field("", description="Room the device is in")
    device_zone: str = Field("", description="Zone for camera alerts")
    device_hub_url: str = Field(
        "http://127.0.0.1:8080",
        description="Hub base URL; several hubs comma-separated, in order: the device stays on the hub that "
        "works and moves to the next when an attempt fails (issue 21)",
    )
    device_hub_id: str = Field(
        "",
        description="DEVICE_SIGNALING=mqtt: the HUB_ID of the hub this device belongs to, sent with its offers; "
        "while that hub is offline another one answers. Empty = the hub that answered last, else the hubs elect one",
    )
    device_hub_token: str = Field("", description="Bearer token for the hub (naila init writes one per device)")
    device_hub_ca: str = Field(
        "", description="PEM CA that signed the hub's HTTPS certificate (naila init: ca.crt); empty = system CAs"
    )
    device_audio_backend: Literal["sounddevice", "file", "none"] = Field(
        "sounddevice",
        description="sounddevice (ALSA/PortAudio), file (WAV in, WAV out) or none (a camera-only device: no "
        "microphone, no speaker)",
    )
    device_mic_file: str = Field("", description="WAV played as the microphone (file backend)")
    device_speaker_file: str = Field("", description="WAV that records the speaker (file backend)")
    device_camera: Literal["none", "picamera2", "v4l2", "file", "synthetic"] = Field(
        "none", description="Camera source: picamera2 (Pi camera module), v4l2 (USB webcam), file, synthetic"
    )
    device_camera_file: str = Field("", description="Video/image file for the file camera")
    device_camera_device: str = Field(
        "/dev/video0",
        description="DEVICE_CAMERA=v4l2: the webcam, a /dev/video* path or part of its name (naila device "
        "--list-devices); a recorded MJPEG/H.264 file is read the same way, looped",
    )
    device_camera_input_format: str = Field(
        "mjpeg",
        description="DEVICE_CAMERA=v4l2: what the webcam sends (mjpeg, yuyv422, h264...); empty = the driver's "
        "default. MJPEG lets a USB 2 webcam deliver 640x480 at 15+ fps",
    )
    device_state_file: str = Field(
        "",
        description="JSON file keeping the privacy switches (camera / microphone off) across restarts; "
        "empty = both are on at every start",
    )
    device_recording_max_s: Annotated[float, Field(gt=0, le=600)] = Field(
        30.0, description="Longest clip a recording request (media/request) may ask for, s"
    )
    device_aec_filter_ms: Annotated[int, Field(ge=20, le=1000)] = Field(
        200, description="Echo canceller filter length, ms"
    )
    device_aec_frame_ms: Annotated[int, Field(ge=5, le=40)] = Field(
        10, description="Echo canceller frame, ms"
    )
    # 6 s, not the 3 s bench/aec.py's room needed: a fresh device's first story ("Once, in the land of
    # Eldrador, ...") leaked its echo ~4.3 s into the reply, just after a 3 s guard let go, and barged in.
    device_echo_guard_s: Annotated[float, Field(ge=0, le=60)] = Field(
        6.0, description="Suppress residual echo until the canceller has heard this much far-end audio, s; 0 = off"
    )
    device_heartbeat_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        30.0, description="Status heartbeat period, s"
    )
    device_reconnect_max_s: Annotated[float, Field(gt=0, le=600)] = Field(
        10.0, description="Largest reconnect backoff, s"
    )
    device_reconnect_initial_s: Annotated[float, Field(gt=0, le=60)] = Field(
        0.5, description="First reconnect backoff (doubles up to DEVICE_RECONNECT_MAX_S), s"
    )
    device_rtp_timeout_s: Annotated[float, Field(gt=0, le=600)] = Field(
        5.0, description="Reconnect when no audio arrives from the hub for this long, s"
    )
    device_aec_rate: int = Field(16000, description="Sample rate the echo canceller runs at: 16000 or 48000 Hz")
    device_aec_ref_delay_ms: Annotated[int, Field(ge=0, le=500)] = Field(
        0, description="Known speaker-to-mic device latency removed from the AEC reference, ms"
    )
    device_sound_input: str = Field(
        "auto",
        description="Microphone: PortAudio device index or part of its name; empty = the default device; "
        "auto = a USB microphone if there is one, else the default",
    )
    device_sound_output: str = Field(
        "auto",
        description="Speaker: PortAudio device index or part of its name; empty = the default device; "
        "auto = with a USB microphone its own card, else a USB speaker, else the Pi's headphone jack; "
        "else the default",
    )
    device_jitter_prefetch: Annotated[int, Field(ge=0, le=20)] = Field(
        0, description="aiortc jitter-buffer prefetch for hub audio, packets (aiortc default 4); "
        "0 = each packet at once, as it arrives in order"
    )
    device_playback_prebuffer_ms: Annotated[int, Field(ge=0, le=500)] = Field(
        40, description="Hub audio queued before the speaker starts (and after an underrun), ms, in whole 20 ms "
        "packets (40 = 2); silence beyond it is dropped, so every reply starts behind the same short queue"
    )
    device_mqtt: bool = Field(True, description="Connect to the MQTT broker for status and commands")
    # After device_mqtt: its validator reads device_mqtt (pydantic validates in field order).
    device_signaling: Literal["http", "mqtt"] = Field(
        "http",
        description="How the WebRTC offer reaches the hub: http (POST DEVICE_HUB_URL/connect) or mqtt "
        "(naila/devices/<id>/signaling/offer, answer on .../signaling/answer; needs DEVICE_MQTT)",
    )
    # --- assist (issue 19): listening modes
    device_listening_mode: Literal["", "wake_word", "always", "push_to_talk"] = Field(
        "",
        description="What starts a turn on this device (wake_word, always, push_to_talk), reported in its MQTT "
        "status; the hub runs the wake word. Empty = the hub's HUB_LISTENING_MODE(S) decide (wake_word by default)",
    )
    # --- assist (issue 19): push-to-talk GPIO button
    device_ptt_gpio: Annotated[int, Field(ge=0, le=27)] | None = Field(
        None,
        description="BCM GPIO pin of a push-to-talk button, read with gpiozero; "
        "empty = no button. Setting it makes DEVICE_LISTENING_MODE push_to_talk unless that says otherwise",
    )
    device_ptt_active_low: bool = Field(
        True, description="The button pulls the pin to ground when pressed (internal pull-up); false = to 3.3 V"
    )
    device_ptt_debounce_ms: Annotated[int, Field(ge=0, le=500)] = Field(
        20, description="A button state counts once it has held this long, ms (contact bounce)"
    )

    @field_validator("device_ptt_gpio", mode="before")
    @classmethod
    def _ptt_gpio_empty(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v  # DEVICE_PTT_GPIO= means no button

    @model_validator(mode="after")
    def _ptt_implies_push_to_talk(self) -> DeviceSettings:
        # A device with a button is held to talk, unless DEVICE_LISTENING_MODE chose another mode.
        if self.device_ptt_gpio is not None and not self.device_listening_mode:
            self.device_listening_mode = "push_to_talk"
        return self

    @field_validator("device_aec_rate")
    @classmethod
    def _aec_rate(cls, v: int) -> int:
        if v not in (16000, 48000):
            raise ValueError("must be 16000 or 48000")
        return v

    @field_validator("device_signaling")
    @classmethod
    def _signaling_needs_mqtt(cls, v: str, info: ValidationInfo) -> str:
        if v == "mqtt" and not info.data.get("device_mqtt", True):
            raise ValueError("mqtt signaling needs DEVICE_MQTT=true")
        return v

    @field_validator("device_id")
    @classmethod
    def _safe_id(cls, v: str) -> str:
        return check_id(v, "device id")

    @field_validator("device_hub_id")
    @classmethod
    def _safe_hub_id(cls, v: str) -> str:
        return check_id(v.strip(), "hub id") if v.strip() else ""

    @field_validator("device_hub_url")
    @classmethod
    def _hub_urls(cls, v: str) -> str:
        urls = [u.strip() for u in v.split(",") if u.strip()]
        if not urls:
            raise ValueError("needs at least one hub URL")
        for url in urls:
            if not url.lower().startswith(("http://", "https://")):
                raise ValueError(f"{url[:80]!r} is not an http:// or https:// URL")
        return ",".join(urls)

    @property
    def hub_urls(self) -> list[str]:
        """DEVICE_HUB_URL as a list, in the configured order."""
        return self.device_hub_url.split(",")
