"""Spoken routing through the control plane: "play it on the kitchen speaker", announcements, broadcasts.

Unit tests drive :class:`RoomRouter` with a real registry and Speaker on a ConversationSession
whose output queue is read directly; integration tests run a whole AI server (fake models) on
the session's mosquitto with one hub stream (StreamClient) carrying every device.
"""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest

from ai_server.client import StreamClient, silence
from ai_server.control.errors import BrokerUnavailable
from ai_server.control.metrics import ControlMetrics
from ai_server.control.registry import DeviceRegistry
from ai_server.control.room_router import RoomRouter
from ai_server.control.speech import Speaker
from ai_server.conversation import Conversations
from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS
from ai_server.pipeline import Pipeline, Turn
from ai_server.routing import Route, RouteKind, Scope
from ai_server.session import ConversationSession
from shared.contract import pb
from shared.mqtt import Broadcast, DeviceStatus, build, topics
from tests.ai_server.control.conftest import ControlFactory, Watch, announce_device, uid, until

SPEAKER = ("audio", "speaker")
MIC_ONLY = ("audio",)
REPLAY, ANNOUNCE = RouteKind.REPLAY, RouteKind.ANNOUNCE

# ---- RoomRouter on its own ---------------------------------------------------------------------


class Published:
    """Stands in for Presence.broadcast: records, or fails like a broker that is down."""

    def __init__(self, *, down: bool = False) -> None:
        self.down = down
        self.sent: list[tuple[str, str | None]] = []

    async def __call__(self, message: str, room: str | None) -> Broadcast:
        if self.down:
            raise BrokerUnavailable("cannot publish on naila/server/broadcast: not connected")
        self.sent.append((message, room))
        return build(Broadcast, message=message, room=room)


class Home:
    """A registry, a Speaker on one hub stream (or none), the router; ``heard()``: what each device got."""

    def __init__(self, *, broker_down: bool = False, hub: bool = True) -> None:
        self.metrics = ControlMetrics()
        self.registry = DeviceRegistry(self.metrics)
        self.pipeline = Pipeline(FakeSTT(), FakeLLM(), FakeTTS(), Conversations("sys", 8))
        self.session = ConversationSession(self.pipeline)
        sessions = [self.session] if hub else []
        self.speaker = Speaker(self.pipeline, self.registry, self.metrics, lambda: sessions)
        self.published = Published(down=broker_down)
        self.router = RoomRouter(self.registry, self.speaker, self.pipeline.conversations, self.metrics, self.published)

    def device(self, device_id: str, room: str | None, caps: tuple[str, ...] = SPEAKER, online: bool = True) -> None:
        status = build(
            DeviceStatus, device_id=device_id, online=online, capabilities=list(caps), firmware_version="t", room=room
        )
        self.registry.update(status)

    async def heard(self) -> dict[str, list[str]]:
        """Each device's finished speech (the reply_text of its is_final), once the speech tasks ran."""
        for _ in range(20):
            await asyncio.sleep(0.01)
        out: dict[str, list[str]] = {}
        while not self.session._out.empty():
            item = self.session._out.get_nowait()
            assert item is not None
            msg = self.session._stamp(item)
            if msg is not None and msg.is_final:
                out.setdefault(msg.device_id, []).append(msg.reply_text)
        return out


def home(**kw: bool) -> Home:
    h = Home(**kw)
    h.device("hall-1", "hall")
    h.device("kitchen-1", "kitchen")
    h.device("kitchen-2", "kitchen")
    h.device("kitchen-mic", "kitchen", MIC_ONLY)  # no speaker: never spoken on
    h.device("kitchen-old", "kitchen", online=False)
    h.device("bed-1", "bed_room")
    h.device("garage-1", "garage", online=False)  # a room with nothing online
    return h


@pytest.mark.unit
async def test_replay_plays_the_last_real_reply_on_the_rooms_online_speakers() -> None:
    h = home()
    conversations = h.pipeline.conversations
    conversations.record("hall-1", "what's the weather", "It is sunny.")
    said = await h.router.carry_out("hall-1", Route(REPLAY, Scope.ROOM, "kitchen"))
    assert said == "OK, playing it in the kitchen."
    assert await h.heard() == {"kitchen-1": ["It is sunny."], "kitchen-2": ["It is sunny."]}
    # The routed exchange is in history; a second replay still plays the answer, not the confirmation.
    conversations.record("hall-1", "play it in the kitchen", said)
    assert h.router.last_reply("hall-1") == "It is sunny."
    assert (
        await h.router.carry_out("hall-1", Route(REPLAY, Scope.ROOM, "bed_room")) == "OK, playing it in the bed room."
    )
    assert await h.heard() == {"bed-1": ["It is sunny."]}
    assert h.published.sent == []  # a replay is not a broadcast
    assert h.metrics.events["route_replay"] == 2


