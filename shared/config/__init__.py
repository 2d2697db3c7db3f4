"""Typed configuration. Each group reads env vars named exactly like its fields (upper case)."""

from shared.config.ai_server import AIServerSettings
from shared.config.base import ConfigError, NailaSettings, load
from shared.config.device import DeviceSettings
from shared.config.hub import HubSettings
from shared.config.media_spec import AudioSettings, MediaSettings, VideoSettings, WebRTCSettings
from shared.config.mqtt import MqttSettings

ALL_GROUPS: tuple[type[NailaSettings], ...] = (
    WebRTCSettings,
    AudioSettings,
    VideoSettings,
    MediaSettings,
    MqttSettings,
    HubSettings,
    AIServerSettings,
    DeviceSettings,
)

__all__ = [
    "ALL_GROUPS",
    "AIServerSettings",
    "AudioSettings",
    "ConfigError",
    "DeviceSettings",
    "HubSettings",
    "MediaSettings",
    "MqttSettings",
    "NailaSettings",
    "VideoSettings",
    "WebRTCSettings",
    "load",
]
