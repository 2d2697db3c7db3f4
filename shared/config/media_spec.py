"""The spec's configuration section (realtime-streaming-spec.md §12.2): WEBRTC_*, AUDIO_*, VIDEO_*, MEDIA_*."""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from shared.config.base import NailaSettings

_RES = re.compile(r"^(\d{2,5})x(\d{2,5})$")


def _csv(value: object) -> object:
    if isinstance(value, str):
        return [v.strip().lower() for v in value.split(",") if v.strip()]
    return value


class WebRTCSettings(NailaSettings):
    webrtc_ice_servers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="STUN/TURN URLs as a JSON list; empty on a local network",
    )
    webrtc_audio_bitrate: Annotated[int, Field(ge=6000, le=510000)] = Field(
        32000, description="Opus bitrate of both directions (device microphone, the hub's spoken reply), bits/s"
    )
    webrtc_video_bitrate: Annotated[int, Field(ge=50_000, le=20_000_000)] = Field(
        1_000_000, description="VP8 bitrate of a device camera, bits/s: where it starts and its ceiling "
        "(congestion reports from the hub lower it)"
    )

    @field_validator("webrtc_ice_servers", mode="before")
    @classmethod
    def _parse_ice(cls, v: object) -> object:
        if isinstance(v, str):
            v = v.strip()
            if not v:
                return []
            if v.startswith("["):
                return json.loads(v)
            return _csv(v)
        return v


class AudioSettings(NailaSettings):
    audio_vad_mode: Literal["webrtc", "silero"] = Field("webrtc", description="VAD engine at the hub")
    audio_end_of_turn: Literal["smart_turn", "silence"] = Field(
        "smart_turn",
        description="What ends a turn at the hub: smart_turn (an end-of-turn model asked at the first short "
        "pause, silence as the fallback) or silence (HUB_VAD_HANGOVER_MS of silence)",
    )
    audio_echo_cancellation: bool = Field(True, description="SpeexDSP echo cancellation on the device")
    audio_noise_suppression: bool = Field(True, description="Speex noise suppression on the device")


class VideoSettings(NailaSettings):
    video_resolution: str = Field("640x480", description="Camera resolution WIDTHxHEIGHT")
    video_max_fps: Annotated[int, Field(ge=1, le=60)] = Field(15, description="Camera frame rate cap")
    video_motion_threshold: Annotated[int, Field(ge=1, le=255)] = Field(
        25, description="Pixel difference counted as motion (0-255)"
    )
    video_process_every_n_frames: Annotated[int, Field(ge=1, le=1000)] = Field(
        3, description="Forward every Nth motion frame to detection"
    )

    @field_validator("video_resolution")
    @classmethod
    def _res(cls, v: str) -> str:
        if not _RES.match(v):
            raise ValueError("must look like 640x480")
        return v

    @property
    def resolution(self) -> tuple[int, int]:
        m = _RES.match(self.video_resolution)
        assert m is not None
        return int(m.group(1)), int(m.group(2))


class MediaSettings(NailaSettings):
    media_max_upload_size: Annotated[int, Field(ge=1024, le=1 << 31)] = Field(
        52_428_800, description="Largest accepted upload, bytes (50 MB)"
    )
    media_supported_image_formats: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["jpeg", "png", "webp", "gif"], description="Accepted image formats"
    )
    media_supported_audio_formats: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["opus", "wav", "mp3", "m4a"], description="Accepted audio formats"
    )
    media_supported_video_formats: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["mp4", "webm"], description="Accepted video formats"
    )
    media_snapshot_timeout_ms: Annotated[int, Field(ge=100, le=120_000)] = Field(
        5000, description="How long to wait for a device snapshot, ms"
    )

    @field_validator(
        "media_supported_image_formats",
        "media_supported_audio_formats",
        "media_supported_video_formats",
        mode="before",
    )
    @classmethod
    def _formats(cls, v: object) -> object:
        return _csv(v)
