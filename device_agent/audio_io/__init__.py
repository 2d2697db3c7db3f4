"""Audio I/O behind one duplex interface: sound card, WAV files, or memory (tests, demo, benchmarks)."""

from __future__ import annotations

from device_agent.audio_io.base import (
    BACKEND_RATE,
    BLOCK_MS,
    AudioBackend,
    DuplexCallback,
    NoAudioBackend,
    PacedAudioBackend,
)
from device_agent.audio_io.echo_path import EchoPath, PartitionedConvolver, synthetic_room_ir
from device_agent.audio_io.file import FileAudioBackend
from device_agent.audio_io.memory import MemoryAudioBackend, TimedBlock
from device_agent.audio_io.sounddevice_backend import SoundDeviceBackend
from shared.config import ConfigError, DeviceSettings


def make_backend(settings: DeviceSettings) -> AudioBackend:
    """The backend ``DEVICE_AUDIO_BACKEND`` names, configured from the device settings."""
    if settings.device_audio_backend == "none":
        return NoAudioBackend()
    if settings.device_audio_backend == "file":
        if not settings.device_mic_file and not settings.device_speaker_file:
            raise ConfigError(
                "DEVICE_AUDIO_BACKEND=file needs DEVICE_MIC_FILE and/or DEVICE_SPEAKER_FILE"
            )
        return FileAudioBackend(settings.device_mic_file or None, settings.device_speaker_file or None)
    return SoundDeviceBackend(settings.device_sound_input, settings.device_sound_output)


__all__ = [
    "BACKEND_RATE",
    "BLOCK_MS",
    "AudioBackend",
    "DuplexCallback",
    "EchoPath",
    "FileAudioBackend",
    "MemoryAudioBackend",
    "NoAudioBackend",
    "PacedAudioBackend",
    "PartitionedConvolver",
    "SoundDeviceBackend",
    "TimedBlock",
    "make_backend",
    "synthetic_room_ir",
]
