"""No raw audio persistence (spec §14.3, §15.3): audio is transcribed and its file dropped, the row keeps
the transcript; AI_KEEP_RAW_AUDIO keeps it. Also through the control plane's real recording handler."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ai_server.control.media import DeviceMedia
from ai_server.control.media_check import MediaPolicy
from ai_server.control.metrics import ControlMetrics
from ai_server.control.registry import DeviceRegistry
from ai_server.fakes import FakeSTT
from ai_server.store import MediaStore
from ai_server.store.media import AUDIO_GRACE_S
from ai_server.store.retention import RetentionPolicy, prune
from shared.config import MediaSettings, load
from shared.mqtt import MediaUpload
from tests.ai_server.control.test_media import wav_bytes

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def wav() -> bytes:
    return wav_bytes(200)


def _audio(store: MediaStore, *, age: timedelta = timedelta(0), analysis: dict[str, object] | None = None) -> str:
    return store.add(wav(), source="mqtt_recording", media_type="audio", format="wav", device_id="kitchen",
                     time=NOW - age, analysis=analysis).id


def test_by_default_a_transcript_ends_the_audio_file_and_the_row_keeps_it(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "m")
    clip = _audio(store)
    record = store.get(clip)
    assert record is not None and record.stored and record.path.is_file()  # STT reads it from disk
    store.set_analysis(clip, {"transcript": "turn on the lights"})
    after = store.get(clip)
    assert after is not None and not after.stored and not after.path.exists()
    assert after.analysis == {"transcript": "turn on the lights"} and after.size == len(wav())
    with pytest.raises(KeyError):
        store.read(clip)
    # Arriving transcribed (an upload analysed before storing): never written at all.
    upload = _audio(store, analysis={"transcript": "hello"})
    assert store.get(upload).stored is False  # type: ignore[union-attr]
    assert list(store.files.iterdir()) == []
    # Images are not raw audio: untouched by all this.
    image = store.add(b"png", source="mqtt_upload", media_type="image", format="png",
                      analysis={"transcript": "n/a"})
    assert image.stored and image.path.is_file()


def test_untranscribed_audio_is_dropped_after_the_grace_or_on_release(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "m")
    stale = _audio(store, age=timedelta(seconds=AUDIO_GRACE_S + 1))  # an Opus clip STT never read, say
    waiting = _audio(store, age=timedelta(seconds=10))  # still in the STT queue
    released = _audio(store)
    record = store.release_audio(released)  # STT gave up on it
    assert record is not None and not record.stored and not record.path.exists()
    pruned = prune(store, RetentionPolicy(), NOW)
    assert pruned.counts["raw_audio_dropped"] == 1
    assert store.get(stale).stored is False and store.get(waiting).stored is True  # type: ignore[union-attr]
    assert [p.name for p in store.files.iterdir()] == [f"{waiting}.wav"]


def test_keep_raw_audio_keeps_it_everywhere(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "m", keep_raw_audio=True)
    clip = _audio(store, age=timedelta(seconds=AUDIO_GRACE_S + 1))
    store.set_analysis(clip, {"transcript": "kept"})
    upload = _audio(store, analysis={"transcript": "kept too"})
    assert store.release_audio(clip).stored  # type: ignore[union-attr]
    assert prune(store, RetentionPolicy(), NOW).counts["raw_audio_dropped"] == 0
    assert store.read(clip) == wav() and store.read(upload) == wav()


@pytest.mark.parametrize("keep", [False, True])
async def test_a_device_recording_through_the_real_handler(tmp_path: Path, keep: bool) -> None:
    store = MediaStore(tmp_path / "m", keep_raw_audio=keep)
    metrics = ControlMetrics()

    async def publish(_: Any) -> None:
        raise AssertionError("nothing is published for an unrequested recording")

    media = DeviceMedia(publish, DeviceRegistry(metrics), metrics, MediaPolicy(load(MediaSettings)), store,
                        snapshot_timeout_s=1.0, stt=FakeSTT("what time is it"))
    upload = MediaUpload.model_validate({"request_id": "req_own", "media_type": "audio", "format": "wav",
                                         "data": base64.b64encode(wav()).decode()})
    record = await media.on_recording("kitchen", upload)
    row = store.get(record.id)
    assert row is not None and row.analysis == {"transcript": "what time is it"}
    assert row.stored is keep and row.path.exists() is keep
    assert [p.name for p in store.files.iterdir()] == ([f"{record.id}.wav"] if keep else [])
