"""Typed chat over MQTT: answers with history, speaking on a device through the hub's stream, refusals."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from ai_server.client import StreamClient, silence
from ai_server.fakes import FakeLLM, FakeTTS
from ai_server.pipeline import Seen
from shared.contract import pb
from shared.mqtt import topics
from tests.ai_server.control.conftest import ControlFactory, Watch, announce_device, uid, until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def chat(watch: Watch, session_id: str, payload: dict[str, Any] | bytes) -> dict[str, Any]:
    reply_topic = topics.chat_reply(session_id)
    await watch.subscribe(reply_topic)
    await watch.publish(topics.chat_request(session_id), payload if isinstance(payload, bytes) else json.dumps(payload))
    return await watch.next_json(reply_topic)


async def test_chat_round_trip_keeps_the_conversation(control_server: ControlFactory, watch: Watch) -> None:
    llm = FakeLLM("Paris is the capital of France.")
    _server, plane = await control_server(llm=llm)
    sid = uid("chat")
    first = await chat(watch, sid, {"session_id": sid, "text": "What is the capital of France?"})
    assert first["text"] == "Paris is the capital of France." and first["error"] is None
    conversation = first["conversation_id"]
    assert conversation.startswith("chat-")

    second = await chat(watch, sid, {"session_id": sid, "text": "And its population?", "conversation_id": conversation})
    assert second["conversation_id"] == conversation
    history = [(m["role"], m["content"]) for m in llm.requests[-1] if m["role"] != "system"]
    assert history == [
        ("user", "What is the capital of France?"),
        ("assistant", "Paris is the capital of France."),
        ("user", "And its population?"),
    ]
    # The same conversation id from another session is another thread (ids are not secrets).
    other = uid("chat-other")
    await chat(watch, other, {"session_id": other, "text": "Hi", "conversation_id": conversation})
    assert [m["content"] for m in llm.requests[-1] if m["role"] != "system"] == ["Hi."]  # as written
    assert plane.metrics.events["chat_answered"] == 3


async def test_an_llm_failure_is_an_error_reply(control_server: ControlFactory, watch: Watch) -> None:
    _server, _plane = await control_server(llm=FakeLLM(fail_after=0))
    sid = uid("chat-fail")
    reply = await chat(watch, sid, {"session_id": sid, "text": "Hello?", "conversation_id": "c1"})
    assert reply["text"] == "" and "LLMError" in reply["error"] and reply["conversation_id"] == "c1"


async def test_a_slow_llm_is_cut_off_at_the_chat_timeout(control_server: ControlFactory, watch: Watch) -> None:
    llm = FakeLLM("This takes far too long to say.", piece_delay_s=0.2)
    _server, plane = await control_server(llm=llm, settings={"ai_chat_timeout_s": 0.3})
    sid = uid("chat-slow")
    reply = await chat(watch, sid, {"session_id": sid, "text": "Hello?"})
    assert reply["text"] == "" and "longer than 0.3 s (AI_CHAT_TIMEOUT_S)" in reply["error"]
    assert llm.closed_early == 1 and plane.metrics.events["chat_failed"] == 1


async def test_malformed_requests_are_answered_and_do_not_stop_the_loop(
    control_server: ControlFactory, watch: Watch
) -> None:
    _server, plane = await control_server()
    sid = uid("chat-bad")
    bad_json = await chat(watch, sid, b'{"session_id": "' + sid.encode() + b'", "text": "hi", "conversation_id": "k9"')
    assert bad_json["text"] == "" and bad_json["error"].startswith("refused (malformed)")
    assert bad_json["conversation_id"] == "k9"  # recovered from the broken payload
    empty_text = await chat(watch, sid, {"session_id": sid, "text": ""})
    assert empty_text["error"].startswith("refused (malformed)")
    spoofed = await chat(watch, sid, {"session_id": "someone-else", "text": "hi"})
    assert spoofed["error"].startswith("refused (unauthorised)")
    not_text = await chat(watch, sid, b"\xff\xfe not even utf-8")
    assert not_text["error"].startswith("refused (malformed)")
    good = await chat(watch, sid, {"session_id": sid, "text": "Still there?"})
    assert good["error"] is None and good["text"]
    assert plane.metrics.rejected["malformed"] == 3 and plane.metrics.rejected["unauthorised"] == 1


async def test_a_session_over_its_rate_is_refused_and_others_are_not(
    control_server: ControlFactory, watch: Watch
) -> None:
    _server, plane = await control_server(settings={"ai_mqtt_rate_per_s": 0.01, "ai_mqtt_rate_burst": 2})
    sid, other = uid("chat-flood"), uid("chat-calm")
    replies = [await chat(watch, sid, {"session_id": sid, "text": f"q{i}"}) for i in range(3)]
    assert [r["error"] is None for r in replies] == [True, True, False]
    assert replies[2]["error"].startswith("refused (rate_limited)")
    assert (await chat(watch, other, {"session_id": other, "text": "hi"}))["error"] is None
    assert plane.metrics.rejected["rate_limited"] == 1


async def test_speak_on_a_device_pushes_the_answer_onto_the_hub_stream(
    control_server: ControlFactory, watch: Watch
) -> None:
    tts = FakeTTS()
    server, plane = await control_server(llm=FakeLLM("The oven is off."), tts=tts)
    dev, sid = uid("spk"), uid("chat-spk")
    await announce_device(watch, dev, room="kitchen")
    await until(lambda: plane.registry.get(dev) is not None)
    async with StreamClient(server.address) as hub:
        await until(lambda: len(server.service.sessions) == 1)
        reply = await chat(watch, sid, {"session_id": sid, "text": "Is the oven on?", "speak_on": dev})
        assert reply["text"] == "The oven is off." and reply["error"] is None
        messages = []
        while not messages or not messages[-1].is_final:
            messages.append((await hub.next(dev, 5))[1])
    audio = [m for m in messages if m.audio_pcm]
    assert audio and audio[0].reply_text == "The oven is off." and audio[0].sample_rate == tts.sample_rate
    final = messages[-1]
    assert final.reply_text == "The oven is off." and final.error_code == pb.NONE
    assert all(m.device_id == dev and m.conversation_id == "" for m in messages)
    assert [m.sequence_num for m in messages] == list(range(1, len(messages) + 1))
    assert tts.texts == ["The oven is off."]
    counters = server.pipeline.metrics.counters
    assert counters.get("unprompted_turns") == 1 and "turns" not in counters  # not a spoken user turn
    await until(lambda: plane.metrics.events["speech_done"] == 1)


async def test_speak_on_that_cannot_be_honoured_still_answers_and_says_why(
    control_server: ControlFactory, watch: Watch
) -> None:
    _server, plane = await control_server(llm=FakeLLM("Sure."))
    dev, sid = uid("spk-none"), uid("chat-nospk")
    await announce_device(watch, dev)
    await until(lambda: plane.registry.get(dev) is not None)
    no_hub = await chat(watch, sid, {"session_id": sid, "text": "Hi", "speak_on": dev})
    assert no_hub["text"] == "Sure." and no_hub["error"] == f"not spoken on {dev}: no hub is connected to the AI server"
    unknown = await chat(watch, sid, {"session_id": sid, "text": "Hi", "speak_on": "nowhere"})
    assert unknown["text"] == "Sure." and "no online device or room" in unknown["error"]
    assert plane.metrics.events["speech_refused"] == 2


async def test_speech_waits_for_the_spoken_turn_in_flight_and_a_barge_in_cancels_it(
    control_server: ControlFactory, watch: Watch
) -> None:
    answer = "Here you go. That is the first part. And this is the rest."
    server, plane = await control_server(llm=FakeLLM(answer), tts=FakeTTS(delay_s=0.6))
    dev, sid = uid("spk-busy"), uid("chat-busy")
    await announce_device(watch, dev)
    await until(lambda: plane.registry.get(dev) is not None)
    async with StreamClient(server.address) as hub:
        await hub.speak(dev, np.concatenate([np.full(9600, 3000, np.int16), silence(300)]), conversation_id="conv-v")
        await until(lambda: any(d.turn is not None for s in server.service.sessions for d in s.devices.values()))
        reply = await chat(watch, sid, {"session_id": sid, "text": "Anything?", "speak_on": dev})
        assert reply["error"] is None
        spoken = []
        while not spoken or not spoken[-1].is_final:
            spoken.append((await hub.next(dev, 5))[1])
        assert {m.conversation_id for m in spoken} == {"conv-v"}  # the user's turn first, whole
        assert spoken[-1].error_message == ""
        first = (await hub.next(dev, 5))[1]  # then the chat answer, as its own turn
        assert first.conversation_id == "" and first.audio_pcm and first.reply_text == "Here you go."
        hub.interrupt(dev, "conv-v")  # the hub's barge-in while the answer is still being synthesised
        rest = [(await hub.next(dev, 5))[1]]
        while not rest[-1].is_final:
            rest.append((await hub.next(dev, 5))[1])
    final = rest[-1]
    assert final.error_message == "interrupted" and final.conversation_id == ""
    assert final.reply_text == "Here you go."  # what was spoken before the cut
    await until(lambda: plane.metrics.events["speech_cancelled"] == 1)


async def test_requests_beyond_the_pending_limit_are_answered_busy(
    control_server: ControlFactory, watch: Watch
) -> None:
    _server, plane = await control_server(
        llm=FakeLLM("Slow answer.", piece_delay_s=0.3), settings={"ai_chat_max_pending": 1}
    )
    sid = uid("chat-busy-limit")
    reply_topic = topics.chat_reply(sid)
    await watch.subscribe(reply_topic)
    await watch.publish(
        topics.chat_request(sid), json.dumps({"session_id": sid, "text": "one", "conversation_id": "a"})
    )
    await until(lambda: len(plane._tasks) == 1)
    await watch.publish(
        topics.chat_request(sid), json.dumps({"session_id": sid, "text": "two", "conversation_id": "b"})
    )
    busy = await watch.next_json(reply_topic)
    assert (busy["conversation_id"], busy["text"]) == ("b", "") and busy["error"].startswith("refused (busy)")
    answered = await watch.next_json(reply_topic)
    assert (answered["conversation_id"], answered["text"]) == ("a", "Slow answer.")
    assert plane.metrics.rejected["busy"] == 1


class _Looker:
    """The pipeline's looker seam (the real one is ai_server/media/selection.py, tested there)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.asked: list[tuple[str, str, str]] = []

    async def look(self, device_id: str, room: str, question: str) -> Seen:
        self.asked.append((device_id, room, question))
        if self.fail:
            raise RuntimeError("camera trouble")
        if "yesterday" in question:
            return Seen(answer="At 21:40 yesterday the porch camera saw a person.")
        if "door" not in question:
            return Seen()
        return Seen(prompt="Visual context: {}\nThrough the porch camera (2 seconds ago): 1 person in view.")


