"""The real hub with real aiortc device peers over loopback and a fake AI server (the only fake)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from shared.contract import pb

from .conftest import RATE, FakeAI, HubFactory, connect_device, get_json, get_text, until

pytestmark = pytest.mark.integration

SILENCE = np.zeros(RATE // 2, dtype=np.int16)  # 0.5 s


def upstream_seconds(run: list[pb.AudioInput]) -> float:
    return sum(len(m.audio_pcm) for m in run) / 2 / 16000


async def test_speech_in_reply_out(make_hub: HubFactory, fake_ai: FakeAI, phrase: np.ndarray) -> None:
    hub = await make_hub()
    dev = await connect_device(hub.url, "pi-kitchen")
    try:
        # The hub swapped aiortc's audio jitter buffer for one that releases each packet at once
        # (HUB_JITTER_PREFETCH 0).
        [receiver] = [t.receiver for t in hub.sessions["pi-kitchen"].pc.getTransceivers() if t.kind == "audio"]
        assert hub.settings.hub_jitter_prefetch == 0
        assert type(receiver._RTCRtpReceiver__jitter_buffer).__name__ == "AudioJitterBuffer"
        speech_s = phrase.size / RATE
        dev.mic.say(np.concatenate([SILENCE, phrase, SILENCE, SILENCE]))
        await until(lambda: len(fake_ai.utterances("pi-kitchen")) == 1, 10, "one utterance upstream")
        [run] = fake_ai.utterances("pi-kitchen")
        start, *middle, end = run
        # Wire conventions.
        assert start.event == pb.START and end.event == pb.END
        assert all(m.event == pb.CONTINUE and len(m.audio_pcm) == 640 for m in middle)
        assert all(m.sample_rate == 16000 and m.codec == pb.PCM_S16LE and m.chunk_duration_ms == 20 for m in run)
        assert len(start.audio_pcm) == 13 * 640  # 200 ms pre-roll + 3 onset frames
        assert {m.conversation_id for m in run} == {hub.sessions["pi-kitchen"].conversation_id}
        seqs = [m.sequence_num for m in run]
        assert seqs == sorted(seqs)
        ts = [m.timestamp_ms for m in run]
        assert ts == sorted(ts)
        # The audio that went up is the utterance: its length plus pre-roll and hangover.
        assert speech_s - 0.1 < upstream_seconds(run) < speech_s + 0.2 + 0.3 + 0.3
        # The reply (a 1 s tone at 22050 Hz) is heard by the device.
        await until(lambda: dev.loud_frames() >= 40, 10, "the reply audio at the device")
        await until(lambda: len(hub.turns) == 1, 5, "the turn recorded")
        status, turns = await get_json(f"{hub.url}/turns")
        assert status == 200 and len(turns) == 1
        t = turns[0]
        assert t["device_id"] == "pi-kitchen" and t["transcript"].startswith("heard ")
        assert t["reply_text"] == "A tone." and t["error_code"] == "NONE"
        assert t["conversation_id"] == start.conversation_id and t["finished_at"]
        assert t["timing"]["stt_ms"] == 10 and t["timing"]["hub_end_to_first_audio_ms"] >= 0
        await until(lambda: "hub_end_to_playout_ms" in hub.turns.recent()[0].timing, 5, "playout timing")
        # /health and /metrics agree with what happened.
        status, health = await get_json(f"{hub.url}/health")
        assert status == 200
        assert set(health) == {"status", "uptime_secs", "active_devices", "grpc_connected", "frames_forwarded",
                               "vad_onsets", "vad_ends", "tts_frames_routed", "grpc_reconnects"}
        assert health["status"] == "ok" and health["grpc_connected"] is True
        assert health["active_devices"] == 1 and health["vad_onsets"] == 1 and health["vad_ends"] == 1
        assert health["frames_forwarded"] == sum(len(m.audio_pcm) // 640 for m in run)
        assert health["tts_frames_routed"] == 10 and health["grpc_reconnects"] == 0
        assert isinstance(health["uptime_secs"], int)
        text = await get_text(f"{hub.url}/metrics")
        assert "naila_hub_frames_forwarded_total" in text
        assert "naila_hub_uplink_latency_seconds_count" in text
        assert "naila_hub_downlink_latency_seconds_count" in text
        assert "naila_hub_grpc_end_to_first_audio_seconds_count 1.0" in text
        assert hub.metrics.uplink_latency.collect()[0].samples  # observed
    finally:
        await dev.close()


async def test_two_devices_stay_separate(make_hub: HubFactory, fake_ai: FakeAI, phrase: np.ndarray) -> None:
    # Both microphones play the same phrase at once: with arbitration on, the hub would rightly
    # take that for one person heard in two rooms (tests/hub/test_session_arbitration.py).
    # Here the point is demultiplexing, so each device must open its own utterance.
    hub = await make_hub(hub_arbitration_window_ms=0)
    a = await connect_device(hub.url, "pi-a")
    b = await connect_device(hub.url, "pi-b")
    try:
        fake_ai.replies_enabled = False
        short = phrase[: phrase.size // 2]
        a.mic.say(np.concatenate([SILENCE, phrase, SILENCE, SILENCE]))
        b.mic.say(np.concatenate([SILENCE, short, SILENCE, SILENCE]))
        await until(lambda: len(fake_ai.utterances("pi-a")) == 1 and len(fake_ai.utterances("pi-b")) == 1,
                    10, "one utterance from each device")
        [ra], [rb] = fake_ai.utterances("pi-a"), fake_ai.utterances("pi-b")
        assert {m.device_id for m in ra} == {"pi-a"} and {m.device_id for m in rb} == {"pi-b"}
        assert ra[0].conversation_id != rb[0].conversation_id

        assert phrase.size / RATE - 0.1 < upstream_seconds(ra) < phrase.size / RATE + 0.8
        assert short.size / RATE - 0.1 < upstream_seconds(rb) < short.size / RATE + 0.8
        # A reply for a is heard by a only.
        fake_ai.replies_enabled = True
        since = time.monotonic()
        a.mic.say(np.concatenate([phrase, SILENCE, SILENCE]))
        await until(lambda: a.loud_frames(since) >= 40, 12, "reply at device a")
        assert b.loud_frames(since) == 0
        assert hub.metrics.health()["active_devices"] == 2
    finally:
        await a.close()
        await b.close()


async def test_reconnect_with_the_same_id_replaces_the_session(
    make_hub: HubFactory, fake_ai: FakeAI, phrase: np.ndarray
) -> None:
    hub = await make_hub()
    first = await connect_device(hub.url, "pi-1")
    old_session = hub.sessions["pi-1"]
    second = await connect_device(hub.url, "pi-1")
    try:
        assert old_session.closed and old_session.close_reason == "replaced"
        assert hub.sessions["pi-1"] is not old_session and len(hub.sessions) == 1
        await until(lambda: first.pc.connectionState in ("closed", "failed"), 5, "the old peer told to go")
        second.mic.say(np.concatenate([SILENCE, phrase, SILENCE, SILENCE]))
        await until(lambda: len(fake_ai.utterances("pi-1")) == 1, 10, "utterance from the new session")
        [run] = fake_ai.utterances("pi-1")
        assert run[0].conversation_id == hub.sessions["pi-1"].conversation_id != old_session.conversation_id
        await until(lambda: second.loud_frames() >= 40, 10, "reply at the new session")
        assert first.loud_frames() == 0
        assert hub.metrics.sessions_closed["replaced"] == 1
    finally:
        await first.close()
        await second.close()


async def test_ai_server_restart_mid_session(make_hub: HubFactory, fake_ai: FakeAI, phrase: np.ndarray) -> None:
    hub = await make_hub()
    dev = await connect_device(hub.url, "pi-r")
    try:
        port = fake_ai.port
        await fake_ai.stop()
        await until(lambda: not hub.link.connected, 5, "hub noticing the AI server is gone")
        status, health = await get_json(f"{hub.url}/health")
        assert status == 503 and health["status"] == "degraded" and health["grpc_connected"] is False
        # Speech while the AI server is down: dropped and counted, the WebRTC session stays up.
        dev.mic.say(np.concatenate([SILENCE, phrase[: RATE // 2]]))
        await until(lambda: hub.metrics.frames_dropped["ai_disconnected"] > 10, 5, "dropped frames counted")
        assert dev.pc.connectionState == "connected" and "pi-r" in hub.sessions
        await fake_ai.start(port)
        await until(lambda: hub.link.connected, 10, "hub reconnecting")
        status, health = await get_json(f"{hub.url}/health")
        assert status == 200 and health["status"] == "ok" and health["grpc_reconnects"] == 1
        await until(lambda: dev.mic.pending_s == 0, 5, "the cut utterance played out")
        await asyncio.sleep(0.6)  # let its END pass (it is dropped: no START on this stream)
        dev.mic.say(np.concatenate([SILENCE, phrase, SILENCE, SILENCE]))
        await until(lambda: len(fake_ai.utterances("pi-r")) == 1, 10, "the next utterance after the restart")
        # The new stream starts cleanly: the first message for the device is a START.
        assert fake_ai.inputs["pi-r"][0].event == pb.START
        await until(lambda: dev.loud_frames() >= 40, 10, "reply after the restart")
    finally:
        await dev.close()


async def test_frozen_ai_server_is_detected_by_heartbeat(
    make_hub: HubFactory, fake_ai: FakeAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hub.ai_link

    monkeypatch.setattr(hub.ai_link, "HEARTBEAT_PERIOD_S", 0.1)
    monkeypatch.setattr(hub.ai_link, "HEARTBEAT_TIMEOUT_S", 0.2)
    monkeypatch.setattr(hub.ai_link, "HEARTBEAT_MISSES", 2)
    h = await make_hub()
    await until(lambda: fake_ai.status_calls >= 2, 5, "heartbeats")
    assert h.metrics.grpc_status_rtt.collect()[0].samples
    assert h.link.connected and h.metrics.grpc_heartbeat_failures == 0
    # The server stops answering (but its TCP connection stays up): the hub re-opens the stream.
    fake_ai.status_hangs = True
    await until(lambda: h.metrics.grpc_heartbeat_failures == 1, 5, "the heartbeat to give up")
    fake_ai.status_hangs = False
    await until(lambda: h.link.connected and h.metrics.grpc_reconnects >= 1, 5, "a fresh stream")
    assert fake_ai.streams >= 2


async def test_barge_in_interrupts_and_silences_the_device(
    make_hub: HubFactory, fake_ai: FakeAI, phrase: np.ndarray
) -> None:
    hub = await make_hub()
    dev = await connect_device(hub.url, "pi-b")
    try:
        fake_ai.reply_seconds = 8.0
        dev.mic.say(np.concatenate([SILENCE, phrase, SILENCE]))
        await until(lambda: dev.loud_frames() >= 25, 10, "a long reply playing")
        assert hub.sessions["pi-b"].tts.playing
        dev.mic.say(phrase)  # the user talks over it
        await until(lambda: fake_ai.interrupted["pi-b"] == 1, 10, "INTERRUPT upstream")
        # The new utterance's START follows in the same hub step, but reaches the fake AI server
        # as its own message: on a loaded runner it can be read a moment after the INTERRUPT.
        await until(lambda: len(fake_ai.events("pi-b")) > fake_ai.events("pi-b").index(pb.INTERRUPT) + 1, 5,
                    "the event after INTERRUPT")
        events = fake_ai.events("pi-b")
        i = events.index(pb.INTERRUPT)
        assert events[i + 1] == pb.START
        interrupted_at = time.monotonic()
        assert dev.loud_frames(interrupted_at - 0.5, interrupted_at) > 20  # it was playing until now
        await asyncio.sleep(1.0)
        # The 8 s reply stopped at once: silence from ~1 network hop after the INTERRUPT until
        # the answer to the new utterance (which is still being spoken) could start.
        assert dev.loud_frames(interrupted_at + 0.15, interrupted_at + 1.0) == 0
        assert hub.metrics.interrupts == 1
    finally:
        await dev.close()


async def test_dead_peer_without_rtp_is_closed(make_hub: HubFactory, fake_ai: FakeAI) -> None:
    hub = await make_hub(hub_dead_peer_timeout_s=1.0)
    dev = await connect_device(hub.url, "pi-dead")
    try:
        await asyncio.sleep(0.3)
        assert "pi-dead" in hub.sessions
        dev.mic.muted.set()  # the device stops sending RTP (but never says goodbye)
        await until(lambda: "pi-dead" not in hub.sessions, 5, "dead peer closed")
        assert hub.metrics.sessions_closed["no_rtp"] == 1
        _, health = await get_json(f"{hub.url}/health")
        assert health["active_devices"] == 0
    finally:
        await dev.close()


async def test_peer_that_closes_is_cleaned_up(make_hub: HubFactory, fake_ai: FakeAI) -> None:
    hub = await make_hub()
    dev = await connect_device(hub.url, "pi-bye")
    session = hub.sessions["pi-bye"]
    await dev.close()
    await until(lambda: "pi-bye" not in hub.sessions, 10, "closed peer cleaned up")
    assert session.closed and session.tts.readyState == "ended"
    assert not [t for t in asyncio.all_tasks() if t.get_name().endswith("-pi-bye") and not t.done()]