@pytest.mark.unit
async def test_a_room_includes_the_asker_and_everywhere_excludes_it() -> None:
    h = home()
    h.pipeline.conversations.record("kitchen-1", "a question", "An answer.")
    assert (
        await h.router.carry_out("kitchen-1", Route(REPLAY, Scope.ROOM, "kitchen")) == "OK, playing it in the kitchen."
    )
    assert await h.heard() == {"kitchen-1": ["An answer."], "kitchen-2": ["An answer."]}
    said = await h.router.carry_out("kitchen-1", Route(ANNOUNCE, Scope.ALL, text="Dinner is ready."))
    assert said == "OK, announcing it everywhere."
    heard = await h.heard()
    assert heard == {"hall-1": ["Dinner is ready."], "kitchen-2": ["Dinner is ready."], "bed-1": ["Dinner is ready."]}
    assert h.published.sent == [("Dinner is ready.", None)]


@pytest.mark.unit
async def test_announcements_are_published_for_a_room_but_not_for_a_single_device() -> None:
    h = home()
    said = await h.router.carry_out("hall-1", Route(ANNOUNCE, Scope.ROOM, "kitchen", "Dinner is ready."))
    assert said == "OK, announcing it in the kitchen."
    assert await h.heard() == {"kitchen-1": ["Dinner is ready."], "kitchen-2": ["Dinner is ready."]}
    said = await h.router.carry_out("hall-1", Route(ANNOUNCE, Scope.DEVICE, "bed-1", "Wake up."))
    assert said == "OK, announcing it on bed 1."
    assert await h.heard() == {"bed-1": ["Wake up."]}
    assert h.published.sent == [("Dinner is ready.", "kitchen")]


@pytest.mark.unit
async def test_a_broker_that_is_down_does_not_keep_the_announcement_from_the_room() -> None:
    h = home(broker_down=True)
    said = await h.router.carry_out("hall-1", Route(ANNOUNCE, Scope.ROOM, "kitchen", "Dinner is ready."))
    assert said == "OK, announcing it in the kitchen."
    assert set(await h.heard()) == {"kitchen-1", "kitchen-2"}
    assert h.metrics.events["route_broadcast_lost"] == 1


@pytest.mark.unit
@pytest.mark.parametrize(
    ("route", "answer"),
    [
        (Route(REPLAY, Scope.UNKNOWN, "wine cellar"), "I don't know a room called wine cellar."),
        (Route(ANNOUNCE, Scope.UNKNOWN, "attic", "Hi."), "I don't know a room called attic."),
        (Route(REPLAY, Scope.ROOM, "garage"), "There is no speaker in the garage right now."),
        (Route(ANNOUNCE, Scope.DEVICE, "kitchen-mic", "Hi."), "Kitchen mic can't play anything right now."),
    ],
)
async def test_refusals_play_nothing_anywhere(route: Route, answer: str) -> None:
    h = home()
    h.pipeline.conversations.record("hall-1", "a question", "An answer.")
    assert await h.router.carry_out("hall-1", route) == answer
    assert await h.heard() == {}
    assert h.published.sent == []


@pytest.mark.unit
async def test_nothing_to_replay_no_other_speaker_and_no_hub_are_said_plainly() -> None:
    h = home()
    assert await h.router.carry_out("hall-1", Route(REPLAY, Scope.ROOM, "kitchen")) == (
        "I haven't said anything yet that I could play."
    )
    alone = Home()
    alone.device("hall-1", "hall")
    everywhere = Route(ANNOUNCE, Scope.ALL, text="Hi.")
    assert await alone.router.carry_out("hall-1", everywhere) == "There is no other speaker online right now."
    no_hub = home(hub=False)
    assert await no_hub.router.carry_out("hall-1", Route(ANNOUNCE, Scope.ROOM, "kitchen", "Hi.")) == (
        "I can't reach the speakers in the kitchen right now."
    )
    assert no_hub.published.sent == []  # not said, so not announced either
    assert await h.heard() == {} and await alone.heard() == {}


