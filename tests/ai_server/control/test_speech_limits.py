"""Announcement budget (issue 18, H1) through a whole AI server: a real hub stream, mosquitto, fake models.

A device's fourth spoken announcement in a row is refused aloud and reaches no speaker and no
broker; typed chat speak_on from ever new session ids shares one budget. The limiter's own rules
(refill, per-device keys, broadcasts) are unit-tested in tests/security/test_announce_limits.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from ai_server.client import StreamClient
from ai_server.control.speech import TOO_MANY
from ai_server.fakes import FakeLLM, FakeSTT
from shared.mqtt import topics
from tests.ai_server.control.conftest import ControlFactory, Watch, uid, until
from tests.ai_server.control.test_room_routing import VOICE, kitchen_home, speech_on, spoken_name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def chat(watch: Watch, session_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    reply_topic = topics.chat_reply(session_id)
    await watch.subscribe(reply_topic)
    await watch.publish(topics.chat_request(session_id), json.dumps(payload))
    return await watch.next_json(reply_topic)


async def test_the_fourth_spoken_announcement_in_a_row_is_refused_aloud(
    control_server: ControlFactory, watch: Watch
) -> None:
    said = [""]
    server, plane = await control_server(stt=FakeSTT(lambda _audio: said[-1]))
    asker, kitchen, speakers, _mic = await kitchen_home(watch, plane.registry)
    said.append(f"Announce dinner is ready in the {spoken_name(kitchen)}.")
    await watch.subscribe(topics.SERVER_BROADCAST)
    async with StreamClient(server.address) as hub:
        for _ in range(3):
            reply = await hub.turn(asker, await hub.speak(asker, VOICE), within_s=10)
            assert reply.final is not None
            assert reply.final.reply_text == f"OK, announcing it in the {spoken_name(kitchen)}."
            for device_id in speakers:
                assert (await speech_on(hub, device_id))[-1].reply_text == "Dinner is ready."
        refused = await hub.turn(asker, await hub.speak(asker, VOICE), within_s=10)
        await asyncio.sleep(0.3)
        assert all(hub.pending(d) == 0 for d in speakers)
    assert refused.final is not None and refused.final.reply_text == TOO_MANY
    assert refused.audio and refused.audio[0].reply_text == TOO_MANY  # heard, not only shown
    for _ in range(3):
        assert (await watch.next_json(topics.SERVER_BROADCAST))["room"] == kitchen
    assert await watch.nothing_on(topics.SERVER_BROADCAST, 0.3)
    assert plane.metrics.events["announce_limited"] == 1
    assert plane.counters()["mqtt_announce_limited"] == 1  # in GetStatus' counters too


async def test_chat_sessions_share_one_speak_on_budget(control_server: ControlFactory, watch: Watch) -> None:
    server, plane = await control_server(llm=FakeLLM("The oven is off."))
    _asker, _kitchen, speakers, _mic = await kitchen_home(watch, plane.registry)
    dev = speakers[0]
    async with StreamClient(server.address) as hub:
        await until(lambda: len(server.service.sessions) == 1)
        # A fresh session id per request: rotating ids must not bring new budget.
        replies = [await chat(watch, sid, {"session_id": sid, "text": "Is the oven on?", "speak_on": dev})
                   for sid in [uid("chat-a") for _ in range(4)]]
        for _ in range(3):
            assert (await speech_on(hub, dev))[-1].reply_text == "The oven is off."
        await asyncio.sleep(0.3)
        assert hub.pending(dev) == 0
    assert [r["error"] for r in replies[:3]] == [None] * 3
    last = replies[3]
    assert last["text"] == "The oven is off."  # answered all the same, only not spoken
    assert last["error"] == (f"not spoken on {dev}: too many announcements (AI_ANNOUNCE_PER_MIN=6); "
                             "try again in a minute")
    assert plane.metrics.events["announce_limited"] == 1 and plane.metrics.events["speech_refused"] == 1
