"""Snapshots from a real device agent and recordings, over the real broker."""

from __future__ import annotations

import asyncio
import hashlib
import io
import wave
from dataclasses import replace

import numpy as np
import pytest

from ai_server.control.errors import DeviceOffline, MediaRejected, SnapshotTimeout
from ai_server.fakes import FakeSTT
from shared.config import MqttSettings
from shared.mqtt import topics
from tests.ai_server.control.conftest import (
    ControlFactory,
    Watch,
    announce_device,
    b64,
    image_bytes,
    real_device,
    uid,
    until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def wav_bytes(ms: int = 200, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x01" * (rate * ms // 1000))
    return buf.getvalue()


async def test_snapshot_round_trip_with_a_real_device(
    control_server: ControlFactory, mqtt_settings: MqttSettings
) -> None:
    _server, plane = await control_server()
    dev = uid("snap")
    async with real_device(mqtt_settings, dev) as (_agent, control):
        await until(lambda: (r := plane.registry.get(dev)) is not None and r.online)
        upload = await plane.request_snapshot(dev, {"quality": 80}, timeout_s=5)
    assert upload.media_type == "image" and upload.format == "jpeg"
    assert upload.data == control.jpeg
    assert (upload.width, upload.height) == (80, 60)
    assert upload.request_id.startswith("req_")
    assert plane.metrics.events["snapshot_received"] == 1 and len(plane.media.snapshots) == 0


async def test_snapshot_times_out_when_the_device_does_not_answer(
    control_server: ControlFactory, watch: Watch
) -> None:
    _server, plane = await control_server(media={"media_snapshot_timeout_ms": 400})
    dev = uid("snap-silent")
    await announce_device(watch, dev)  # online, but nothing serves its media requests
    await until(lambda: (r := plane.registry.get(dev)) is not None and r.online)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(SnapshotTimeout) as err:
        await plane.request_snapshot(dev)  # the MEDIA_SNAPSHOT_TIMEOUT_MS default applies
    waited = loop.time() - started
    assert err.value.timeout_s == 0.4 and 0.35 <= waited < 2.0
    assert plane.metrics.events["snapshot_timeout"] == 1 and len(plane.media.snapshots) == 0


async def test_a_device_that_cannot_serve_a_media_request_says_why_at_once(
    control_server: ControlFactory, mqtt_settings: MqttSettings
) -> None:
    """issue 22: the device answers on command/response with the request_id; the request fails with its reason."""
    _server, plane = await control_server(media={"media_snapshot_timeout_ms": 5000})
    dev = uid("snap-nocam")
    async with real_device(mqtt_settings, dev, camera=False):
        await until(lambda: (r := plane.registry.get(dev)) is not None and r.online)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(MediaRejected, match="this device has no camera") as err:
            await plane.request_snapshot(dev)
        assert err.value.reason == "device_error" and loop.time() - started < 2.0
    assert plane.metrics.events["media_request_failed"] == 1 and len(plane.media.snapshots) == 0


async def test_a_snapshot_that_is_not_what_it_claims_fails_the_request_at_once(
    control_server: ControlFactory, watch: Watch
) -> None:
    _server, plane = await control_server()
    dev = uid("snap-liar")
    await announce_device(watch, dev)
    await until(lambda: plane.registry.get(dev) is not None)
    await watch.subscribe(topics.media_request(dev))
    pending = asyncio.ensure_future(plane.request_snapshot(dev, timeout_s=5))
    request = await watch.next_json(topics.media_request(dev))
    assert request["request_type"] == "snapshot"
    png = image_bytes("PNG")
    await watch.publish(
        topics.media_snapshot(dev),
        {
            "request_id": request["request_id"],
            "media_type": "image",
            "format": "jpeg",
            "data": b64(png),
        },
    )
    with pytest.raises(MediaRejected) as err:
        await asyncio.wait_for(pending, 2)  # well before the 5 s timeout
    assert err.value.reason == "content_mismatch" and "looks like png" in err.value.detail


async def test_snapshot_of_an_offline_device_is_refused(control_server: ControlFactory, watch: Watch) -> None:
    _server, plane = await control_server()
    dev = uid("snap-off")
    await announce_device(watch, dev, online=False)
    await until(lambda: plane.registry.get(dev) is not None)
    with pytest.raises(DeviceOffline):
        await plane.request_snapshot(dev)


async def test_recordings_are_checked_and_stored_and_a_requested_one_completes(
    control_server: ControlFactory, watch: Watch
) -> None:
    stt = FakeSTT(lambda audio: f"{audio.size} samples at 16 kHz")
    _server, plane = await control_server(stt=stt)
    dev = uid("rec")
    await announce_device(watch, dev, zone="garage")
    await until(lambda: plane.registry.get(dev) is not None)
    await watch.subscribe(topics.media_request(dev))

    pending = asyncio.ensure_future(plane.request_recording(dev, {"duration_ms": 200}, timeout_s=5))
    request = await watch.next_json(topics.media_request(dev))
    assert request["request_type"] == "recording" and request["params"] == {"duration_ms": 200}
    clip = wav_bytes(200, rate=48000)
    await watch.publish(
        topics.media_recording(dev),
        {
            "request_id": request["request_id"],
            "media_type": "audio",
            "format": "wav",
            "duration_ms": 200,
            "sample_rate": 16000,
            "data": b64(clip),
        },
    )
    record = await asyncio.wait_for(pending, 5)
    assert (record.source, record.device_id, record.zone) == ("mqtt_recording", dev, "garage")
    assert (record.media_type, record.format, record.size) == ("audio", "wav", len(clip))
    assert record.sha256 == hashlib.sha256(clip).hexdigest()
    # A WAV clip goes through STT (resampled to 16 kHz); the transcript is kept with the record, and
    # the raw audio is not (spec §14.3; AI_KEEP_RAW_AUDIO keeps it).
    assert record.analysis == {"transcript": "3200 samples at 16 kHz"}
    assert plane.media.store.get(record.id) == replace(record, stored=False) and stt.calls == 1
    assert not record.path.exists()

    # Unrequested (a voice message): stored too. A clip that is not what it claims: refused.
    await watch.publish(
        topics.media_recording(dev),
        {
            "request_id": "req_own",
            "media_type": "audio",
            "format": "wav",
            "data": b64(clip),
        },
    )
    await watch.publish(
        topics.media_recording(dev),
        {
            "request_id": "req_fake",
            "media_type": "audio",
            "format": "mp3",
            "data": b64(clip),
        },
    )
    await until(
        lambda: plane.metrics.events["recording_stored"] == 2 and plane.metrics.rejected["content_mismatch"] == 1
    )
    stored = plane.media.store.recent(10, device_id=dev)
    assert len(stored) == 2 and all(r.format == "wav" for r in stored)


def opus_bytes(seconds: float = 1.0, rate: int = 48000) -> bytes:
    """An Ogg Opus clip of a tone, encoded with PyAV's libopus (what a phone's voice message is)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=rate)
        stream.layout = "mono"
        t = np.arange(int(seconds * rate)) / rate
        pcm = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
        for start in range(0, pcm.size, 960):
            frame = av.AudioFrame.from_ndarray(pcm[None, start:start + 960], format="s16", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


async def test_an_opus_voice_message_goes_through_the_same_stt(control_server: ControlFactory, watch: Watch) -> None:
    heard: list[int] = []

    def transcribe(audio: np.ndarray) -> str:
        heard.append(audio.size)
        return "a voice message"

    stt = FakeSTT(transcribe)
    _server, plane = await control_server(stt=stt)
    dev = uid("rec-opus")
    await announce_device(watch, dev)
    await until(lambda: plane.registry.get(dev) is not None)
    await watch.publish(
        topics.media_recording(dev),
        {"request_id": "req_voice", "media_type": "audio", "format": "opus", "data": b64(opus_bytes(1.0))},
    )
    await until(lambda: plane.metrics.events["recording_transcribed"] == 1)
    # Decoded and resampled by FFmpeg to the 16 kHz STT takes: one second is ~16000 samples.
    assert len(heard) == 1 and 15_000 <= heard[0] <= 17_000, heard
    (record,) = plane.media.store.recent(1, device_id=dev)
    assert record.format == "opus" and record.analysis == {"transcript": "a voice message"}