async def test_a_typed_question_goes_through_the_same_source_selection(
    control_server: ControlFactory, watch: Watch
) -> None:
    llm = FakeLLM("Someone is at the door.")
    server, plane = await control_server(llm=llm)
    looker = _Looker()
    server.pipeline.looker = looker
    sid = uid("chat-look")
    reply = await chat(watch, sid, {"session_id": sid, "text": "Is anyone at the front door?"})
    assert reply["text"] == "Someone is at the door."
    # The asker is the session (its own history only, finding H3), never a device id.
    assert looker.asked == [(f"chat:{sid}", "", "Is anyone at the front door?")]
    prompt = llm.requests[-1]
    assert prompt[-1] == {"role": "user", "content": "Is anyone at the front door?"}
    assert prompt[-2]["role"] == "system" and "1 person in view" in prompt[-2]["content"]
    await chat(watch, sid, {"session_id": sid, "text": "What is the capital of France?"})
    assert all("Visual context" not in m["content"] for m in llm.requests[-1])

    # A fact from the store is the reply itself: the LLM is not asked to paraphrase it.
    asked = len(llm.requests)
    reply = await chat(watch, sid, {"session_id": sid, "text": "Who came to the porch yesterday?"})
    assert reply["text"] == "At 21:40 yesterday the porch camera saw a person." and len(llm.requests) == asked

    looker.fail = True  # a broken looker costs the view, not the answer
    reply = await chat(watch, sid, {"session_id": sid, "text": "Is anyone at the front door?"})
    assert reply["error"] is None and reply["text"] == "Someone is at the door."
    assert plane.metrics.events["chat_visual_failed"] == 1
