"""The five inputs of spec §8.2 on one path (ai_server/media/sources.py) and the six steps of spec §8.10
(ai_server/media/selection.py), with a real mosquitto, a real device agent and the real YOLO/OCR models.

Live frames come from a scripted ``Views`` (tests/ai_server/test_visual_questions.py): the live
pipeline itself is driven in tests/ai_server/vision/.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from ai_server.control.plane import ControlPlane
from ai_server.fakes import FakeLLM
from ai_server.media.analysis import Analysed, ImageAnalyser
from ai_server.media.errors import SourceFailed
from ai_server.media.history import HistoryQuestions
from ai_server.media.ocr import RapidOcr
from ai_server.media.selection import NO_CAMERA, Selected, SourceSelection
from ai_server.media.sources import MediaSources
from ai_server.pipeline import Seen
from ai_server.vision.ask import VisualQuestions
from ai_server.vision.detector import YoloDetector
from ai_server.vision.view import CameraView
from shared.config import MqttSettings
from shared.mqtt import VisualContext, topics
from tests.ai_server.control.conftest import (
    ControlFactory,
    Watch,
    announce_device,
    b64,
    real_device,
    uid,
    until,
)
from tests.ai_server.media.conftest import bus_jpeg
from tests.ai_server.test_visual_questions import ScriptedViews

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
KEYS = {"source", "media", "analysis", "user_context"}


def mp4(frames: int = 9, fmt: str = "mp4") -> bytes:
    """A short clip (H.264 in MP4, or VP8 in WebM): white frames with bus.jpg as the middle one."""
    bus = np.asarray(Image.open(io.BytesIO(bus_jpeg())).convert("RGB").resize((400, 532)))
    blank = np.full_like(bus, 255)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as out:
        stream = out.add_stream("libx264" if fmt == "mp4" else "libvpx", rate=10)
        stream.width, stream.height, stream.pix_fmt = 400, 532, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(bus if i == frames // 2 else blank, format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


class UnanalysedViews(ScriptedViews):
    """The pipeline has not run YOLO on these frames: the analyser's own detector does (the real model)."""

    async def analysed(self, device_id: str) -> CameraView | None:
        return self.views.get(device_id)


@pytest.fixture(scope="module")
def ocr() -> Iterator[RapidOcr]:
    reader = RapidOcr()
    reader.load()
    yield reader


@dataclass
class Rig:
    plane: ControlPlane
    views: ScriptedViews
    sources: MediaSources
    selection: SourceSelection
    mqtt: MqttSettings


@pytest.fixture
async def rig(control_server: ControlFactory, mqtt_settings: MqttSettings, yolo: YoloDetector,
              ocr: RapidOcr) -> AsyncIterator[Rig]:
    _server, plane = await control_server(llm=FakeLLM("ok"), detector=yolo)
    views = UnanalysedViews()
    analyser = ImageAnalyser(yolo, ocr)
    sources = MediaSources(analyser, plane.media.store, views=views, devices=plane.media)
    plane.media.video_frames = sources.video
    history = HistoryQuestions(plane.media.store.events, views, lambda: NOW)
    selection = SourceSelection(sources, history=history, questions=VisualQuestions(views, analyser=analyser),
                                registry=plane.registry, snapshot_timeout_s=5)
    yield Rig(plane, views, sources, selection, mqtt_settings)


def same_shape(ctx: VisualContext) -> dict[str, Any]:
    raw = ctx.model_dump_json(exclude_none=True)
    assert VisualContext.model_validate_json(raw) == ctx  # spec §8.11, exactly
    payload: dict[str, Any] = json.loads(raw)
    assert set(payload) | {"user_context"} == KEYS  # user_context: only with a question
    assert set(payload["media"]) == {"type", "format", "width", "height", "timestamp"}
    assert {"description", "objects", "text_detected"} <= set(payload["analysis"])
    return payload


def people(ctx: VisualContext) -> int:
    return sum(o.label == "person" for o in ctx.analysis.objects)


def add_live(views: ScriptedViews, device_id: str, room: str, zone: str = "", *, online: bool = True) -> None:
    views.add(device_id, room, zone, detections=None, online=online)
    view = views.views[device_id]
    views.views[device_id] = CameraView(device_id, bus_jpeg(), 810, 1080, view.seen_at, NOW, None)


