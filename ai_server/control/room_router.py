"""Spoken routing requests carried out: replaying the last reply in another room, announcements.

:class:`RoomRouter` is the voice pipeline's ``router`` (``Pipeline.router``, set by the control
plane): for every voice turn it parses the transcript (:func:`ai_server.routing.parse_route`)
against the rooms and device ids the registry knows, and when the turn is a routing request it
returns the action that carries it out; the pipeline runs that action instead of the LLM and
speaks the confirmation it returns to the asking device ("OK, playing it in the kitchen.").

Which devices hear it (all through :class:`~ai_server.control.speech.Speaker`, the hub's stream):

* a room: its online devices with a speaker, the asker included when it is in that room
  ("repeat that in the kitchen" said in the kitchen repeats it there, after the confirmation);
* a device id: that device, if online with a speaker;
* everywhere: every online device with a speaker *except the asker*, which has just heard the
  reply (or said the announcement itself) and hears the confirmation instead.

Rooms are recognised among every room the registry knows, online or not, so a room whose devices
are all offline gets "There is no speaker in the kitchen right now." rather than "I don't know a
room called kitchen". A spoken announcement is also published as a :class:`Broadcast` (room, or
none for everywhere; not for a single device, which a Broadcast cannot name) after the speech has
started: the broker being down does not keep it from the rooms, and only costs the MQTT copy.

The replayed reply is the asker's last assistant reply that did not answer a routing request
itself: "play it in the kitchen", then "and in the bedroom" replays the answer, not "OK, playing
it in the kitchen.".

:meth:`RoomRouter.speak_broadcast` speaks :meth:`ControlPlane.broadcast`'s message the same way.

Each request that would make speakers talk is charged to the asking device's announcement budget
(AI_ANNOUNCE_PER_MIN, :class:`~ai_server.control.speech.AnnounceLimit`; broadcasts to one shared
key): over it the asker hears "Too many announcements; try again in a minute." and nothing is
spoken or published. Requests that cannot be carried out (unknown place, nothing to replay, no
speaker there) cost nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Final

from ai_server.assist.core import AssistContext, AssistReply, AssistServices, IntentMatch, SlotRows
from ai_server.control.errors import BrokerUnavailable
from ai_server.control.metrics import ControlMetrics
from ai_server.control.registry import DeviceRecord, DeviceRegistry
from ai_server.control.speech import (
    CHAT_ASKER,
    PLANE_ASKER,
    SPEAKER_CAPABILITY,
    TOO_MANY,
    Speaker,
    SpeakError,
    TooManyAnnouncements,
)
from ai_server.conversation import Conversations
from ai_server.pipeline import Turn
from ai_server.routing import Route, RouteKind, Scope, parse_route
from shared.errors import one_line
from shared.mqtt import Broadcast, MessageError

log = logging.getLogger(__name__)

PublishBroadcast = Callable[[str, str | None], Awaitable[Broadcast]]

# The confirmation waits for the publish: a half-open broker connection must not hold it for long.
BROADCAST_PUBLISH_TIMEOUT_S: Final = 2.0


class RoomRouter:
    def __init__(
        self,
        registry: DeviceRegistry,
        speaker: Speaker,
        conversations: Conversations,
        metrics: ControlMetrics,
        publish_broadcast: PublishBroadcast,
    ) -> None:
        self.registry = registry
        self.speaker = speaker
        self.conversations = conversations
        self.metrics = metrics
        self._publish_broadcast = publish_broadcast
        self.active = True  # False once the control plane stops: routing requests then go to the LLM

    # -- the pipeline's router -----------------------------------------------------------------
    def route(self, turn: Turn) -> Callable[[], Awaitable[str]] | None:
        """Parse only (a preemptive turn may still be discarded): the action acts when the pipeline runs it."""
        route = self.parse(turn.transcript)
        if route is None:
            return None
        asker = turn.device_id

        async def act() -> str:
            return await self.carry_out(asker, route)

        return act

    def parse(self, transcript: str) -> Route | None:
        devices = self.registry.devices()
        return parse_route(transcript, {d.room for d in devices if d.room}, [d.device_id for d in devices])

    async def carry_out(self, asker: str, route: Route) -> str:
        """Do what ``route`` asks for ``asker``; returns the sentence to say to the asker."""
        self.metrics.event(f"route_{route.kind.value}")
        if route.scope is Scope.UNKNOWN:
            self.metrics.event("route_unknown_place")
            return f"I don't know a room called {route.target}."
        if route.kind is RouteKind.REPLAY:
            text = self.last_reply(asker)
            if not text:
                self.metrics.event("route_nothing_to_replay")
                return "I haven't said anything yet that I could play."
        else:
            text = route.text
        devices = self.targets(route, asker)
        if not devices:
            self.metrics.event("route_no_speaker")
            return _no_speaker(route)
        try:
            self.speaker.admit(asker)
        except TooManyAnnouncements:
            return TOO_MANY
        if not self._say(devices, text):
            return f"I can't reach the speakers {_at(route)} right now."
        if route.kind is RouteKind.ANNOUNCE and route.scope is not Scope.DEVICE:
            await self._publish_quietly(text, route.target if route.scope is Scope.ROOM else None)
        verb = "playing it" if route.kind is RouteKind.REPLAY else "announcing it"
        return f"OK, {verb} {_at(route)}."

    def targets(self, route: Route, asker: str) -> list[str]:
        """Online speaker devices for ``route`` (see the module doc for who is included)."""
        if route.scope is Scope.ROOM:
            candidates = self.registry.in_room(route.target)
        elif route.scope is Scope.DEVICE:
            record = self.registry.get(route.target)
            candidates = [] if record is None else [record]
        elif route.scope is Scope.ALL:
            candidates = [d for d in self.registry.devices() if d.device_id != asker]
        else:
            candidates = []
        return [d.device_id for d in candidates if _can_speak(d)]

    def last_reply(self, device_id: str) -> str:
        """The device's last assistant reply that was not itself a routing confirmation; "" if none."""
        for exchange in reversed(self.conversations.history(device_id)):
            if exchange.assistant.strip() and self.parse(exchange.user) is None:
                return exchange.assistant.strip()
        return ""

    def area_rows(self) -> SlotRows:
        """Every room the registry knows, as spoken ("living_room" -> "living room"), for the templates."""
        rows: SlotRows = []
        for room in sorted({d.room for d in self.registry.devices() if d.room}):
            spoken = " ".join(re.split(r"[\s_.\-]+", room.strip(" _.-").lower()))
            if spoken:
                rows.append((spoken, room, {}))
        return rows

    # -- ControlPlane.broadcast ------------------------------------------------------------------
    def speak_broadcast(self, message: str, room: str | None) -> list[str]:
        """Speak a broadcast on ``room``'s online speaker devices (every one when None); best effort.

        Returns the devices it started on; none (no speaker online there, no hub, over the broadcasts'
        AI_ANNOUNCE_PER_MIN budget) is logged and counted.
        """
        if room is None:
            devices = [d.device_id for d in self.registry.devices() if _can_speak(d)]
        else:
            devices = [d.device_id for d in self.registry.in_room(room) if _can_speak(d)]
        try:
            if devices:
                self.speaker.admit(PLANE_ASKER)
        except TooManyAnnouncements:
            devices = []  # counted as announce_limited, and as unspoken below
        started = self._say(devices, message)
        self.metrics.event("broadcast_spoken" if started else "broadcast_unspoken")
        if not started:
            log.info("broadcast not spoken: no reachable speaker %s", f"in {room}" if room else "online")
        return started

    # -- helpers ---------------------------------------------------------------------------------
    def _say(self, devices: list[str], text: str) -> list[str]:
        """Start ``text`` on each device; one that cannot be reached does not stop the others."""
        started: list[str] = []
        for device_id in devices:
            try:
                self.speaker.speak(device_id, text)
            except SpeakError as exc:
                self.metrics.event("route_speech_refused")
                log.info("not spoken on %s: %s", device_id, exc)
            else:
                started.append(device_id)
        return started

    async def _publish_quietly(self, text: str, room: str | None) -> None:
        """The MQTT copy of a spoken announcement: its failure is logged, the speech has gone out anyway."""
        try:
            async with asyncio.timeout(BROADCAST_PUBLISH_TIMEOUT_S):
                await self._publish_broadcast(text, room)
        except (BrokerUnavailable, MessageError, TimeoutError) as exc:
            self.metrics.event("route_broadcast_lost")
            log.warning("announcement spoken but not published: %s", one_line(exc))


