"""Device control through Home Assistant: the shipped Hass* intents, answered from what HA did.

``install(services)`` (when HA_URL and HA_TOKEN are set) replaces the default "Home Assistant
isn't set up" handlers with real ones and adds the "name" and "area" slot lists from Home
Assistant's entities and areas (cached, see :mod:`ai_server.assist.ha_catalog`). A request names
an entity, or an area (+ a domain: "turn on the kitchen lights"); naming neither on a device with
a room means that room, as Home Assistant's own satellites do. Every answer comes from Home
Assistant's response; unknown names, a refused token, a timeout or a Home Assistant that is down
are said plainly, logged and counted, and nothing is pretended.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from ai_server.assist.core import AssistContext, AssistReply, AssistServices, IntentMatch
from ai_server.assist.ha_catalog import Catalog, Entity, HomeCatalog, spoken_key
from ai_server.assist.ha_client import HAError, HomeAssistantClient

log = logging.getLogger("naila.assist.ha")

#: The pseudo intent a router may hand unmatched requests to (HA_CONVERSATION_FALLBACK): Home
#: Assistant's conversation agent answers, or the reply is ``handled=False`` (on to the LLM).
CONVERSATION_INTENT = "HomeAssistantConversation"

# domain -> (on service, what was done, off service, what was done); None: not possible.
_ON_OFF: dict[str, tuple[str | None, str, str | None, str]] = {
    "light": ("turn_on", "Turned on", "turn_off", "Turned off"),
    "switch": ("turn_on", "Turned on", "turn_off", "Turned off"),
    "fan": ("turn_on", "Turned on", "turn_off", "Turned off"),
    "input_boolean": ("turn_on", "Turned on", "turn_off", "Turned off"),
    "media_player": ("turn_on", "Turned on", "turn_off", "Turned off"),
    "climate": ("turn_on", "Turned on", "turn_off", "Turned off"),
    "humidifier": ("turn_on", "Turned on", "turn_off", "Turned off"),
    "cover": ("open_cover", "Opened", "close_cover", "Closed"),
    "valve": ("open_valve", "Opened", "close_valve", "Closed"),
    "lock": ("lock", "Locked", "unlock", "Unlocked"),
    "scene": ("turn_on", "Activated", None, ""),
    "script": ("turn_on", "Started", "turn_off", "Stopped"),
    "button": ("press", "Pressed", None, ""),
    "input_button": ("press", "Pressed", None, ""),
    "vacuum": ("start", "Started", "return_to_base", "Sent back to its dock"),
}
_PLURAL = {
    "light": "lights", "switch": "switches", "fan": "fans", "cover": "covers", "valve": "valves",
    "lock": "locks", "climate": "thermostats", "media_player": "media players", "scene": "scenes",
    "script": "scripts", "sensor": "sensors", "binary_sensor": "sensors", "vacuum": "vacuums",
    "input_boolean": "switches", "button": "buttons", "humidifier": "humidifiers",
}
# Words for a kind of device in a free-text name.
_DOMAIN_WORDS = {
    "light": "light", "lights": "light", "lamp": "light", "lamps": "light", "switch": "switch",
    "switches": "switch", "fan": "fan", "fans": "fan", "blind": "cover", "blinds": "cover", "cover": "cover",
    "covers": "cover", "curtains": "cover", "shades": "cover", "shutters": "cover", "tv": "media_player",
    "television": "media_player", "speaker": "media_player", "thermostat": "climate", "heating": "climate",
    "lock": "lock", "locks": "lock",
}
# What "turn on the kitchen" means when the sentence names no domain.
_AREA_DEFAULT = ("light", "switch", "fan")
_UNIT_WORDS = {"°C": "degrees", "°F": "degrees", "%": "percent", "W": "watts", "kWh": "kilowatt hours"}
_STATE_WORDS = {"not_home": "away", "unavailable": "unavailable", "unknown": "unknown"}


def _slot(match: IntentMatch, name: str) -> tuple[Any, str]:
    """A slot's (value, spoken text): the recognizer may give a plain value, a hassil entity
    (``.value``/``.text``) or a mapping; LLM tool calls give plain values."""
    raw = match.slots.get(name)
    if raw is None:
        return None, ""
    if isinstance(raw, Mapping):
        value, text = raw.get("value"), raw.get("text")
    elif hasattr(raw, "value"):
        value, text = raw.value, getattr(raw, "text", None)
    else:
        value, text = raw, None
    if value is None or value == "":
        value = text
    return value, str(text or value or "")


def _domains(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, Iterable):
        return [str(v) for v in value]
    return []


def _plural(domains: Iterable[str]) -> str:
    words = {_PLURAL.get(d, "devices") for d in domains}
    return words.pop() if len(words) == 1 else "devices"


def _say_state(entity: Entity) -> str:
    state = entity.state
    unit = entity.attributes.get("unit_of_measurement")
    if isinstance(unit, str) and unit:
        return f"{state} {_UNIT_WORDS.get(unit, unit)}"
    return _STATE_WORDS.get(state, state.replace("_", " "))


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _guess(cat: Catalog, text: str) -> tuple[str | None, str | None] | None:
    """(area id, domain) named in a free-text device name ("kitchen lights"), or None."""
    key = f" {spoken_key(text)} "
    area_id = None
    for aid, area_name in sorted(cat.areas.items(), key=lambda a: -len(a[1])):
        for spoken in (spoken_key(area_name), spoken_key(aid)):
            if f" {spoken} " in key:
                area_id, key = aid, key.replace(f" {spoken} ", " ", 1)
                break
        if area_id is not None:
            break
    domain = next((_DOMAIN_WORDS[w] for w in key.split() if w in _DOMAIN_WORDS), None)
    if area_id is None and domain is None:
        return None
    return area_id, domain


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Targets:
    """The entities a request acts on, and how to name them in the answer."""

    entities: list[Entity]
    area: str = ""  # the area's name when the request named (or implied) one

    def say(self, domains: Iterable[str] = ()) -> str:
        """ "the kitchen ceiling", or "2 lights in the kitchen"."""
        if len(self.entities) == 1:
            return f"the {self.entities[0].name}"
        noun = _plural(domains or {e.domain for e in self.entities})
        where = f" in the {self.area}" if self.area else ""
        return f"{len(self.entities)} {noun}{where}"


class Unresolved(Exception):
    """The request names nothing Home Assistant has; ``args[0]`` is the sentence to say."""


class HomeAssistant:
    """The device-control handlers over one Home Assistant."""

    def __init__(
        self,
        catalog: HomeCatalog,
        *,
        language: str = "en",
        agent_id: str = "",
        count: Callable[[str], None] = lambda event: None,
    ) -> None:
        self.catalog = catalog
        self.client: HomeAssistantClient = catalog.client
        self.language = language
        self.agent_id = agent_id
        self._count = count

    # --- plumbing ------------------------------------------------------------------------------

    def handlers(self) -> dict[str, Callable[[IntentMatch, AssistContext], Awaitable[AssistReply]]]:
        plain: dict[str, Callable[[IntentMatch, AssistContext], Awaitable[str]]] = {
            "HassTurnOn": lambda m, c: self.turn(m, c, on=True),
            "HassTurnOff": lambda m, c: self.turn(m, c, on=False),
            "HassLightSet": self.light_set,
            "HassGetState": self.get_state,
            "HassClimateGetTemperature": self.climate_get,
            "HassClimateSetTemperature": self.climate_set,
            "HassSetPosition": self.set_position,
            "HassFanSetSpeed": self.fan_speed,
            "HassMediaPause": self._media("media_pause", "Paused"),
            "HassMediaUnpause": self._media("media_play", "Resumed"),
            "HassMediaNext": self._media("media_next_track", "Skipped to the next track on"),
            "HassMediaPrevious": self._media("media_previous_track", "Went back a track on"),
            "HassMediaPlayerMute": self._media("volume_mute", "Muted", {"is_volume_muted": True}),
            "HassMediaPlayerUnmute": self._media("volume_mute", "Unmuted", {"is_volume_muted": False}),
            "HassSetVolume": self.set_volume,
            "HassSetVolumeRelative": self.step_volume,
            "HassVacuumStart": lambda m, c: self.turn(m, c, on=True, domains=("vacuum",)),
            "HassVacuumReturnToBase": lambda m, c: self.turn(m, c, on=False, domains=("vacuum",)),
        }
        out = {intent: self._guarded(intent, fn) for intent, fn in plain.items()}
        out[CONVERSATION_INTENT] = self.converse
        return out

    def _guarded(
        self, intent: str, fn: Callable[[IntentMatch, AssistContext], Awaitable[str]]
    ) -> Callable[[IntentMatch, AssistContext], Awaitable[AssistReply]]:
        async def handle(match: IntentMatch, ctx: AssistContext) -> AssistReply:
            try:
                if self.catalog.refreshed_at is None and not await self.catalog.refresh():
                    # Never read Home Assistant's names: say why, not "I don't know that device".
                    raise self.catalog.last_error or HAError("no names from Home Assistant yet")
                text = await fn(match, ctx)
            except Unresolved as exc:
                self._count("ha_unresolved")
                log.info("Home Assistant %s %r: %s", intent, match.text, exc.args[0])
                return AssistReply(exc.args[0], intent, data={"error": "unresolved"})
            except HAError as exc:
                self._count(exc.kind)
                log.warning("Home Assistant %s %r: %s", intent, match.text, exc)
                return AssistReply(exc.spoken, intent, data={"error": exc.kind})
            self._count("ha_command")
            return AssistReply(text, intent)

        return handle

    @property
    def _now_catalog(self) -> Catalog:
        return self.catalog.current

    def _targets(self, match: IntentMatch, ctx: AssistContext, domains: Sequence[str],
                 area_default: Sequence[str] | None = None) -> Targets:
        """What the request names: an entity, else an area (the slot, else the device's room) and
        the domain(s) the sentence gives, else those the intent acts on."""
        cat = self._now_catalog
        name, name_text = _slot(match, "name")
        area, area_text = _slot(match, "area")
        said_domains = _domains(_slot(match, "domain")[0])
        if name is not None:
            entity = cat.entities.get(str(name)) or cat.entity(name_text) or cat.entity(str(name))
            if entity is not None:
                if entity.domain not in domains:
                    raise Unresolved(f"The {entity.name} can't do that.")
                return Targets([entity])
            # Not a device's name: "kitchen lights" (an LLM tool call, a free-text name) is an area
            # and a kind of device.
            guess = _guess(cat, name_text)
            if guess is None:
                raise Unresolved(f"I don't know a device called {name_text} in Home Assistant.")
            guessed_area, guessed_domain = guess
            if guessed_area is not None:
                area, area_text = guessed_area, cat.areas[guessed_area]
            if guessed_domain is not None:
                said_domains = [guessed_domain]
        wanted = said_domains or list(area_default or domains)
        wanted = [d for d in wanted if d in domains] or list(domains)
        device_class, _ = _slot(match, "device_class")
        if area is None and ctx.room:
            area, area_text = ctx.room, ctx.room.replace("_", " ")
        if area is None:
            found = cat.in_area(None, wanted)
            if len(found) == 1:  # one thermostat, one TV in the home: no room needed
                return Targets(found)
            raise Unresolved("Which room do you mean? Say, for example, turn on the lights in the kitchen."
                             if found else f"Home Assistant has no {_plural(wanted)}.")
        area_id = str(area) if str(area) in cat.areas else (cat.area(str(area)) or cat.area(area_text))
        if area_id is None:
            raise Unresolved(f"I don't know an area called {area_text} in Home Assistant.")
        found = cat.in_area(area_id, wanted)
        if isinstance(device_class, str) and device_class:
            found = [e for e in found if e.attributes.get("device_class") == device_class]
        if not found:
            raise Unresolved(f"There are no {_plural(wanted)} in the {cat.areas[area_id]}.")
        return Targets(found, cat.areas[area_id])

    async def _call(self, targets: Targets, service_for: Callable[[Entity], tuple[str, dict[str, Any]] | None]
                    ) -> tuple[list[Entity], list[Entity]]:
        """One service call per (domain, service, data); returns (done, unavailable) from the states
        Home Assistant reported (the cache where a state did not change)."""
        groups: dict[tuple[str, str, str], tuple[dict[str, Any], list[str]]] = {}
        for entity in targets.entities:
            spec = service_for(entity)
            if spec is None:
                continue
            service, data = spec
            key = (entity.domain, service, repr(sorted(data.items())))
            groups.setdefault(key, (data, []))[1].append(entity.entity_id)
        if not groups:
            raise Unresolved(f"I can't do that with {targets.say()}.")
        changed: list[dict[str, Any]] = []
        for (domain, service, _), (data, ids) in groups.items():
            changed += await self.client.call_service(domain, service, {"entity_id": ids, **data})
        self.catalog.update(changed)
        cat = self._now_catalog
        acted = [cat.entities.get(e.entity_id, e) for e in targets.entities
                 if any(e.entity_id in ids for _, ids in groups.values())]
        unavailable = [e for e in acted if e.state == "unavailable"]
        return [e for e in acted if e.state != "unavailable"], unavailable

    @staticmethod
    def _done(verb: str, targets: Targets, done: list[Entity], unavailable: list[Entity], tail: str = "") -> str:
        """ "Turned on 2 lights in the kitchen." with what Home Assistant could not reach."""
        names = " and ".join(f"the {e.name}" for e in unavailable)
        verb_be = "is" if len(unavailable) == 1 else "are"
        if not done:
            return f"Nothing changed: Home Assistant says {names} {verb_be} unavailable."
        text = f"{verb} {Targets(done, targets.area).say()}{tail}."
        if unavailable:
            text += f" {names[0].upper()}{names[1:]} {verb_be} unavailable."
        return text

    # --- intents -------------------------------------------------------------------------------

    async def turn(self, match: IntentMatch, ctx: AssistContext, *, on: bool,
                   domains: Sequence[str] = tuple(_ON_OFF)) -> str:
        targets = self._targets(match, ctx, domains, area_default=_AREA_DEFAULT)

        def service(entity: Entity) -> tuple[str, dict[str, Any]] | None:
            on_service, _, off_service, _ = _ON_OFF[entity.domain]
            chosen = on_service if on else off_service
            return (chosen, {}) if chosen else None

        done, unavailable = await self._call(targets, service)
        verbs = {_ON_OFF[e.domain][1] if on else _ON_OFF[e.domain][3] for e in targets.entities}
        verb = verbs.pop() if len(verbs) == 1 else ("Turned on" if on else "Turned off")
        return self._done(verb, targets, done, unavailable)

    async def light_set(self, match: IntentMatch, ctx: AssistContext) -> str:
        targets = self._targets(match, ctx, ("light",))
        data: dict[str, Any] = {}
        said: list[str] = []
        brightness = _number(_slot(match, "brightness")[0])
        if brightness is not None:
            data["brightness_pct"] = max(0, min(100, round(brightness)))
            said.append(f"{data['brightness_pct']}% brightness")
        color, color_text = _slot(match, "color")
        if isinstance(color, str) and color:
            data["color_name"] = color
            said.append(color_text or color)
        kelvin = _number(_slot(match, "color_temperature")[0])
        if kelvin is not None:
            data["color_temp_kelvin"] = round(kelvin)
            said.append(f"{round(kelvin)} kelvin")
        if not data:
            raise Unresolved("Set the light to what? Say a brightness or a colour.")
        done, unavailable = await self._call(targets, lambda e: ("turn_on", data))
        return self._done("Set", targets, done, unavailable, " to " + " and ".join(said))

    async def climate_set(self, match: IntentMatch, ctx: AssistContext) -> str:
        targets = self._targets(match, ctx, ("climate",))
        temperature = _number(_slot(match, "temperature")[0])
        if temperature is None:
            raise Unresolved("Set it to which temperature?")
        done, unavailable = await self._call(targets, lambda e: ("set_temperature", {"temperature": temperature}))
        return self._done("Set", targets, done, unavailable, f" to {_fmt(temperature)} degrees")

    async def set_position(self, match: IntentMatch, ctx: AssistContext) -> str:
        targets = self._targets(match, ctx, ("cover", "valve"))
        position = _number(_slot(match, "position")[0])
        if position is None:
            raise Unresolved("Set it to which position?")
        pos = max(0, min(100, round(position)))
        done, unavailable = await self._call(
            targets, lambda e: (f"set_{e.domain}_position", {"position": pos}))
        return self._done("Set", targets, done, unavailable, f" to {pos}%")

    async def fan_speed(self, match: IntentMatch, ctx: AssistContext) -> str:
        targets = self._targets(match, ctx, ("fan",))
        speed = _number(_slot(match, "fan_speed")[0])
        if speed is None:
            raise Unresolved("Set the fan to which speed?")
        pct = max(0, min(100, round(speed)))
        done, unavailable = await self._call(targets, lambda e: ("set_percentage", {"percentage": pct}))
        return self._done("Set", targets, done, unavailable, f" to {pct}%")

    def _media(self, service: str, verb: str, data: dict[str, Any] | None = None
               ) -> Callable[[IntentMatch, AssistContext], Awaitable[str]]:
        async def act(match: IntentMatch, ctx: AssistContext) -> str:
            targets = self._targets(match, ctx, ("media_player",))
            done, unavailable = await self._call(targets, lambda e: (service, dict(data or {})))
            return self._done(verb, targets, done, unavailable)

        return act

    async def set_volume(self, match: IntentMatch, ctx: AssistContext) -> str:
        targets = self._targets(match, ctx, ("media_player",))
        volume = _number(_slot(match, "volume")[0])
        if volume is None:
            raise Unresolved("Set the volume to what?")
        pct = max(0, min(100, round(volume)))
        done, unavailable = await self._call(targets, lambda e: ("volume_set", {"volume_level": pct / 100}))
        return self._done("Set the volume of", targets, done, unavailable, f" to {pct}%")

    async def step_volume(self, match: IntentMatch, ctx: AssistContext) -> str:
        targets = self._targets(match, ctx, ("media_player",))
        step, _ = _slot(match, "volume_step")
        amount = _number(step)
        up = step == "up" or (amount is not None and amount > 0)
        done, unavailable = await self._call(targets, lambda e: ("volume_up" if up else "volume_down", {}))
        return self._done("Turned up the volume of" if up else "Turned down the volume of",
                          targets, done, unavailable)

    async def _fresh(self, entities: Sequence[Entity]) -> list[Entity]:
        """The entities' current states: one GET per entity for a few, else all of /api/states."""
        if len(entities) <= 3:
            states = [s for e in entities if (s := await self.client.state(e.entity_id)) is not None]
        else:
            states = await self.client.states()
        self.catalog.update(states)
        cat = self._now_catalog
        return [cat.entities.get(e.entity_id, e) for e in entities]

    async def get_state(self, match: IntentMatch, ctx: AssistContext) -> str:
        domains = sorted({*_ON_OFF, "sensor", "binary_sensor", "person", "weather", "lawn_mower"})
        targets = self._targets(match, ctx, domains, area_default=("light", "switch", "fan"))
        entities = await self._fresh(targets.entities)
        asked, asked_text = _slot(match, "state")
        if len(entities) == 1 and not targets.area:
            entity = entities[0]
            if isinstance(asked, str) and asked:
                yes = entity.state == asked
                return f"{'Yes' if yes else 'No'}, the {entity.name} is {_say_state(entity)}."
            return f"The {entity.name} is {_say_state(entity)}."
        where = f" in the {targets.area}" if targets.area else ""
        noun = _plural({e.domain for e in entities})
        if isinstance(asked, str) and asked:
            hits = [e.name for e in entities if e.state == asked]
            said = asked_text or asked
            if not hits:
                return f"No {noun}{where} {'is' if len(entities) == 1 else 'are'} {said}."
            if len(hits) == 1:
                return f"{'Only the' if len(entities) > 1 else 'The'} {hits[0]} is {said}."
            return f"{len(hits)} {noun}{where} are {said}: the {', the '.join(hits)}."
        said = ", ".join(f"the {e.name} is {_say_state(e)}" for e in entities)
        return f"In the {targets.area}, {said}." if targets.area else f"{said[0].upper()}{said[1:]}."

    async def climate_get(self, match: IntentMatch, ctx: AssistContext) -> str:
        name, _ = _slot(match, "name")
        try:
            targets = self._targets(match, ctx, ("climate", "sensor"), area_default=("climate",))
        except Unresolved:
            if name is not None:
                raise
            # No thermostat there: a temperature sensor in the area answers as well.
            targets = self._targets(match, ctx, ("sensor",))
        candidates = [e for e in targets.entities
                      if e.domain == "climate" or e.attributes.get("device_class") == "temperature"]
        if not candidates:
            where = f" in the {targets.area}" if targets.area else ""
            raise Unresolved(f"Home Assistant has no thermometer{where}.")
        entity = (await self._fresh(candidates[:1]))[0]
        if entity.domain == "climate":
            reading = _number(entity.attributes.get("current_temperature"))
        else:
            reading = _number(entity.state)
        subject = f"The {targets.area} temperature" if targets.area else f"The {entity.name} temperature"
        if reading is None:
            return f"{subject} is not known: Home Assistant says {_say_state(entity)}."
        return f"{subject} is {_fmt(reading)} degrees."

    async def converse(self, match: IntentMatch, ctx: AssistContext) -> AssistReply:
        """Home Assistant's conversation agent on a request nothing else matched; its "no intent"
        (or any failure) falls through (``handled=False``) to the LLM."""
        try:
            data = await self.client.conversation(match.text, self.language, self.agent_id)
        except HAError as exc:
            self._count(exc.kind)
            log.warning("Home Assistant conversation: %s", exc)
            return AssistReply("", CONVERSATION_INTENT, handled=False, data={"error": exc.kind})
        response = _dict(data.get("response"))
        speech = _dict(_dict(response.get("speech")).get("plain")).get("speech")
        code = _dict(response.get("data")).get("code")
        no_match = response.get("response_type") == "error" and code in ("no_intent_match", "no_valid_targets")
        if no_match or not isinstance(speech, str) or not speech:
            return AssistReply("", CONVERSATION_INTENT, handled=False, data={"code": code})
        self._count("ha_conversation")
        return AssistReply(str(speech), CONVERSATION_INTENT, data={"response_type": response.get("response_type")})

    async def close(self) -> None:
        await self.catalog.close()


def install(services: AssistServices, *, count: Callable[[str], None] | None = None) -> HomeAssistant | None:
    """Register the device-control handlers and slot lists when HA_URL and HA_TOKEN are set.

    Returns the installed :class:`HomeAssistant` (``close()`` it on shutdown), or None when Home
    Assistant is not configured (the default handlers then keep saying so).
    """
    settings = services.settings
    url = str(getattr(settings, "ha_url", "") or "")
    token_setting = getattr(settings, "ha_token", None)
    token = token_setting.get_secret_value() if isinstance(token_setting, SecretStr) else str(token_setting or "")
    if not url or not token:
        if url or token:
            log.warning("Home Assistant: HA_URL and HA_TOKEN are both needed; device control is off")
        return None
    counter = count or (lambda event: None)
    client = HomeAssistantClient(url, str(token), timeout_s=float(getattr(settings, "ha_timeout_s", 5.0)))
    catalog = HomeCatalog(client, services.now, refresh_s=float(getattr(settings, "ha_refresh_s", 300.0)),
                          count=counter)
    ha = HomeAssistant(catalog, language=str(getattr(settings, "assist_language", "en") or "en"),
                       agent_id=str(getattr(settings, "ha_agent_id", "") or ""), count=counter)
    for intent, handler in ha.handlers().items():
        if intent == CONVERSATION_INTENT and not getattr(settings, "ha_conversation_fallback", False):
            continue
        services.registry.replace(intent, handler)
    services.registry.add_slot_provider("name", catalog.name_rows)
    services.registry.add_slot_provider("area", catalog.area_rows)
    catalog.maybe_refresh()  # the names are there by the first request when a loop runs
    log.info("Home Assistant at %s: device control on (names refreshed every %g s)", client.url,
             float(getattr(settings, "ha_refresh_s", 300.0)))
    return ha