@pytest.mark.unit
async def test_route_only_parses_and_the_action_acts() -> None:
    h = home()
    h.pipeline.conversations.record("hall-1", "a question", "An answer.")
    turn = Turn(1, "hall-1", "c1", 0.0, transcript="what is the capital of France")
    assert h.router.route(turn) is None
    turn.transcript = "Play it on the kitchen speakers."
    action = h.router.route(turn)
    assert action is not None
    assert await h.heard() == {}, "parsing must not play anything"
    assert await action() == "OK, playing it in the kitchen."
    assert set(await h.heard()) == {"kitchen-1", "kitchen-2"}


@pytest.mark.unit
async def test_rooms_with_nothing_online_are_still_known_by_name() -> None:
    h = home()
    assert h.router.parse("play it in the garage") == Route(REPLAY, Scope.ROOM, "garage")
    assert h.router.parse("play it in the bed room") == Route(REPLAY, Scope.ROOM, "bed_room")
    assert h.router.parse("play it on kitchen 2") == Route(REPLAY, Scope.DEVICE, "kitchen-2")


@pytest.mark.unit
async def test_speak_broadcast_speaks_in_the_room_or_everywhere() -> None:
    h = home()
    assert h.router.speak_broadcast("Dinner is ready", "kitchen") == ["kitchen-1", "kitchen-2"]
    assert h.router.speak_broadcast("Lights out", None) == ["bed-1", "hall-1", "kitchen-1", "kitchen-2"]
    assert h.router.speak_broadcast("Anyone?", "garage") == []
    heard = await h.heard()
    assert heard["kitchen-1"] == ["Dinner is ready", "Lights out"] and heard["hall-1"] == ["Lights out"]
    assert h.metrics.events["broadcast_spoken"] == 2 and h.metrics.events["broadcast_unspoken"] == 1


# ---- through the whole server ------------------------------------------------------------------

VOICE = np.concatenate([np.full(9600, 3000, np.int16), silence(300)])


async def speech_on(hub: StreamClient, device_id: str) -> list[pb.AudioOutput]:
    """One unprompted turn on ``device_id``, up to its is_final."""
    return [m for _, m in (await hub.turn(device_id, 0.0, within_s=5)).messages]


async def kitchen_home(watch: Watch, plane_registry: DeviceRegistry) -> tuple[str, str, list[str], str]:
    """A uniquely named kitchen (retained statuses outlive tests) with two speakers and a mic-only
    device, and an asking device in another room. Returns (asker, kitchen room, speakers, mic)."""
    kitchen = f"kitchen_{uuid.uuid4().hex[:8]}"
    asker, speakers, mic = uid("hall"), [uid("kit"), uid("kit")], uid("kit-mic")
    await announce_device(watch, asker, room=uid("hall"))
    for device_id in speakers:
        await announce_device(watch, device_id, room=kitchen)
    await announce_device(watch, mic, room=kitchen, capabilities=("audio",))
    await until(lambda: all(plane_registry.get(d) is not None for d in (asker, *speakers, mic)))
    return asker, kitchen, speakers, mic


def spoken_name(room: str) -> str:
    return room.replace("_", " ")


@pytest.mark.integration
@pytest.mark.timeout(60)
async def test_play_it_on_the_kitchen_speaker_replays_the_last_reply_there(
    control_server: ControlFactory, watch: Watch
) -> None:
    said = ["What's the weather like?"]
    llm = FakeLLM("It is sunny today.")
    server, plane = await control_server(llm=llm, stt=FakeSTT(lambda _audio: said[-1]))
    asker, kitchen, speakers, mic = await kitchen_home(watch, plane.registry)
    async with StreamClient(server.address) as hub:
        answer = await hub.turn(asker, await hub.speak(asker, VOICE), within_s=10)
        assert answer.final is not None and answer.final.reply_text == "It is sunny today."
        said.append(f"Play it on the {spoken_name(kitchen)} speaker.")
        confirmation = await hub.turn(asker, await hub.speak(asker, VOICE), within_s=10)
        for device_id in speakers:
            played = await speech_on(hub, device_id)
            audio = [m for m in played if m.audio_pcm]
            assert audio and audio[0].reply_text == "It is sunny today."
            assert played[-1].reply_text == "It is sunny today." and played[-1].error_code == pb.NONE
            assert all(m.device_id == device_id and m.conversation_id == "" for m in played)
        await asyncio.sleep(0.3)
        assert hub.pending(mic) == 0 and hub.pending(asker) == 0
    final = confirmation.final
    assert final is not None and final.error_code == pb.NONE
    assert final.reply_text == f"OK, playing it in the {spoken_name(kitchen)}."
    assert confirmation.audio and confirmation.audio[0].reply_text == final.reply_text  # heard, not only shown
    assert len(llm.requests) == 1, "the routed turn must not reach the LLM"
    assert server.pipeline.metrics.counters.get("routed_turns") == 1 and plane.metrics.events["route_replay"] == 1