# -- the assist layer ------------------------------------------------------------------------------

# The intents whose sentences (home-assistant-intents' HassBroadcast, our sentences/en.yaml) are routing
# requests. The templates decide *that* a sentence asks for one; parse_route then resolves the place and
# cuts the words to say out of the transcript (its case and punctuation kept), and refuses what is not
# one after all ("say that in French": the LLM answers).
ROUTE_INTENTS: Final = ("HassBroadcast", "NailaAnnounce", "NailaReplay")


def install(services: AssistServices, rooms: RoomRouter) -> None:
    """Register the routing intents' handler and the registry's rooms as the ``area`` slot list."""

    async def carry_out(match: IntentMatch, ctx: AssistContext) -> AssistReply:
        route = rooms.parse(match.text) if rooms.active else None
        if route is None:
            return AssistReply("", match.intent, handled=False)
        said = await rooms.carry_out(ctx.device_id or CHAT_ASKER, route)
        return AssistReply(said, match.intent, data={"kind": route.kind.value, "scope": route.scope.value,
                                                     "target": route.target})

    for intent in ROUTE_INTENTS:
        services.registry.register(intent, carry_out)
    services.registry.add_slot_provider("area", rooms.area_rows)


def _can_speak(device: DeviceRecord) -> bool:
    return device.online and SPEAKER_CAPABILITY in device.capabilities


def _at(route: Route) -> str:
    """Where, as spoken: in the kitchen, on kitchen pi, everywhere."""
    if route.scope is Scope.ALL:
        return route.place
    return f"{'on' if route.scope is Scope.DEVICE else 'in'} {route.place}"


def _no_speaker(route: Route) -> str:
    if route.scope is Scope.ALL:
        return "There is no other speaker online right now."
    if route.scope is Scope.DEVICE:
        return f"{route.place.capitalize()} can't play anything right now."
    return f"There is no speaker {_at(route)} right now."
