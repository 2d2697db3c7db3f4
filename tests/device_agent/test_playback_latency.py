"""The reply's playout path at the device (issue 20): a playback queue that does not grow from
turn to turn. The buffers of a live session: test_playout_buffers_live.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from device_agent.audio_pipeline import PlaybackBuffer
from shared.audio import Int16Array
from shared.rtc_tuning import tune_jitter_buffer

pytestmark = pytest.mark.unit

RATE = 48_000
CHUNK = 960  # one 20 ms packet from the hub
BLOCK = 480  # one 10 ms sound-card block
SILENCE: Int16Array = np.zeros(CHUNK, np.int16)


def speech(n: int = CHUNK) -> Int16Array:
    return (8000 * np.sin(2 * np.pi * 440 * np.arange(n) / RATE)).astype(np.int16)


def ms_until_heard(pb: PlaybackBuffer, limit_blocks: int = 100) -> float:
    """Sound-card time (10 ms blocks) until the first non-silent sample plays."""
    for k in range(limit_blocks):
        block = pb.pull(BLOCK)
        nz = np.flatnonzero(block)
        if nz.size:
            return (k * BLOCK + int(nz[0])) * 1000 / RATE
    raise AssertionError("the reply never played")


def test_a_faster_hub_clock_does_not_grow_the_queue_between_replies() -> None:
    """The hub sends 21 packets while the card plays 20 (a 5 % faster clock, exaggerated): the
    extra silence is dropped, so the reply after a minute of idle starts as soon as the first."""
    pb = PlaybackBuffer(RATE, prebuffer_ms=30)
    for i in range(3000):  # 60 s of idle
        pb.push(SILENCE)
        if i % 21 != 20:
            pb.pull(BLOCK)
            pb.pull(BLOCK)
        assert pb.buffered_ms <= 50  # prebuffer + one packet, never more
    assert pb.trimmed_samples > 0
    pb.push(speech())
    assert ms_until_heard(pb) <= 50


def test_a_burst_of_silence_after_a_stall_is_dropped_not_played() -> None:
    pb = PlaybackBuffer(RATE, prebuffer_ms=30)
    for _ in range(5):
        pb.push(SILENCE)
        pb.pull(BLOCK)
        pb.pull(BLOCK)
    for _ in range(10):  # 200 ms of silence arriving at once (an event-loop stall caught up)
        pb.push(SILENCE)
    assert pb.buffered_ms <= 50
    pb.push(speech())
    assert ms_until_heard(pb) <= 50


def test_a_reply_does_not_wait_behind_the_idle_hubs_silence_packet() -> None:
    """The idle hub sends one silence packet per 400 ms: it stays queued below the 40 ms prebuffer.
    The reply's first two packets (sent together by the hub) start playing on the next block, with
    the stale silence dropped rather than played first."""
    pb = PlaybackBuffer(RATE, prebuffer_ms=40)
    pb.push(SILENCE)
    for _ in range(5):
        assert not np.any(pb.pull(BLOCK))  # below the prebuffer: not playing
    pb.push(speech())
    pb.push(speech())
    assert ms_until_heard(pb) < 0.1  # the first block plays it
    assert pb.trimmed_samples == CHUNK


def test_a_reply_that_underran_keeps_its_queued_audio() -> None:
    """Only silence is dropped ahead of a reply: after an underrun mid-reply its audio is kept."""
    pb = PlaybackBuffer(RATE, prebuffer_ms=40)
    pb.push(speech())
    pb.push(speech())
    for _ in range(5):
        pb.pull(BLOCK)  # 40 ms played, then an underrun
    assert pb.underruns == 1
    pb.push(speech(CHUNK // 2))  # below the prebuffer: waits, and stays
    pb.push(speech())
    assert pb.buffered_ms == pytest.approx(30) and pb.trimmed_samples == 0
    pb.push(speech())
    played = np.concatenate([pb.pull(BLOCK) for _ in range(5)])
    assert np.array_equal(played, np.concatenate([speech(CHUNK // 2), speech(), speech()])[: 5 * BLOCK])


def test_speech_is_never_trimmed_and_pauses_inside_a_reply_only_shrink() -> None:
    pb = PlaybackBuffer(RATE, prebuffer_ms=30)
    reply = [speech(), speech(), SILENCE, speech(), speech()]
    for chunk in reply * 4:  # the whole reply arrives in one burst
        pb.push(chunk)
    assert pb.buffered_ms == pytest.approx(20 * 16)  # every speech packet kept, the pauses dropped
    played = np.concatenate([pb.pull(BLOCK) for _ in range(32)])
    assert np.count_nonzero(played) == np.count_nonzero(np.concatenate([speech()] * 16))


def test_tune_jitter_buffer_leaves_unknown_objects_alone() -> None:
    assert tune_jitter_buffer(object(), 1) is False


def _rtp(seq: int, payload: bytes) -> object:
    from aiortc.rtp import RtpPacket

    packet = RtpPacket(payload_type=111, sequence_number=seq, timestamp=960 * seq)
    packet._data = payload  # type: ignore[attr-defined]  # what aiortc's receiver sets from the depayloaded packet
    return packet


def _audio_buffer() -> object:
    from aiortc.jitterbuffer import JitterBuffer

    class Receiver:
        _RTCRtpReceiver__jitter_buffer = JitterBuffer(capacity=16, prefetch=4)

    receiver = Receiver()
    assert tune_jitter_buffer(receiver, 0) is True
    return receiver._RTCRtpReceiver__jitter_buffer


def test_prefetch_zero_releases_each_audio_packet_as_it_arrives() -> None:
    """aiortc completes a frame only when the next packet arrives (20 ms late for audio); prefetch 0
    hands every in-order Opus packet to the decoder at once."""
    buf: Any = _audio_buffer()
    for seq in range(65530, 65536 + 5):  # across the sequence number wrap
        _, frame = buf.add(_rtp(seq % 65536, bytes([seq % 256])))
        assert frame is not None and frame.data == bytes([seq % 256]) and frame.timestamp == 960 * (seq % 65536)


def test_prefetch_zero_waits_briefly_for_a_late_packet_then_skips_the_gap() -> None:
    buf: Any = _audio_buffer()
    assert buf.add(_rtp(100, b"a"))[1].data == b"a"
    assert buf.add(_rtp(102, b"c"))[1] is None  # 101 is missing: maybe only late
    _, frame = buf.add(_rtp(101, b"b"))  # it was late: played in order
    assert frame.data == b"b"
    assert buf.add(_rtp(103, b"d"))[1].data == b"c"  # one behind now, in order
    buf2: Any = _audio_buffer()
    buf2.add(_rtp(10, b"x"))
    assert [buf2.add(_rtp(s, bytes([s])))[1] for s in (12, 13)] == [None, None]
    _, frame = buf2.add(_rtp(14, b"\x0e"))  # three wait behind the lost 11: give it up
    assert frame.data == bytes([12]) and buf2.gaps_skipped == 1
