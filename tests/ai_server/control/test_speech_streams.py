"""Which hub stream unprompted speech goes to (ai_server/control/speech.py ``Speaker._stream_for``).

The stream that most recently sent a device's audio carries it; a device no stream has carried goes
to the only hub connected, or to the only one that sent any audio in the last RECENT_AUDIO_S; else
a clear refusal. Unit tests drive real ConversationSessions on a hand-moved clock; the integration
test runs a real AI server with two real StreamConversation streams and asks over MQTT (speak_on).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest

from ai_server.client import StreamClient, silence
from ai_server.control.metrics import ControlMetrics
from ai_server.control.registry import DeviceRegistry
from ai_server.control.speech import RECENT_AUDIO_S, Speaker, SpeakError
from ai_server.conversation import Conversations
from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS
from ai_server.pipeline import Pipeline
from ai_server.session import ConversationSession
from shared.audio import HUB_RATE
from shared.contract import pb
from shared.mqtt import DeviceStatus, build, topics
from tests.ai_server.control.conftest import ControlFactory, Watch, announce_device, uid, until
from tests.ai_server.test_preemptive import queued


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Hubs:
    """``n`` hub streams (real ConversationSessions) and a Speaker over them, on one clock."""

    def __init__(self, n: int) -> None:
        self.clock = Clock()
        metrics = ControlMetrics()
        self.registry = DeviceRegistry(metrics)
        pipeline = Pipeline(FakeSTT(), FakeLLM(), FakeTTS(), Conversations("sys", 4))
        self.streams = [ConversationSession(pipeline, clock=self.clock) for _ in range(n)]
        self.order = list(self.streams)  # what the service's (unordered) set hands out
        self.speaker = Speaker(pipeline, self.registry, metrics, lambda: self.order, clock=self.clock)
        for device_id in ("kitchen-1", "hall-1", "bed-1"):
            self.registry.update(build(DeviceStatus, device_id=device_id, online=True,
                                       capabilities=["audio", "speaker"], firmware_version="t", room="r"))

    def audio(self, stream: int, device_id: str) -> None:
        """One frame of the device's audio arrives on ``stream`` (an utterance starts, nothing ends)."""
        pcm = np.zeros(HUB_RATE // 50, np.int16).astype("<i2").tobytes()
        self.streams[stream].handle(pb.AudioInput(
            device_id=device_id, conversation_id="c1", audio_pcm=pcm, codec=pb.PCM_S16LE, sample_rate=HUB_RATE,
            event=pb.START))

    async def spoken_on(self, device_id: str) -> int:
        """Speak on ``device_id``; the index of the stream its is_final went out on."""
        for spoken in self.speaker.speak(device_id, "Hello."):
            await spoken.task
        where = [i for i, s in enumerate(self.streams)
                 if any(m.is_final and m.device_id == device_id for m in queued(s))]
        assert len(where) == 1, where
        return where[0]


@pytest.mark.unit
async def test_an_idle_extra_stream_does_not_stop_speech_for_a_device_that_has_not_spoken() -> None:
    hubs = Hubs(2)
    hubs.audio(0, "hall-1")  # stream 0 is a live hub; stream 1 is connected but silent
    assert await hubs.spoken_on("kitchen-1") == 0  # was: "2 hubs are connected and none has carried ..."
    hubs.order.reverse()  # the service's set has no order: the choice must not depend on it
    assert await hubs.spoken_on("bed-1") == 0


@pytest.mark.unit
async def test_the_stream_that_last_sent_the_devices_audio_carries_it() -> None:
    hubs = Hubs(2)
    hubs.audio(0, "hall-1")
    assert await hubs.spoken_on("kitchen-1") == 0  # stream 0 now speaks for kitchen-1, but never heard it
    hubs.clock.t += 1
    hubs.audio(1, "kitchen-1")
    assert await hubs.spoken_on("kitchen-1") == 1  # its audio is on stream 1: speaking elsewhere did not count
    hubs.order.reverse()
    assert await hubs.spoken_on("kitchen-1") == 1
    hubs.clock.t += 1
    hubs.audio(0, "kitchen-1")  # the device moved to the other hub
    assert await hubs.spoken_on("kitchen-1") == 0


@pytest.mark.unit
async def test_streams_that_cannot_be_told_apart_are_refused_plainly() -> None:
    hubs = Hubs(2)
    with pytest.raises(SpeakError, match=r"^cannot tell which of the 2 connected hubs carries device kitchen-1: "
                       r"none has sent its audio, and none sent any audio in the last 600 s$"):
        hubs.speaker.speak("kitchen-1", "Hello.")
    hubs.audio(0, "hall-1")
    hubs.audio(1, "bed-1")
    with pytest.raises(SpeakError, match=r"and 2 sent any audio in the last 600 s$"):
        hubs.speaker.speak("kitchen-1", "Hello.")
    assert all(queued(s) == [] for s in hubs.streams)  # refused before anything was started
    # Stream 0's audio ages out of the window; stream 1 speaks again: it is the live one.
    hubs.clock.t += RECENT_AUDIO_S + 1
    hubs.audio(1, "bed-1")
    assert await hubs.spoken_on("kitchen-1") == 1
    # Known devices still go where their audio is, however long ago.
    assert await hubs.spoken_on("hall-1") == 0


@pytest.mark.unit
async def test_one_hub_is_used_for_every_device_and_no_hub_is_said() -> None:
    hubs = Hubs(1)
    assert await hubs.spoken_on("kitchen-1") == 0  # nobody spoke yet: the only hub routes by device id
    hubs.order.clear()
    with pytest.raises(SpeakError, match=r"^no hub is connected to the AI server$"):
        hubs.speaker.speak("kitchen-1", "Hello.")


# ---- two real hub streams on a real server -------------------------------------------------------

VOICE = np.concatenate([np.full(9600, 3000, np.int16), silence(300)])


async def chat(watch: Watch, session_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    reply_topic = topics.chat_reply(session_id)
    await watch.subscribe(reply_topic)
    await watch.publish(topics.chat_request(session_id), json.dumps(payload))
    return await watch.next_json(reply_topic)


async def unprompted(hub: StreamClient, device_id: str) -> list[pb.AudioOutput]:
    return [m for _, m in (await hub.turn(device_id, 0.0, within_s=5)).messages]


@pytest.mark.integration
@pytest.mark.timeout(60)
async def test_speak_on_with_two_hub_streams_follows_the_devices_audio(
    control_server: ControlFactory, watch: Watch
) -> None:
    server, plane = await control_server(llm=FakeLLM("The oven is off."))
    room = uid("kitchen")
    dev, other, sid = uid("spk"), uid("spk"), uid("chat-streams")
    await announce_device(watch, dev, room=room)
    await announce_device(watch, other, room=room)
    await until(lambda: plane.registry.get(dev) is not None and plane.registry.get(other) is not None)
    ask = {"session_id": sid, "text": "Is the oven on?", "speak_on": dev}
    async with StreamClient(server.address) as hub_a, StreamClient(server.address) as hub_b:
        await until(lambda: len(server.service.sessions) == 2)
        # Two connected hubs, neither has sent any audio: no way to tell, said plainly.
        idle = await chat(watch, sid, ask)
        assert idle["text"] == "The oven is off."
        assert idle["error"] == (f"not spoken on {dev}: cannot tell which of the 2 connected hubs carries device "
                                 f"{dev}: none has sent its audio, and none sent any audio in the last 600 s")
        # Hub A carries another device's voice: it is the live hub, hub B stays idle.
        reply = await hub_a.turn(other, await hub_a.speak(other, VOICE), within_s=10)
        assert reply.final is not None and reply.final.error_code == pb.NONE
        assert (await chat(watch, sid, ask))["error"] is None
        assert (await unprompted(hub_a, dev))[-1].reply_text == "The oven is off."
        # The device speaks through hub B: its speech follows it there.
        reply = await hub_b.turn(dev, await hub_b.speak(dev, VOICE), within_s=10)
        assert reply.final is not None and reply.final.error_code == pb.NONE
        assert (await chat(watch, sid, ask))["error"] is None
        played = await unprompted(hub_b, dev)
        assert played[-1].reply_text == "The oven is off." and any(m.audio_pcm for m in played)
        await asyncio.sleep(0.3)
        assert hub_a.pending(dev) == 0
    assert plane.metrics.events["speech_refused"] == 1
    await until(lambda: plane.metrics.events["speech_done"] == 2)