async def test_the_five_sources_give_the_same_visual_context_shape(rig: Rig, watch: Watch) -> None:
    q = "how many people do you see?"
    # (a) a live-stream frame
    add_live(rig.views, "live-cam", "hall")
    live = (await rig.sources.live("live-cam", q)).context
    # (b) an MQTT snapshot from a real device agent: stored with its analysis
    dev = uid("snap")
    async with real_device(rig.mqtt, dev, zone=uid("z")) as (_agent, control):
        control.jpeg = bus_jpeg()
        await until(lambda: (r := rig.plane.registry.get(dev)) is not None and r.online)
        snap = (await rig.sources.snapshot(dev, q)).context
    [stored_snap] = rig.plane.media.store.recent(5, source="mqtt_snapshot", device_id=dev)
    assert stored_snap.analysis is not None
    assert VisualContext.model_validate_json(json.dumps(stored_snap.analysis["visual_context"])) == snap
    # (c) an MQTT recording clip: its middle frame, analysed before it is stored
    rec_dev = uid("rec")
    await announce_device(watch, rec_dev, zone="garage")
    await until(lambda: rig.plane.registry.get(rec_dev) is not None)
    await watch.publish(topics.media_recording(rec_dev), {"request_id": "r1", "media_type": "video", "format": "mp4",
                                                          "data": b64(mp4())})
    await until(lambda: rig.plane.metrics.events["recording_stored"] == 1, 60)
    [clip] = rig.plane.media.store.recent(5, source="mqtt_recording", device_id=rec_dev)
    assert clip.analysis is not None
    video = VisualContext.model_validate_json(json.dumps(clip.analysis["visual_context"]))
    # (d) an upload (the MQTT path: tests/ai_server/media/test_upload_questions.py)
    up = (await rig.sources.upload(bus_jpeg(), "jpg", uid("sess"), q)).context
    # (e) retrieval from the store: the saved analysis reused, or analysed again; the source type kept
    reused = (await rig.sources.stored(stored_snap.id, "and now?")).context
    again = await rig.sources.stored(stored_snap.id, "and now?", reanalyse=True)
    clip_again = await rig.sources.stored(clip.id, reanalyse=True)

    for ctx in (live, snap, video, up, reused, again.context, clip_again.context):
        same_shape(ctx)
        assert people(ctx) >= 3, ctx.analysis
    assert (live.source.type, live.source.device_id, live.media.timestamp) == ("webrtc_stream", "live-cam", NOW)
    assert (snap.source.type, snap.source.device_id, snap.media.format) == ("mqtt_snapshot", dev, "jpeg")
    assert (video.source.type, video.source.device_id, video.media.type, video.media.format) == (
        "mqtt_upload", rec_dev, "video", "mp4")
    assert (video.media.width, video.media.height) == (400, 532)
    assert (up.source.type, up.media.format) == ("mqtt_upload", "jpeg")
    assert reused.analysis == snap.analysis and reused.user_context == "and now?"
    assert again.context.source == snap.source and again.yolo_ms > 0
    assert clip_again.context.source == video.source and clip_again.context.media.type == "video"


def steps(chosen: Selected | None) -> list[int]:
    assert chosen is not None
    return [int(line.split()[1]) for line in chosen.decisions]


