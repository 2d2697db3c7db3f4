"""In-process test devices for end-to-end runs: a real DeviceAgent with a memory sound card.

The end-to-end tests and ``bench/e2e_latency.py`` drive the real stack (``naila.stack``)
through these: speak into a device's microphone, wait for the hub's record of the turn,
and read what the device's speaker played, all on ``time.monotonic``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from device_agent.agent import DeviceAgent
from device_agent.audio_io.echo_path import EchoPath
from device_agent.audio_io.memory import MemoryAudioBackend
from naila.stack import DEVICE_TOKENS, hub_read
from shared.audio import Int16Array, espeak
from shared.config import AudioSettings, DeviceSettings, MqttSettings, WebRTCSettings, load

SPEECH_DBFS = -45.0  # speaker level counted as "playing"


@dataclass
class SimDevice:
    agent: DeviceAgent
    backend: MemoryAudioBackend
    hub_url: str

    @property
    def device_id(self) -> str:
        return self.agent.settings.device_id

    def say(self, text: str, *, gain_db: float = 0.0, delay_s: float = 0.0, voice: str = "espeak",
            wake_word: bool = False, wake_pause_s: float = 1.5) -> tuple[float, float]:
        """Queue espeak (or ``voice="piper"``) speech into the mic; returns when its voice starts and
        ends, on time.monotonic.

        ``gain_db`` and ``delay_s`` place the talker farther away (another room's device hearing
        the same person: quieter and later). ``wake_word``: "Okay Nabu." in the piper voice (which
        fires the detector; espeak's does not) and ``wake_pause_s`` of quiet before the text (a person
        waits for the earcon).
        """
        if voice == "piper":
            from shared.wakeword import piper_speech

            speech = piper_speech(text, self.backend.rate)
        else:
            speech = espeak(text, rate=self.backend.rate)
        if wake_word:
            from shared.wakeword import piper_speech

            pause = np.zeros(round(wake_pause_s * self.backend.rate), dtype=np.int16)
            speech = np.concatenate([piper_speech("Okay Nabu.", self.backend.rate), pause, speech])
        if gain_db:
            speech = np.clip(speech * 10 ** (gain_db / 20), -32768, 32767).astype(np.int16)
        if delay_s > 0:
            speech = np.concatenate([np.zeros(round(delay_s * self.backend.rate), dtype=np.int16), speech])
        first, last = voiced_span(speech, self.backend.rate)
        starts_in = self.backend.play_into_mic(speech, self.backend.rate)
        start = time.monotonic() + starts_in
        return start + first, start + last

    def turns(self) -> list[dict[str, Any]]:
        return [t for t in hub_turns(self.hub_url) if t.get("device_id") == self.device_id]

    async def wait_turn(self, after: int, within_s: float = 90.0) -> dict[str, Any]:
        """Wait until the hub has recorded more than ``after`` finished turns for this device."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            turns = await asyncio.to_thread(self.turns)
            if len(turns) > after:
                return turns[after]
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.device_id}: no turn after {within_s:.0f}s")

    async def wait_speaker_quiet(self, since: float, quiet_s: float = 1.0, within_s: float = 60.0) -> float | None:
        """Wait until the speaker has been quiet for ``quiet_s``; returns when its audio stopped."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            stopped = self.backend.speaker_stopped_at(SPEECH_DBFS, since=since, hangover_ms=0)
            if stopped is not None and time.monotonic() - stopped >= quiet_s:
                return stopped
            await asyncio.sleep(0.05)
        return self.backend.speaker_stopped_at(SPEECH_DBFS, since=since, hangover_ms=0)

    def speaker_audio(self, since: float, until: float | None = None) -> Int16Array:
        return self.backend.speaker_audio(since, until)

    async def stop(self) -> None:
        await self.agent.stop()


async def start_device(
    device_id: str,
    hub_url: str,
    *,
    mqtt: tuple[str, int] | None = None,
    echo_path: EchoPath | None = None,
    echo_cancellation: bool = True,
    connect_timeout: float = 20.0,
    room: str = "test",
    camera_file: str = "",
    camera: Literal["file", "v4l2"] = "file",
    token: str | None = None,
) -> SimDevice:
    """A device agent on memory sound cards; with ``camera_file`` (an image or a video, looped) it
    also streams that as its camera: through the file camera, or with ``camera="v4l2"`` through the
    USB webcam's code (``DEVICE_CAMERA=v4l2``, a recorded MJPEG/H.264 stream as ``DEVICE_CAMERA_DEVICE``).
    ``token``: its HUB_DEVICE_TOKENS token; by default the one the stack started the hub at ``hub_url`` with."""
    token = token if token is not None else DEVICE_TOKENS.get(hub_url, "")
    settings = load(DeviceSettings, device_id=device_id, device_hub_url=hub_url, device_room=room,
                    device_audio_backend="file", device_mqtt=mqtt is not None, device_hub_token=token,
                    device_camera=camera if camera_file else "none",
                    device_camera_file=camera_file if camera == "file" else "",
                    device_camera_device=camera_file if camera == "v4l2" else "/dev/video0")
    backend = MemoryAudioBackend(echo_path=echo_path)
    mqtt_settings = load(MqttSettings, mqtt_host=mqtt[0], mqtt_port=mqtt[1]) if mqtt else load(MqttSettings)
    agent = DeviceAgent(
        settings,
        audio_backend=backend,
        audio=load(AudioSettings, audio_echo_cancellation=echo_cancellation),
        mqtt=mqtt_settings,
        webrtc=load(WebRTCSettings),
    )
    await agent.start()
    if not await agent.wait_connected(connect_timeout):
        await agent.stop()
        raise TimeoutError(f"{device_id}: no WebRTC link to {hub_url} after {connect_timeout:.0f}s")
    return SimDevice(agent, backend, hub_url)


def hub_turns(hub_url: str) -> list[dict[str, Any]]:
    data = json.loads(hub_read(hub_url, "/turns"))
    return list(data["turns"] if isinstance(data, dict) else data)


def hub_counter(hub_url: str, name: str) -> float:
    """Read one naila_hub_* counter from the hub's Prometheus /metrics."""
    text = hub_read(hub_url, "/metrics").decode()
    m = re.search(rf"^naila_hub_{name}(?:_total)?(?:{{}})? ([0-9.e+]+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def frame_levels(x: Int16Array, rate: int) -> npt.NDArray[np.float64]:
    """RMS level of each whole 20 ms frame, dBFS."""
    frame = rate // 50
    n = x.size // frame
    frames = x[: n * frame].reshape(n, frame).astype(np.float64)
    rms = np.sqrt(np.mean(frames**2, axis=1)) / 32768.0 if n else np.zeros(0)
    return np.asarray(20 * np.log10(np.maximum(rms, 1e-9)), dtype=np.float64)


def speech_seconds(x: Int16Array, rate: int, threshold_dbfs: float = SPEECH_DBFS) -> float:
    """Seconds of 20 ms frames above the threshold."""
    return float(np.sum(frame_levels(x, rate) > threshold_dbfs)) * 0.02


def voiced_span(x: Int16Array, rate: int, threshold_dbfs: float = SPEECH_DBFS) -> tuple[float, float]:
    """(first, last) second of 20 ms frames above the threshold; (0, duration) if none."""
    voiced = np.nonzero(frame_levels(x, rate) > threshold_dbfs)[0]
    if voiced.size == 0:
        return 0.0, x.size / rate
    return float(voiced[0]) * 0.02, float(voiced[-1] + 1) * 0.02


def chime_starts(x: Int16Array, rate: int, window_s: float = 0.8, hop_s: float = 0.1) -> list[float]:
    """Seconds into ``x`` where the alarm chime (ai_server/assist/sounds.py) starts playing.

    A window holds the chime when each of its two tones carries a clear share of the window's
    energy: speech spreads its energy over many harmonics and never puts ~10% into both narrow
    bands. Consecutive hits are one chime; the first window that holds it is reported, so a start
    is up to half a window early."""
    from ai_server.assist.sounds import CHIME_TONES_HZ

    n, hop = int(window_s * rate), int(hop_s * rate)
    freqs = np.fft.rfftfreq(n, 1 / rate)
    bands = [(freqs > f - 25) & (freqs < f + 25) for f in CHIME_TONES_HZ]
    starts: list[float] = []
    last_hit = -1
    for i in range(0, max(0, x.size - n + 1), hop):
        power = np.abs(np.fft.rfft(x[i:i + n].astype(np.float64))) ** 2
        total = float(power.sum())
        hit = total > 0 and all(float(power[b].sum()) / total > 0.08 for b in bands)
        if hit and last_hit != i - hop:
            starts.append(i / rate)
        if hit:
            last_hit = i
    return starts


_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance over words, divided by the reference length."""
    ref, hyp = words(reference), words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)