@pytest.mark.integration
@pytest.mark.timeout(60)
async def test_an_unknown_room_is_refused_aloud_and_nothing_goes_anywhere(
    control_server: ControlFactory, watch: Watch
) -> None:
    llm = FakeLLM("Should not be asked.")
    server, plane = await control_server(llm=llm, stt=FakeSTT("Announce to the wine cellar that dinner is ready."))
    asker, _kitchen, speakers, _mic = await kitchen_home(watch, plane.registry)
    await watch.subscribe(topics.SERVER_BROADCAST)
    async with StreamClient(server.address) as hub:
        reply = await hub.turn(asker, await hub.speak(asker, VOICE), within_s=10)
        await asyncio.sleep(0.3)
        assert all(hub.pending(d) == 0 for d in speakers)
    assert reply.final is not None and reply.final.reply_text == "I don't know a room called wine cellar."
    assert reply.audio, "the refusal is spoken"
    assert llm.requests == []
    assert await watch.nothing_on(topics.SERVER_BROADCAST, 0.3)
    assert plane.metrics.events["route_unknown_place"] == 1


@pytest.mark.integration
@pytest.mark.timeout(60)
async def test_a_spoken_announcement_is_heard_in_the_room_and_published(
    control_server: ControlFactory, watch: Watch
) -> None:
    said = [""]
    llm = FakeLLM()
    server, plane = await control_server(llm=llm, stt=FakeSTT(lambda _audio: said[-1]))
    asker, kitchen, speakers, _mic = await kitchen_home(watch, plane.registry)
    said.append(f"Announce dinner is ready in the {spoken_name(kitchen)}.")
    await watch.subscribe(topics.SERVER_BROADCAST)
    async with StreamClient(server.address) as hub:
        reply = await hub.turn(asker, await hub.speak(asker, VOICE), within_s=10)
        for device_id in speakers:
            assert (await speech_on(hub, device_id))[-1].reply_text == "Dinner is ready."
    assert reply.final is not None and reply.final.reply_text == f"OK, announcing it in the {spoken_name(kitchen)}."
    published = await watch.next_json(topics.SERVER_BROADCAST)
    assert (published["message"], published["room"]) == ("Dinner is ready.", kitchen)
    assert llm.requests == []


@pytest.mark.integration
@pytest.mark.timeout(60)
async def test_control_plane_broadcast_is_also_spoken_on_the_rooms_speakers(
    control_server: ControlFactory, watch: Watch
) -> None:
    server, plane = await control_server()
    _asker, kitchen, speakers, mic = await kitchen_home(watch, plane.registry)
    await watch.subscribe(topics.SERVER_BROADCAST)
    async with StreamClient(server.address) as hub:
        await until(lambda: len(server.service.sessions) == 1)
        sent = await plane.broadcast("The washing is done", room=kitchen)
        for device_id in speakers:
            played = await speech_on(hub, device_id)
            assert played[-1].reply_text == "The washing is done" and any(m.audio_pcm for m in played)
        await asyncio.sleep(0.3)
        assert hub.pending(mic) == 0
        # A room nobody is in: published all the same, and counted as not spoken.
        await plane.broadcast("Hello?", room=uid("empty"))
    assert sent.room == kitchen
    assert (await watch.next_json(topics.SERVER_BROADCAST))["room"] == kitchen
    assert (await watch.next_json(topics.SERVER_BROADCAST))["message"] == "Hello?"
    assert plane.metrics.events["broadcast_spoken"] == 1 and plane.metrics.events["broadcast_unspoken"] == 1
