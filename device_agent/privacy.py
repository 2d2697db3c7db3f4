"""The privacy switches (camera, microphone) and the listening mode, kept across restarts (``DEVICE_STATE_FILE``).

A switch turned off must stay off through a reconnect, a crash and a power cut, so every change is
written at once (atomically: a temporary file renamed over the old one). A state file that exists
but cannot be read turns both switches off and says so: a privacy setting fails closed. The listening
mode (``listening_mode`` command) is kept the same way; empty means DEVICE_LISTENING_MODE decides, and an
unreadable file falls back to it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import get_args

from shared.mqtt.commands import ListeningMode

log = logging.getLogger(__name__)

_MODES = ("", *get_args(ListeningMode))


@dataclass
class Privacy:
    camera: bool = True
    microphone: bool = True
    listening_mode: str = ""  # "" = DEVICE_LISTENING_MODE; else the last listening_mode command


def load_privacy(path: str) -> Privacy:
    if not path or not Path(path).exists():
        return Privacy()
    try:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        camera, microphone = data.get("camera", True), data.get("microphone", True)
        if not isinstance(camera, bool) or not isinstance(microphone, bool):
            raise ValueError("camera and microphone must be true or false")
        mode = data.get("listening_mode", "")
        if mode not in _MODES:
            raise ValueError(f"listening_mode must be one of {', '.join(_MODES)}, got {mode!r:.40}")
    except (OSError, ValueError) as exc:
        log.error("DEVICE_STATE_FILE=%s unreadable (%s): camera and microphone stay off until switched on", path, exc)
        return Privacy(camera=False, microphone=False)
    return Privacy(camera=camera, microphone=microphone, listening_mode=mode)


def save_privacy(path: str, state: Privacy) -> None:
    """Write the switches (no-op without a file); an OSError is the caller's to report."""
    if not path:
        return
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(asdict(state)))
    os.replace(tmp, target)
