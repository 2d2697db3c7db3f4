"""What this machine has: microphones and speakers (PortAudio), cameras (V4L2); ``naila device --list-devices``.

Cameras come from sysfs (``/sys/class/video4linux/videoN/name``) and their pixel formats from the
``VIDIOC_ENUM_FMT`` ioctl when the node can be opened; a node that cannot (busy, no permission) is
still listed, without formats. ``DEVICE_CAMERA_DEVICE`` may name a camera by part of its name,
like ``DEVICE_SOUND_INPUT`` does for a microphone (PortAudio's own substring match).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.config import ConfigError

SYSFS_V4L = Path("/sys/class/video4linux")

# struct v4l2_fmtdesc (linux/videodev2.h), 64 bytes; VIDIOC_ENUM_FMT = _IOWR('V', 2, struct v4l2_fmtdesc).
V4L2_BUF_TYPE_VIDEO_CAPTURE = 1
VIDIOC_ENUM_FMT = 0xC0405602


class _FmtDesc(ctypes.Structure):
    _fields_ = [
        ("index", ctypes.c_uint32),
        ("type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("description", ctypes.c_char * 32),
        ("pixelformat", ctypes.c_uint32),
        ("mbus_code", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32 * 3),
    ]


@dataclass(frozen=True)
class CameraInfo:
    path: str
    name: str
    formats: list[str] = field(default_factory=list)  # fourcc and description, e.g. "MJPG (Motion-JPEG)"


@dataclass(frozen=True)
class SoundDeviceInfo:
    index: int
    name: str
    inputs: int
    outputs: int
    default_rate: int
    host_api: str


def fourcc(code: int) -> str:
    return "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).strip()


def camera_formats(path: str) -> list[str]:
    """The capture formats a V4L2 node offers; [] when it cannot be opened or asked."""
    out: list[str] = []
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except OSError:
        return out
    try:
        for index in range(64):
            desc = _FmtDesc(index=index, type=V4L2_BUF_TYPE_VIDEO_CAPTURE)
            try:
                fcntl.ioctl(fd, VIDIOC_ENUM_FMT, desc)
            except OSError:
                break  # EINVAL: no more formats (or not a capture node)
            out.append(f"{fourcc(desc.pixelformat)} ({desc.description.decode(errors='replace')})")
    finally:
        os.close(fd)
    return out


def list_cameras(sysfs: Path = SYSFS_V4L, dev: Path = Path("/dev")) -> list[CameraInfo]:
    """Every V4L2 node, in number order, with its name and (when readable) formats."""
    if not sysfs.is_dir():
        return []
    nodes = sorted(sysfs.glob("video*"), key=lambda p: (len(p.name), p.name))
    cameras = []
    for node in nodes:
        name = ""
        with contextlib.suppress(OSError):
            name = (node / "name").read_text().strip()
        path = str(dev / node.name)
        cameras.append(CameraInfo(path, name, camera_formats(path)))
    return cameras


def resolve_camera(spec: str, cameras: list[CameraInfo] | None = None) -> str:
    """``DEVICE_CAMERA_DEVICE``: a path (kept as it is) or part of one camera's name (-> its node)."""
    if spec.startswith("/") or not spec:
        return spec or "/dev/video0"
    found = cameras if cameras is not None else list_cameras()
    # A UVC webcam has two nodes (video and metadata) with one name: the first with formats is the video one.
    matches = [c for c in found if spec.lower() in c.name.lower()]
    named = {c.name for c in matches}
    if not matches:
        names = ", ".join(f"{c.path} {c.name!r}" for c in found) or "none found"
        raise ConfigError(f"DEVICE_CAMERA_DEVICE={spec!r}: no camera with that in its name ({names})")
    if len(named) > 1:
        raise ConfigError(f"DEVICE_CAMERA_DEVICE={spec!r}: several cameras match: {', '.join(sorted(named))}")
    with_formats = [c for c in matches if c.formats]
    return (with_formats or matches)[0].path


def list_sound_devices() -> list[SoundDeviceInfo]:
    """PortAudio's devices (ALSA on the Pi); raises ConfigError when PortAudio is missing."""
    try:
        import sounddevice as sd
    except OSError as exc:  # libportaudio2 not installed
        raise ConfigError(f"cannot list sound devices: {exc}") from None
    apis: Any = sd.query_hostapis()
    out = []
    for d in sd.query_devices():
        out.append(
            SoundDeviceInfo(
                index=int(d["index"]),
                name=str(d["name"]),
                inputs=int(d["max_input_channels"]),
                outputs=int(d["max_output_channels"]),
                default_rate=round(float(d["default_samplerate"])),
                host_api=str(apis[d["hostapi"]]["name"]),
            )
        )
    return out


def describe_devices(
    sound: list[SoundDeviceInfo], cameras: list[CameraInfo], sound_error: str = "", *, alsa_card: str = ""
) -> str:
    """The text ``naila device --list-devices`` prints."""
    from device_agent.audio_io.device_choice import SoundDevice, choose

    lines = ["Microphones (DEVICE_SOUND_INPUT = index or part of the name):"]
    lines += [
        f"  {d.index:>3}  {d.name}  ({d.inputs} ch, {d.default_rate} Hz, {d.host_api})" for d in sound if d.inputs
    ] or ["  none"]
    lines.append("Speakers (DEVICE_SOUND_OUTPUT = index or part of the name):")
    lines += [
        f"  {d.index:>3}  {d.name}  ({d.outputs} ch, {d.default_rate} Hz, {d.host_api})" for d in sound if d.outputs
    ] or ["  none"]
    if sound_error:
        lines.append(f"  ({sound_error})")
    else:
        found = [SoundDevice(d.index, d.name, d.inputs, d.outputs) for d in sound]
        auto = choose(found, alsa_card=alsa_card).describe(found)
        lines.append(f"DEVICE_SOUND_INPUT/OUTPUT=auto (the default): {auto}")
    lines.append("Cameras (DEVICE_CAMERA=v4l2, DEVICE_CAMERA_DEVICE = path or part of the name):")
    for c in cameras:
        lines.append(f"  {c.path}  {c.name or '?'}")
        lines += [f"      {f}" for f in c.formats]
    if not cameras:
        lines.append("  none (no /dev/video*; a Pi camera module is DEVICE_CAMERA=picamera2)")
    return "\n".join(lines)
