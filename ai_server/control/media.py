"""Media from devices over MQTT: on-demand snapshots (spec §8.5) and clips (§8.6).

Snapshot: a :class:`MediaRequest` on ``naila/devices/{id}/media/request``; the device answers
with a :class:`MediaUpload` on ``.../media/snapshot`` carrying the same ``request_id``. The
caller gets the upload once it has passed the media checks, or :class:`SnapshotTimeout`
(default ``MEDIA_SNAPSHOT_TIMEOUT_MS``), :class:`MediaRejected`, :class:`DeviceOffline`.

Recordings: every :class:`MediaUpload` on ``.../media/recording`` (asked for with
:meth:`DeviceMedia.request_recording`, or sent by the device on its own, e.g. a voice message)
is checked and stored in the media store with the device's zone. A WAV clip also goes through
the STT backend (its first ``MAX_TRANSCRIBE_S`` seconds): the transcript lands in the record's
analysis (``{"transcript": ...}``). Other audio formats would need a decoder the AI server does
not ship (Opus, MP3 are stored untranscribed).

Unsolicited recordings (finding H7): the ACL lets every device write ``media/recording``, so a
stolen Pi could fill the disk at LAN speed between two retention runs. A recording that answers
no pending request spends the device's byte budget, ``AI_RECORDING_QUOTA_BYTES_PER_H`` per hour
(a token bucket of bytes: refilled continuously, so the hour is a sliding one); beyond it it is
refused ``over_quota``, counted and logged by the plane. Answers to our own requests are always
accepted and cost nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Final, Literal, Protocol, TypeVar

import av
import numpy as np

from ai_server.control.commands import require_online
from ai_server.control.errors import MediaRejected, Rejected, SnapshotTimeout
from ai_server.control.media_check import CheckedMedia, MediaPolicy
from ai_server.control.metrics import ControlMetrics
from ai_server.control.pending import PendingReplies
from ai_server.control.registry import DeviceRegistry
from ai_server.control.wire import Publish, send
from ai_server.media.errors import SourceFailed
from ai_server.store import MediaRecord, MediaSource, MediaStore
from ai_server.stt import STTBackend
from shared.audio import HUB_RATE, Int16Array
from shared.errors import one_line
from shared.mqtt import CommandResponse, MediaRequest, MediaUpload, build, new_request_id, outbound, topics
from shared.mqtt.fields import JsonDict
from shared.rate_limit import RateLimiter

if TYPE_CHECKING:
    from ai_server.media.analysis import Analysed

log = logging.getLogger(__name__)


class VideoFrames(Protocol):
    """:meth:`ai_server.media.sources.MediaSources.video`."""

    async def __call__(self, data: bytes, fmt: str, *, device_id: str | None = None) -> Analysed: ...

T = TypeVar("T")

#: Longest stretch of a clip that is transcribed: one Whisper window.
MAX_TRANSCRIBE_S: Final = 30


class DeviceMedia:
    def __init__(
        self,
        publish: Publish,
        registry: DeviceRegistry,
        metrics: ControlMetrics,
        policy: MediaPolicy,
        store: MediaStore,
        *,
        snapshot_timeout_s: float,
        stt: STTBackend | None = None,
        recording_quota_bytes_per_h: int | None = None,
        video_frames: VideoFrames | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``recording_quota_bytes_per_h``: see the module doc; None = no quota, 0 = none accepted."""
        self._publish = publish
        self.registry = registry
        self.metrics = metrics
        self.policy = policy
        self.store = store
        self.snapshot_timeout_s = snapshot_timeout_s
        self.stt = stt
        self.snapshots: PendingReplies[MediaUpload] = PendingReplies()
        self.recordings: PendingReplies[MediaRecord] = PendingReplies()
        # MediaSources.video when vision is on: a clip's middle frame analysed before storing.
        self.video_frames = video_frames
        self.recording_quota = recording_quota_bytes_per_h
        self._quota = None if not recording_quota_bytes_per_h else RateLimiter(
            recording_quota_bytes_per_h / 3600.0, recording_quota_bytes_per_h, clock=clock
        )

    # -- requests ---------------------------------------------------------------------------
    async def request_snapshot(
        self, device_id: str, params: JsonDict | None = None, timeout_s: float | None = None
    ) -> MediaUpload:
        """Ask ``device_id`` for a still image; returns its checked upload (width/height filled in)."""
        return await self._request("snapshot", self.snapshots, device_id, params, timeout_s)

    async def request_recording(
        self, device_id: str, params: JsonDict | None = None, timeout_s: float | None = None
    ) -> MediaRecord:
        """Ask ``device_id`` for a clip; returns its media store record once it arrived and was stored."""
        return await self._request("recording", self.recordings, device_id, params, timeout_s)

    async def _request(
        self,
        kind: Literal["snapshot", "recording"],
        pending: PendingReplies[T],
        device_id: str,
        params: JsonDict | None,
        timeout_s: float | None,
    ) -> T:
        require_online(self.registry, device_id)
        timeout = self.snapshot_timeout_s if timeout_s is None else timeout_s
        request_id = new_request_id()
        request = build(MediaRequest, request_type=kind, request_id=request_id, params=dict(params or {}))
        reply = pending.expect(device_id, request_id)
        try:
            await send(self._publish, outbound(topics.media_request(device_id), request))
            log.info("%s requested from %s (request %s)", kind, device_id, request_id)
            try:
                async with asyncio.timeout(timeout):
                    return await reply
            except TimeoutError:
                self.metrics.event(f"{kind}_timeout")
                raise SnapshotTimeout(device_id, kind, request_id, timeout) from None
        finally:
            pending.forget(request_id)

    # -- inbound ----------------------------------------------------------------------------
    def on_device_error(self, device_id: str, response: CommandResponse) -> bool:
        """The device's ``ok: false`` answer to a snapshot or recording request (camera off, no microphone...):
        fail the waiting request now with the device's reason instead of a timeout. False when none waits."""
        if response.ok:
            return False
        error = MediaRejected("device_error", f"{device_id}: {response.error}")
        failed = self.snapshots.fail(device_id, response.request_id, error) or self.recordings.fail(
            device_id, response.request_id, error
        )
        if failed:
            self.metrics.event("media_request_failed")
        return failed

    def on_snapshot(self, device_id: str, upload: MediaUpload) -> None:
        """A ``media/snapshot`` arrived; raises :class:`Rejected` if unmatched or if the media is bad.

        A bad image still completes its request (with :class:`MediaRejected`), so the caller
        learns at once instead of waiting for the timeout.
        """
        try:
            if upload.media_type != "image":
                raise Rejected("unsupported_format", f"a snapshot must be an image, not {upload.media_type}")
            checked = self.policy.check(upload.media_type, upload.format, upload.data)
        except Rejected as exc:
            error = MediaRejected(exc.reason, f"snapshot from {device_id}: {exc.detail}")
            if not self.snapshots.fail(device_id, upload.request_id, error):
                raise Rejected("unmatched", f"snapshot {upload.request_id} from {device_id} (and {exc})") from None
            raise
        completed = upload.model_copy(
            update={
                "format": checked.format,
                "width": upload.width or checked.width,
                "height": upload.height or checked.height,
            }
        )
        if not self.snapshots.resolve(device_id, upload.request_id, completed):
            raise Rejected("unmatched", f"snapshot {upload.request_id} from {device_id}: nobody is waiting (late?)")
        self.metrics.event("snapshot_received")

    async def on_recording(self, device_id: str, upload: MediaUpload) -> MediaRecord:
        """A ``media/recording`` arrived: check it, store it, complete its request if any."""
        if not self.recordings.waiting(device_id, upload.request_id):
            self._spend_quota(device_id, len(upload.data))
        try:
            checked = self.policy.check(upload.media_type, upload.format, upload.data)
        except Rejected as exc:
            self.recordings.fail(
                device_id, upload.request_id, MediaRejected(exc.reason, f"recording from {device_id}: {exc.detail}")
            )
            raise
        extra = await self._video_context(device_id, upload.request_id, checked)
        record = await self.store_media(checked, source="mqtt_recording", device_id=device_id, extra=extra)
        self.metrics.event("recording_stored")
        log.info("recording from %s stored as %s (%s)", device_id, record.id, checked.describe())
        if checked.media_type == "audio" and self.stt is not None:
            record = await self.transcribe(record)
        self.recordings.resolve(device_id, upload.request_id, record)
        return record

    def _spend_quota(self, device_id: str, size: int) -> None:
        quota = self.recording_quota
        if quota is None:
            return
        if self._quota is None or not self._quota.allow(device_id, size):
            self.metrics.event("recording_over_quota")
            raise Rejected("over_quota", f"unsolicited recording of {size} bytes from {device_id}: over its "
                           f"{quota} bytes per hour (AI_RECORDING_QUOTA_BYTES_PER_H)")

    async def _video_context(
        self, device_id: str, request_id: str, checked: CheckedMedia
    ) -> dict[str, object] | None:
        """A video clip's frame analysed *before* it is stored: a clip that does not decode is refused whole."""
        if checked.media_type != "video" or self.video_frames is None:
            return None
        try:
            analysed = await self.video_frames(checked.data, checked.format, device_id=device_id)
        except SourceFailed as exc:
            self.recordings.fail(device_id, request_id,
                                 MediaRejected(exc.reason, f"recording from {device_id}: {exc.detail}"))
            raise Rejected(exc.reason, f"recording from {device_id}: {exc.detail}") from None
        return {"visual_context": analysed.json()}

    async def transcribe(self, record: MediaRecord) -> MediaRecord:
        """Add the clip's transcript to its analysis; a clip STT cannot read is kept without one."""
        assert self.stt is not None
        try:
            pcm = await asyncio.to_thread(_speech_pcm, record)
            text = await self.stt.transcribe(pcm)
        except Exception as exc:  # a WAV that is not 16-bit PCM, or an STT failure
            self.metrics.event("transcription_failed")
            log.warning("recording %s not transcribed: %s", record.id, one_line(exc))
            # Spec §14.3: no raw audio kept (unless AI_KEEP_RAW_AUDIO): STT gave up, the row stays.
            return await asyncio.to_thread(self.store.release_audio, record.id) or record
        analysis = {**(record.analysis or {}), "transcript": text}
        await asyncio.to_thread(self.store.set_analysis, record.id, analysis)
        self.metrics.event("recording_transcribed")
        log.debug("recording %s transcribed: %r", record.id, text[:200])  # what was said: not at INFO (L1)
        released = await asyncio.to_thread(self.store.release_audio, record.id)
        return released or replace(record, analysis=analysis)

    async def store_media(
        self,
        checked: CheckedMedia,
        *,
        source: MediaSource,
        device_id: str | None = None,
        session_id: str | None = None,
        zone: str | None = None,
        extra: dict[str, object] | None = None,
    ) -> MediaRecord:
        """Write checked media to the store off the event loop; the device's zone is filled in.

        ``extra`` joins the record's analysis (an upload's visual context), written in the same row.
        """
        if zone is None and device_id is not None:
            record = self.registry.get(device_id)
            zone = record.zone if record is not None else None
        analysis: dict[str, object] | None = None
        if checked.width is not None and checked.height is not None:
            analysis = {"width": checked.width, "height": checked.height}
        if extra:
            analysis = {**(analysis or {}), **extra}

        def write() -> MediaRecord:
            return self.store.add(
                checked.data,
                source=source,
                media_type=checked.media_type,
                format=checked.format,
                device_id=device_id,
                session_id=session_id,
                zone=zone,
                analysis=analysis,
            )

        return await asyncio.to_thread(write)


def _speech_pcm(record: MediaRecord) -> Int16Array:
    """Any stored clip (wav, opus, mp3, m4a; the audio of a video) as 16 kHz mono int16, at most
    MAX_TRANSCRIBE_S long (what STT takes). FFmpeg through PyAV decodes and resamples: the decoder
    faster-whisper itself uses, so every whitelisted format takes the same path (spec §8.13)."""
    limit = HUB_RATE * MAX_TRANSCRIBE_S
    chunks: list[Int16Array] = []
    got = 0
    with av.open(str(record.path)) as container:
        if not container.streams.audio:
            raise ValueError(f"{record.format}: no audio stream")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=HUB_RATE)
        frames = container.decode(audio=0)
        for frame in itertools.chain(frames, [None]):  # None flushes the resampler's tail
            for out in resampler.resample(frame):
                chunk = out.to_ndarray().reshape(-1).astype(np.int16)
                chunks.append(chunk)
                got += chunk.size
            if got >= limit:
                break
    return np.concatenate(chunks)[:limit] if chunks else np.zeros(0, np.int16)
