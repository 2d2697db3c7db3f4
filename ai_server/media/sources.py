"""The five media inputs of spec §8.2 on one path: bytes + where they came from → ImageAnalyser.

* live stream frame (§8.4): the vision pipeline's latest frame of a camera (its detections reused);
* MQTT snapshot (§8.5): asked of a device over the control plane, decoded whole, then stored with
  its analysis (a snapshot that does not decode is counted and *not* stored);
* MQTT recording (§8.6): a video clip's middle frame (:mod:`ai_server.media.frames`); audio clips
  go through STT in :mod:`ai_server.control.media`;
* upload (§8.7, §8.9): :mod:`ai_server.control.uploads` (``upload`` here for callers with bytes);
* store retrieval (§8.8): a stored item's saved analysis reused, or the item analysed again.

Every one returns :class:`~ai_server.media.analysis.Analysed` (the spec §8.11 context), or raises
:class:`SourceFailed` with a short reason, counted in ``failures`` (and the control plane's
metrics as ``visual_source_failed``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from typing import Final

from ai_server.control.errors import ControlError, DeviceOffline, MediaRejected, Rejected, SnapshotTimeout
from ai_server.control.media import DeviceMedia
from ai_server.media.analysis import Analysed, BadImage, ImageAnalyser, SourceType, decode_image, save_analysis
from ai_server.media.errors import SourceFailed
from ai_server.media.frames import ClipDecoder, ClipLimits
from ai_server.store import MediaRecord, MediaStore
from ai_server.vision.view import Views
from shared.errors import one_line
from shared.mqtt import VisualContext

log = logging.getLogger(__name__)

#: A stored item keeps the source type it arrived with. Alert snapshots are live-stream frames;
#: recordings are media a device sent over MQTT unasked, i.e. an MQTT upload (§8.11 has no
#: "recording" type, and the context must stay exactly §8.11).
_STORED_AS: Final[dict[str, SourceType]] = {
    "mqtt_upload": "mqtt_upload",
    "mqtt_snapshot": "mqtt_snapshot",
    "alert_snapshot": "webrtc_stream",
    "mqtt_recording": "mqtt_upload",
}
VIDEO_FORMATS: Final = frozenset({"mp4", "webm"})


class MediaSources:
    """See the module doc. ``views`` / ``devices`` (the control plane's device media) absent: those sources
    fail with ``unavailable``. ``clips``: the AI server's clip limits (default: ClipLimits' defaults)."""

    def __init__(
        self, analyser: ImageAnalyser, store: MediaStore, *, views: Views | None = None,
        devices: DeviceMedia | None = None, clips: ClipDecoder | None = None,
    ) -> None:
        self.analyser = analyser
        self.store = store
        self.views = views
        self.devices = devices
        self.clips = clips or ClipDecoder(ClipLimits())
        self.failures: Counter[str] = Counter()  # "<source>:<reason>"

    def _fail(self, source: str, reason: str, detail: str) -> SourceFailed:
        self.failures[f"{source}:{reason}"] += 1
        if self.devices is not None:
            self.devices.metrics.event("visual_source_failed")
        log.warning("visual source %s failed (%s): %s", source, reason, detail)
        return SourceFailed(source, reason, detail)

    async def live(self, device_id: str, question: str = "") -> Analysed:
        """The camera's freshest live-stream frame (spec §8.4)."""
        view = None if self.views is None else self.views.latest(device_id)
        if view is None:
            raise self._fail("webrtc_stream", "no_frame", f"no live frame from {device_id}")
        try:
            return await self.analyser.analyse(view.jpeg, source="webrtc_stream", device_id=device_id,
                                               question=question, timestamp=view.wall_time,
                                               detections=view.detections)
        except BadImage as exc:
            raise self._fail("webrtc_stream", exc.reason, exc.detail) from None

    async def snapshot(self, device_id: str, question: str = "", timeout_s: float | None = None) -> Analysed:
        """Ask the device for a snapshot over MQTT (spec §8.5), analyse it, store it with its analysis."""
        if self.devices is None:
            raise self._fail("mqtt_snapshot", "unavailable", "no control plane")
        plane = self.devices
        try:
            upload = await plane.request_snapshot(device_id, timeout_s=timeout_s)
        except DeviceOffline as exc:
            raise self._fail("mqtt_snapshot", "offline" if exc.known else "unknown_device", str(exc)) from None
        except SnapshotTimeout as exc:
            raise self._fail("mqtt_snapshot", "timeout", str(exc)) from None
        except MediaRejected as exc:
            raise self._fail("mqtt_snapshot", exc.reason, str(exc)) from None
        except ControlError as exc:
            raise self._fail("mqtt_snapshot", "control", str(exc)) from None
        try:
            # Decoded whole before anything is stored: a truncated JPEG passes the format sniff.
            image = await asyncio.to_thread(decode_image, upload.data, upload.format)
            checked = plane.policy.check("image", upload.format, upload.data)
        except BadImage as exc:
            raise self._fail("mqtt_snapshot", exc.reason, f"snapshot from {device_id}: {exc.detail}") from None
        except Rejected as exc:
            raise self._fail("mqtt_snapshot", exc.reason, f"snapshot from {device_id}: {exc.detail}") from None
        analysed = await self.analyser.analyse_decoded(image, source="mqtt_snapshot", device_id=device_id,
                                                       question=question, timestamp=upload.timestamp)
        record = await plane.store_media(checked, source="mqtt_snapshot", device_id=device_id,
                                               extra={"visual_context": analysed.json()})
        log.info("snapshot from %s stored as %s with its analysis", device_id, record.id)
        return analysed

    async def video(self, data: bytes, fmt: str, *, device_id: str | None = None, session_id: str | None = None,
                    question: str = "") -> Analysed:
        """A clip's middle frame (spec §8.6); the context says ``video`` and the clip's format."""
        try:
            frame = await self.clips.middle(data, fmt)  # probed and bounded: see ai_server.media.frames
        except BadImage as exc:
            raise self._fail("mqtt_recording", exc.reason, exc.detail) from None
        return await self.analyser.analyse_decoded(frame, source="mqtt_upload", device_id=device_id,
                                                   session_id=session_id, question=question,
                                                   media_type="video", media_format=fmt.lower())

    async def upload(self, data: bytes, fmt: str, session_id: str, question: str = "") -> Analysed:
        """An uploaded image's bytes (the MQTT path itself is :mod:`ai_server.control.uploads`)."""
        try:
            return await self.analyser.analyse(data, source="mqtt_upload", session_id=session_id,
                                               declared_format=fmt, question=question)
        except BadImage as exc:
            raise self._fail("mqtt_upload", exc.reason, exc.detail) from None

    async def stored(self, media_id: str, question: str = "", *, reanalyse: bool = False) -> Analysed:
        """A stored image or clip (spec §8.8): its saved context reused, else analysed now and saved."""
        record = await asyncio.to_thread(self.store.get, media_id)
        if record is None:
            raise self._fail("store", "not_found", f"no stored media {media_id}")
        saved = (record.analysis or {}).get("visual_context")
        if saved is not None and not reanalyse:
            context = VisualContext.model_validate_json(json.dumps(saved))
            context = context.model_copy(update={"user_context": question[:1000] or None})
            return Analysed(context, 0.0, 0.0)
        analysed = await self._analyse_record(record, question)
        await save_analysis(self.store, record.id, analysed)
        return analysed

    async def _analyse_record(self, record: MediaRecord, question: str) -> Analysed:
        source = _STORED_AS.get(record.source, "mqtt_upload")
        try:
            data = await asyncio.to_thread(record.path.read_bytes)
        except OSError as exc:
            raise self._fail("store", "missing_file", f"{record.id}: {one_line(exc)}") from None
        if record.media_type == "video" and record.format in VIDEO_FORMATS:
            analysed = await self.video(data, record.format, device_id=record.device_id,
                                        session_id=record.session_id, question=question)
            return Analysed(analysed.context.model_copy(update={"source": analysed.context.source.model_copy(
                update={"type": source})}), analysed.yolo_ms, analysed.ocr_ms)
        if record.media_type != "image":
            raise self._fail("store", "not_visual", f"{record.id} is {record.media_type}")
        try:
            return await self.analyser.analyse(data, source=source, device_id=record.device_id,
                                               session_id=record.session_id, declared_format=record.format,
                                               question=question, timestamp=record.time)
        except BadImage as exc:
            raise self._fail("store", exc.reason, f"{record.id}: {exc.detail}") from None
