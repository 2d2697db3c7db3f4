"""Device control through Home Assistant, over real HTTP against a local server that speaks Home
Assistant's REST API (tests/ai_server/assist/ha_server.py; a real core does not install here).
Sentences go through hassil with the slot lists the registry serves; the clock is moved by hand."""

from __future__ import annotations

import datetime as dt
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hassil import Intents, recognize_best
from hassil.intents import SlotList, TextSlotList
from home_assistant_intents import get_intents

from ai_server.assist.core import AssistContext, AssistReply, AssistServices, IntentMatch, IntentRegistry
from ai_server.assist.home_assistant import CONVERSATION_INTENT, HomeAssistant, install
from shared.config import AIServerSettings
from tests.ai_server.assist.ha_server import TOKEN, FakeHomeAssistant, household, serve

pytestmark = pytest.mark.integration

INTENTS = Intents.from_dict(get_intents("en") or {})


class Clock:
    def __init__(self) -> None:
        self.t = dt.datetime(2026, 11, 3, 18, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += dt.timedelta(seconds=seconds)


@dataclass
class Home:
    fake: FakeHomeAssistant
    ha: HomeAssistant
    registry: IntentRegistry
    clock: Clock
    counts: Counter[str] = field(default_factory=Counter)

    def match(self, text: str, room: str | None = None) -> IntentMatch | None:
        """The sentence through hassil with the registry's slot lists (as the recognizer does)."""
        lists: dict[str, SlotList] = {name: TextSlotList.from_tuples(rows)
                                      for name, rows in self.registry.slot_rows().items()}
        lists.setdefault("floor", TextSlotList.from_tuples([]))
        result = recognize_best(text, INTENTS, slot_lists=lists, language="en", best_slot_name="name",
                                intent_context={"area": room} if room else None)
        if result is None:
            return None
        slots = {name: entity.value for name, entity in result.entities.items()}
        return IntentMatch(result.intent.name, slots, text)

    async def say(self, text: str, room: str | None = None) -> AssistReply:
        match = self.match(text, room)
        assert match is not None, f"no intent for {text!r}"
        reply = await self.registry.handle(match, AssistContext(self.clock(), device_id="pi-1", room=room))
        assert reply is not None, f"no handler for {match.intent}"
        return reply


def _settings(url: str, token: str = TOKEN, **more: Any) -> AIServerSettings:
    return AIServerSettings(ha_url=url, ha_token=token, **more)


async def _installed(fake: FakeHomeAssistant, tmp_path: Path, *, url: str | None = None,
                     token: str = TOKEN, refresh: bool = True, **more: Any) -> Home:
    registry, clock, counts = IntentRegistry(), Clock(), Counter[str]()
    services = AssistServices(registry, clock, str(tmp_path), _settings(url or fake.url, token, **more))
    ha = install(services, count=_counter(counts))
    assert ha is not None
    if refresh:
        assert await ha.catalog.refresh()
    return Home(fake, ha, registry, clock, counts)


def _counter(counts: Counter[str]) -> Callable[[str], None]:
    def count(event: str) -> None:
        counts[event] += 1

    return count


@pytest.fixture
async def home(tmp_path: Path) -> AsyncIterator[Home]:
    async with serve(household()) as fake:
        h = await _installed(fake, tmp_path)
        yield h
        await h.ha.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_turn_on_the_kitchen_lights_changes_them_in_home_assistant(home: Home) -> None:
    reply = await home.say("turn on the kitchen lights")
    assert reply.text == "Turned on 2 lights in the Kitchen."
    assert home.fake.state("light.kitchen_ceiling") == "on"
    assert home.fake.state("light.kitchen_counter") == "on"
    assert home.fake.calls == [("light", "turn_on", {"entity_id": ["light.kitchen_ceiling", "light.kitchen_counter"]})]
    assert home.fake.state("light.living_room_lamp") == "on"  # untouched, as was the sensor
    reply = await home.say("turn off the kitchen ceiling")
    assert reply.text == "Turned off the Kitchen Ceiling."
    assert home.fake.state("light.kitchen_ceiling") == "off"
    assert home.fake.state("light.kitchen_counter") == "on"
    assert home.counts["ha_command"] == 2


async def test_a_free_text_name_from_a_tool_call_is_an_area_and_a_kind_of_device(home: Home) -> None:
    ctx = AssistContext(home.clock(), device_id="pi-1", room="living_room")
    reply = await home.registry.handle(IntentMatch("HassTurnOn", {"name": "Kitchen lights"}), ctx)
    assert reply is not None and reply.text == "Turned on 2 lights in the Kitchen."
    reply = await home.registry.handle(IntentMatch("HassTurnOff", {"name": "lamp"}), ctx)  # the asker's room
    assert reply is not None and reply.text == "Turned off the Living Room Lamp."
    reply = await home.registry.handle(IntentMatch("HassTurnOn", {"name": "Kitchen Counter"}), ctx)
    assert reply is not None and reply.text == "Turned on the Kitchen Counter."  # a name still wins
    assert home.fake.state("light.living_room_lamp") == "off"


async def test_the_devices_room_is_the_area_when_the_request_names_none(home: Home) -> None:
    reply = await home.say("turn off the lights", room="living_room")
    assert reply.text == "Turned off the Living Room Lamp."
    assert home.fake.state("light.living_room_lamp") == "off"
    assert home.fake.state("light.kitchen_ceiling") == "off"  # was off, not called
    assert [c[2]["entity_id"] for c in home.fake.calls] == [["light.living_room_lamp"]]
    # The same command from a device with no room cannot guess one.
    match = IntentMatch("HassTurnOff", {"domain": "light"}, "turn off the lights")
    asked = await home.registry.handle(match, AssistContext(home.clock(), device_id="browser-1"))
    assert asked is not None and asked.text.startswith("Which room do you mean?")
    assert len(home.fake.calls) == 1


async def test_unknown_area_entity_or_an_empty_area_is_said_and_nothing_changes(home: Home) -> None:
    ctx = AssistContext(home.clock(), device_id="pi-1")
    reply = await home.registry.handle(IntentMatch("HassTurnOn", {"area": "attic", "domain": "light"}), ctx)
    assert reply is not None and reply.text == "I don't know an area called attic in Home Assistant."
    reply = await home.registry.handle(IntentMatch("HassTurnOn", {"name": "disco ball"}), ctx)
    assert reply is not None and reply.text == "I don't know a device called disco ball in Home Assistant."
    reply = await home.say("turn on the office lights")
    assert reply.text == "There are no lights in the Office."
    # A device in a room Home Assistant does not have.
    reply = await home.registry.handle(IntentMatch("HassTurnOn", {"domain": "light"}),
                                       AssistContext(home.clock(), device_id="pi-2", room="loft"))
    assert reply is not None and reply.text == "I don't know an area called loft in Home Assistant."
    assert home.fake.calls == []
    assert home.counts["ha_unresolved"] == 4


async def test_questions_are_answered_from_home_assistants_states(home: Home) -> None:
    assert (await home.say("is the front door locked")).text == "Yes, the Front Door is locked."
    home.fake.states["lock.front_door"]["state"] = "unlocked"  # changed in HA since the last refresh
    assert (await home.say("is the front door locked")).text == "No, the Front Door is unlocked."
    # The sensor's own name matches first ("Kitchen Temperature"); the area without a thermostat
    # is answered by its temperature sensor.
    assert (await home.say("what's the kitchen temperature")).text == "The Kitchen Temperature is 21.5 degrees."
    reply = await home.registry.handle(IntentMatch("HassClimateGetTemperature", {"area": "kitchen"}),
                                       AssistContext(home.clock()))
    assert reply is not None and reply.text == "The Kitchen temperature is 21.5 degrees."
    assert (await home.say("what's the living room temperature")).text == \
        "The Living Room temperature is 20 degrees."
    reply = await home.say("which lights are on in the living room")
    assert reply.text == "The Living Room Lamp is on."
    assert (await home.say("which lights are on in the kitchen")).text == "No lights in the Kitchen are on."
    await home.say("turn on the kitchen lights")
    assert (await home.say("which lights are on in the kitchen")).text == \
        "2 lights in the Kitchen are on: the Kitchen Ceiling, the Kitchen Counter."
    reply = await home.registry.handle(IntentMatch("HassGetState", {"area": "kitchen", "domain": "light"}),
                                       AssistContext(home.clock()))
    assert reply is not None
    assert reply.text == "In the Kitchen, the Kitchen Ceiling is on, the Kitchen Counter is on."
    assert len(home.fake.calls) == 1  # the one command; questions change nothing


async def test_lights_climate_covers_locks_and_media(home: Home) -> None:
    assert (await home.say("set the kitchen ceiling to red")).text == "Set the Kitchen Ceiling to red."
    assert home.fake.attr("light.kitchen_ceiling", "rgb_color") == [255, 0, 0]
    assert home.fake.state("light.kitchen_ceiling") == "on"
    reply = await home.registry.handle(IntentMatch("HassLightSet", {"area": "kitchen", "brightness": 50}),
                                       AssistContext(home.clock()))
    assert reply is not None and reply.text == "Set 2 lights in the Kitchen to 50% brightness."
    assert home.fake.attr("light.kitchen_counter", "brightness") == 128
    assert (await home.say("set the thermostat to 22 degrees")).text == "Set the Thermostat to 22 degrees."
    assert home.fake.attr("climate.thermostat", "temperature") == 22.0
    assert (await home.say("open the garage door")).text == "Opened the Garage Door."
    assert home.fake.state("cover.garage_door") == "open"
    assert (await home.say("unlock the front door")).text == "Unlocked the Front Door."
    assert home.fake.state("lock.front_door") == "unlocked"
    assert (await home.say("pause the living room tv")).text == "Paused the Living Room TV."
    assert home.fake.state("media_player.living_room_tv") == "paused"
    reply = await home.registry.handle(IntentMatch("HassSetVolume", {"volume": 30}),
                                       AssistContext(home.clock(), room="living_room"))
    assert reply is not None and reply.text == "Set the volume of the Living Room TV to 30%."
    assert home.fake.attr("media_player.living_room_tv", "volume_level") == 0.3


async def test_an_unavailable_device_is_said_not_pretended(home: Home) -> None:
    reply = await home.registry.handle(IntentMatch("HassTurnOn", {"name": "light.hall"}),
                                       AssistContext(home.clock()))
    assert reply is not None
    assert reply.text == "Nothing changed: Home Assistant says the Hall Light is unavailable."
    assert home.fake.state("light.hall") == "unavailable"


async def test_slot_lists_come_from_home_assistant_and_refresh_on_the_clock(home: Home) -> None:
    rows = home.registry.slot_rows()
    names = {row[0]: row[1:] for row in rows["name"]}
    assert names["Kitchen Ceiling"] == ("light.kitchen_ceiling", {"domain": "light"})
    assert "Sun" not in names  # not a domain anyone speaks to
    assert {row[0] for row in rows["area"]} == {"Kitchen", "Living Room", "Hallway", "Garage", "Office"}
    home.fake.add("light.porch", "off", "Porch Light", "garden")
    requests = home.fake.requests
    home.clock.advance(299)
    assert "Porch Light" not in {row[0] for row in home.registry.slot_rows()["name"]}
    assert home.ha.catalog.maybe_refresh() is None  # not due: cheap, no request
    assert home.fake.requests == requests
    home.clock.advance(1)
    home.registry.slot_rows()  # due: starts a background refresh, answers from the cache at once
    task = home.ha.catalog._task
    assert task is not None and await task
    rows = home.registry.slot_rows()
    assert "Porch Light" in {row[0] for row in rows["name"]}
    assert "Garden" in {row[0] for row in rows["area"]}
    assert (await home.say("turn on the porch light")).text == "Turned on the Porch Light."
    assert home.fake.state("light.porch") == "on"


async def test_a_failed_refresh_keeps_the_last_good_lists(home: Home) -> None:
    before = home.registry.slot_rows()
    home.fake.token = "rotated"
    home.clock.advance(300)
    assert not await home.ha.catalog.refresh()
    assert home.registry.slot_rows() == before
    assert home.counts["ha_refresh_failed"] == 1
    home.clock.advance(29)
    assert not home.ha.catalog.due()  # a failed refresh is retried after 30 s, not on every sentence
    home.clock.advance(1)
    assert home.ha.catalog.due()


async def test_wrong_token_is_said_and_counted(tmp_path: Path) -> None:
    async with serve(household()) as fake:
        good = await _installed(fake, tmp_path)
        fake.token = "rotated"  # the token was revoked in Home Assistant
        reply = await good.say("turn on the kitchen lights")
        assert reply.text == ("Home Assistant refused my access token, so I can't control devices. "
                              "Check HA_TOKEN.")
        assert reply.data["error"] == "ha_unauthorized"
        assert good.counts["ha_unauthorized"] == 1
        assert fake.state("light.kitchen_ceiling") == "off"
        await good.ha.close()


async def test_home_assistant_down_or_silent_is_said(tmp_path: Path) -> None:
    async with serve(household()) as fake:
        home = await _installed(fake, tmp_path, ha_timeout_s=0.2)
        fake.hang.set()  # every request hangs: the client's timeout answers
        reply = await home.say("turn on the kitchen lights")
        assert reply.text == "Home Assistant didn't answer in time, so I don't know if anything changed."
        assert home.counts["ha_timeout"] == 1
        await home.ha.close()
    # Nothing listens any more: the names are the last good ones, the answer says HA is unreachable.
    home.clock.advance(300)
    assert not await home.ha.catalog.refresh()
    assert "Kitchen Ceiling" in {row[0] for row in home.registry.slot_rows()["name"]}
    reply = await home.say("turn on the kitchen lights")
    assert reply.text == "I can't reach Home Assistant right now, so nothing was changed."
    assert home.counts["ha_unreachable"] == 1
    await home.ha.close()


async def test_unreachable_from_the_start(tmp_path: Path) -> None:
    fake = household()
    home = await _installed(fake, tmp_path, url=f"http://127.0.0.1:{_closed_port()}", refresh=False)
    assert not await home.ha.catalog.refresh()
    assert home.registry.slot_rows() == {"name": [], "area": []}
    reply = await home.registry.handle(IntentMatch("HassTurnOn", {"name": "light.kitchen_ceiling"}),
                                       AssistContext(home.clock()))
    assert reply is not None and reply.text == "I can't reach Home Assistant right now, so nothing was changed."
    assert home.counts["ha_unreachable"] == 1 and home.counts["ha_refresh_failed"] >= 2  # + install's own
    await home.ha.close()


async def test_not_configured_installs_nothing_and_keeps_the_default_handler(tmp_path: Path) -> None:
    async def not_set_up(match: IntentMatch, ctx: AssistContext) -> AssistReply:
        return AssistReply("I can't control devices: Home Assistant isn't set up.", match.intent)

    registry = IntentRegistry()
    registry.register("HassTurnOn", not_set_up)
    services = AssistServices(registry, Clock(), str(tmp_path), AIServerSettings(ha_url="", ha_token=None))
    assert install(services) is None
    reply = await registry.handle(IntentMatch("HassTurnOn", {"area": "kitchen"}), AssistContext(Clock()()))
    assert reply is not None and reply.text.endswith("isn't set up.")
    assert registry.slot_rows() == {}
    # Configured: the real handler replaces the default one.
    async with serve(household()) as fake:
        services.settings = _settings(fake.url)
        ha = install(services)
        assert ha is not None and await ha.catalog.refresh()
        reply = await registry.handle(IntentMatch("HassTurnOn", {"area": "kitchen", "domain": "light"}),
                                      AssistContext(Clock()()))
        assert reply is not None and reply.text == "Turned on 2 lights in the Kitchen."
        assert not registry.handles(CONVERSATION_INTENT)  # HA_CONVERSATION_FALLBACK is off by default
        await ha.close()


async def test_conversation_fallback_hands_unmatched_requests_to_home_assistant(tmp_path: Path) -> None:
    async with serve(household()) as fake:
        home = await _installed(fake, tmp_path, ha_conversation_fallback=True, ha_agent_id="conversation.home")
        ctx = AssistContext(home.clock(), device_id="pi-1")
        reply = await home.registry.handle(IntentMatch(CONVERSATION_INTENT, text="what's the weather like"), ctx)
        assert reply is not None and reply.handled and reply.text == "It is sunny and 18 degrees."
        reply = await home.registry.handle(IntentMatch(CONVERSATION_INTENT, text="who wrote hamlet"), ctx)
        assert reply is not None and not reply.handled  # on to the LLM
        assert fake.conversations[0] == {"text": "what's the weather like", "language": "en",
                                         "agent_id": "conversation.home"}  # no conversation_id at all
        fake.token = "rotated"
        reply = await home.registry.handle(IntentMatch(CONVERSATION_INTENT, text="what's the weather"), ctx)
        assert reply is not None and not reply.handled and home.counts["ha_unauthorized"] == 1
        await home.ha.close()