async def test_step_1_attached_media_comes_first(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    attached: Analysed = await rig.sources.upload(bus_jpeg(), "jpeg", "s1", "what's in this?")
    add_live(rig.views, "cam", "hall")  # a live camera too: the attachment still wins
    with caplog.at_level(logging.INFO, logger="ai_server.media.selection"):
        chosen = await rig.selection.select("cam", "hall", "what's in this?", attached=attached)
    assert chosen is not None and (chosen.step, chosen.name) == (1, "attached") and steps(chosen) == [1]
    assert chosen.context == attached.context and "Visual context: " in chosen.prompt
    assert "step 1 (attached): the message carries media" in caplog.text


async def test_step_2_a_historical_question_is_answered_from_the_store(rig: Rig) -> None:
    rig.plane.media.store.events.add(time=NOW.replace(hour=3, minute=12), device_id="front_cam", zone="front_door",
                               alert_type="person_detected", label="person", confidence=0.8, track_id=1,
                               outcome="alerted")
    add_live(rig.views, "front_cam", "hall", "front_door")
    chosen = await rig.selection.select("kitchen", "kitchen", "what did the front door camera see at 3am")
    assert chosen is not None and chosen.step == 2 and steps(chosen) == [1, 2]
    assert chosen.prompt.startswith("From the stored camera history") and "person" in chosen.prompt
    assert chosen.context is None


async def test_step_3_the_live_stream_of_the_asking_device(rig: Rig) -> None:
    add_live(rig.views, "hall-cam", "hall")
    chosen = await rig.selection.select("hall-cam", "hall", "what do you see?")
    assert chosen is not None and chosen.step == 3 and steps(chosen) == [1, 2, 3]
    assert chosen.device_id == "hall-cam" and chosen.context is not None
    assert chosen.context.source.type == "webrtc_stream" and people(chosen.context) >= 3


async def test_step_4_a_snapshot_from_the_asking_device(rig: Rig) -> None:
    dev = uid("asker")
    async with real_device(rig.mqtt, dev, zone=uid("z")) as (_agent, control):
        control.jpeg = bus_jpeg()
        await until(lambda: (r := rig.plane.registry.get(dev)) is not None and r.online)
        chosen = await rig.selection.select(dev, "hall", "what do you see?")
    assert chosen is not None and chosen.step == 4 and steps(chosen) == [1, 2, 3, 4]
    assert chosen.context is not None and chosen.context.source.type == "mqtt_snapshot"
    assert "step 3 (live_stream): no live stream" in chosen.decisions[2]
    assert rig.plane.media.store.recent(5, source="mqtt_snapshot", device_id=dev) != []


async def test_step_5_the_best_camera_in_the_same_zone(rig: Rig, watch: Watch) -> None:
    zone, asker, cam = uid("zone"), uid("speaker"), uid("zcam")
    await announce_device(watch, asker, capabilities=("audio", "speaker"), room=None, zone=zone)
    async with real_device(rig.mqtt, cam, zone=zone) as (_agent, control):
        control.jpeg = bus_jpeg()
        await until(lambda: (r := rig.plane.registry.get(cam)) is not None and r.online
                    and rig.plane.registry.get(asker) is not None)
        chosen = await rig.selection.select(asker, "", "what do you see?")
    assert chosen is not None and chosen.step == 5 and steps(chosen) == [1, 2, 3, 4, 5]
    assert chosen.device_id == cam and "without a camera" in chosen.decisions[3]
    # ... and a live camera in the asker's room is preferred to a snapshot there.
    add_live(rig.views, "den-cam", "den")
    chosen = await rig.selection.select(uid("nobody"), "den", "what do you see?")
    assert chosen is not None and chosen.step == 5 and chosen.device_id == "den-cam"
    assert chosen.context is not None and chosen.context.source.type == "webrtc_stream"


async def test_step_6_no_source_says_so(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ai_server.media.selection"):
        chosen = await rig.selection.select(uid("lonely"), uid("attic"), "what do you see?")
    assert chosen is not None and chosen.step == 6 and steps(chosen) == [1, 2, 3, 4, 5, 6]
    assert chosen.prompt == NO_CAMERA and chosen.context is None
    assert all(f"step {n} (" in caplog.text for n in range(1, 7))
    assert await rig.selection.look("x", "y", "tell me a joke") == Seen()  # not visual: left alone


async def test_bad_inputs_fail_clearly_are_counted_and_nothing_is_stored(rig: Rig, watch: Watch) -> None:
    dev = uid("badsnap")
    async with real_device(rig.mqtt, dev, zone=uid("z")) as (_agent, control):
        await until(lambda: (r := rig.plane.registry.get(dev)) is not None and r.online)
        control.jpeg = bus_jpeg()[: len(bus_jpeg()) // 2]  # a corrupt (truncated) snapshot
        with pytest.raises(SourceFailed) as corrupt:
            await rig.sources.snapshot(dev, "what?")
        assert corrupt.value.reason == "corrupt"
        buf = io.BytesIO()
        Image.open(io.BytesIO(bus_jpeg())).save(buf, format="PNG")
        control.jpeg = buf.getvalue()  # the agent declares jpeg: wrong declared format
        with pytest.raises(SourceFailed) as mismatch:
            await rig.sources.snapshot(dev, "what?")
        assert mismatch.value.reason == "content_mismatch"
    assert rig.plane.media.store.recent(5, source="mqtt_snapshot", device_id=dev) == []
    with pytest.raises(SourceFailed) as unknown:
        await rig.sources.snapshot(uid("ghost"), "what?")
    assert unknown.value.reason == "unknown_device" and "unknown" in str(unknown.value)
    with pytest.raises(SourceFailed) as missing:
        await rig.sources.stored("0" * 32)
    assert missing.value.reason == "not_found"
    with pytest.raises(SourceFailed) as no_frame:
        await rig.sources.live(uid("nocam"))
    assert no_frame.value.reason == "no_frame"
    # Recordings: a truncated clip, a clip declared webm that is mp4, and truncated base64.
    rec = uid("badrec")
    await announce_device(watch, rec)
    await until(lambda: rig.plane.registry.get(rec) is not None)
    clip = mp4()
    before = sum(rig.plane.metrics.rejected.values())
    for fmt, data in (("mp4", b64(clip[: len(clip) // 3])), ("webm", b64(clip)), ("mp4", b64(clip)[:-3])):
        await watch.publish(topics.media_recording(rec), {"request_id": uid("r"), "media_type": "video",
                                                          "format": fmt, "data": data})
    await until(lambda: sum(rig.plane.metrics.rejected.values()) >= before + 3, 30)
    await asyncio.sleep(0.2)
    assert rig.plane.media.store.recent(5, source="mqtt_recording", device_id=rec) == []
    assert rig.sources.failures["mqtt_snapshot:corrupt"] == 1
    assert rig.sources.failures["mqtt_snapshot:content_mismatch"] == 1
    assert rig.sources.failures["mqtt_snapshot:unknown_device"] == 1
    assert rig.plane.metrics.events["visual_source_failed"] >= 5
