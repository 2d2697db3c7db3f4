"""Several hubs on one broker (issue 21): each hub's presence, and which hub answers an MQTT offer.

Every hub publishes a retained :class:`~shared.mqtt.HubStatus` on ``naila/hubs/{HUB_ID}/status``
(online, and the devices it serves) when it connects and whenever its sessions change; its last
will and its goodbye say ``online: false``. Every hub subscribes to ``naila/hubs/+/status``, so
each one knows every hub and which devices each serves (the dashboard shows it too).

Every hub also hears every offer (a plain subscription). :func:`answering_hub` picks the one
hub that answers, from the offer and the presences received so far:

1. the offer's ``hub_id`` when that hub is online (a device bound to a hub with
   ``DEVICE_HUB_ID``, or re-offering to the hub that answered it last);
2. else the online hub whose presence lists the device (stickiness: its old devices, which send
   no ``hub_id``, stay where their session and conversation are);
3. else the online hub serving the fewest devices, ties broken by a hash of hub and device
   (rendezvous hashing), so new devices spread evenly and every hub computes the same winner.

Why an election and not an MQTT shared subscription (``$share/naila-hubs/...``): mosquitto
hands each message of a shared subscription to the next subscriber in turn, offline ones with a
persistent session included (the hub's session is persistent, finding M1), so with one hub dead
every other offer would be queued for it and lost for the device; and a shared subscription
cannot honour a targeted or sticky offer (the broker, not the device, picks the hub).

Why every hub agrees: one mosquitto handles messages one at a time and delivers them to every
subscriber in that order, and the decision is taken synchronously in the receive loop from the
messages that came before the offer; every hub sees the same history, so the same winner. A hub
that has just (re)connected may briefly see less; the worst case is a second answer (the device
uses the first, the unused session times out) or none (the device re-offers after its timeout).
A dead hub's presence turns offline as soon as the broker publishes its will (at once for a
crashed process, within 1.5 keep-alives for a machine that vanished), and from then on offers
targeted at it are answered by another hub.

With no presence at all (a single hub before its own presence comes back, or a broker whose ACL
refuses ``naila/hubs/...``) every hub answers every offer: today's single-hub behaviour.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Mapping
from typing import Final, Protocol

import aiomqtt

from hub.mqtt_control import MessageHandler
from shared.mqtt import HubStatus, MessageError, OutboundMessage, build, decode_message, outbound, topics
from shared.mqtt.limits import MAX_OBJECTS

log = logging.getLogger("naila.hub.directory")

#: Hubs remembered (retained presences): bounded so a flood of made-up hub ids cannot grow the hub.
MAX_HUBS: Final = 256


class DirectoryMqtt(Protocol):
    """The hub's broker connection (hub.mqtt_control.HubMqtt)."""

    def add_listener(self, topic_filter: str, handler: MessageHandler) -> Callable[[], None]: ...

    async def publish(self, msg: OutboundMessage) -> None: ...


def _weight(hub_id: str, device_id: str) -> bytes:
    return hashlib.sha256(f"{hub_id}\0{device_id}".encode()).digest()


def answering_hub(device_id: str, target: str | None, hubs: Mapping[str, HubStatus]) -> str | None:
    """The hub that answers ``device_id``'s offer (see the module doc); None = no hub is known online."""
    online = {hub_id: status for hub_id, status in hubs.items() if status.online}
    if not online:
        return None
    if target is not None and target in online:
        return target
    serving = sorted(hub_id for hub_id, status in online.items() if device_id in status.devices)
    if serving:
        return serving[0]
    return min(online, key=lambda hub_id: (online[hub_id].device_count, _weight(hub_id, device_id)))


def presence(hub_id: str, devices: list[str], *, online: bool = True) -> OutboundMessage:
    """The hub's retained presence message (``online=False``: its will and goodbye)."""
    listed = sorted(devices)
    status = build(HubStatus, hub_id=hub_id, online=online, devices=listed[:MAX_OBJECTS], device_count=len(listed))
    return outbound(topics.hub_status(hub_id), status)


class HubDirectory:
    """Every hub's presence as received, and this hub's own, kept published; see the module doc."""

    def __init__(self, hub_id: str, mqtt: DirectoryMqtt, devices: Callable[[], list[str]]) -> None:
        self.hub_id = hub_id
        self._mqtt = mqtt
        self._devices = devices  # the ids this hub serves now
        self.hubs: dict[str, HubStatus] = {}
        self._listeners: list[Callable[[HubStatus], None]] = []
        self._publishing: asyncio.Task[None] | None = None
        self._dirty = False
        self._stopped = False
        self.bad_messages = 0
        mqtt.add_listener(topics.ALL_HUB_STATUS, self.on_status)

    def add_listener(self, listener: Callable[[HubStatus], None]) -> None:
        """Called with every presence received (the dashboard)."""
        self._listeners.append(listener)

    def answers(self, device_id: str, target: str | None) -> bool:
        """Whether this hub answers ``device_id``'s offer (addressed to ``target``)."""
        winner = answering_hub(device_id, target, self.hubs)
        return winner is None or winner == self.hub_id

    def serving_hub(self, device_id: str) -> str | None:
        """The online hub whose presence lists the device (the first by id if several do)."""
        return next((h for h, s in sorted(self.hubs.items()) if s.online and device_id in s.devices), None)

    async def on_status(self, topic: str, payload: bytes) -> None:
        try:
            parsed, message = decode_message(topic, payload) if payload else (topics.parse_topic(topic), None)
        except MessageError as err:
            self.bad_messages += 1
            log.info("hub presence on %.200r dropped: %s", topic, err)
            return
        hub_id = parsed.hub_id
        if hub_id is None:
            return
        if not isinstance(message, HubStatus):  # an empty retained message clears the presence
            self.hubs.pop(hub_id, None)
            return
        if hub_id not in self.hubs and len(self.hubs) >= MAX_HUBS:
            offline = next((h for h, s in self.hubs.items() if not s.online), None)
            if offline is None:
                self.bad_messages += 1
                log.warning("hub presence of %s ignored: %d hubs known already", hub_id, MAX_HUBS)
                return
            del self.hubs[offline]
        self.hubs[hub_id] = message
        for listener in list(self._listeners):
            try:
                listener(message)
            except Exception:
                log.exception("hub presence listener failed")

    # -- this hub's presence --------------------------------------------------------------
    def sessions_changed(self) -> None:
        """The devices this hub serves changed: publish its presence (coalesced, one at a time)."""
        if self._stopped:  # sessions closing at shutdown: the goodbye (offline) is the last word
            return
        self._dirty = True
        if self._publishing is None or self._publishing.done():
            self._publishing = asyncio.get_running_loop().create_task(self._publish_loop(), name="hub-presence")

    async def publish_now(self) -> None:
        """Publish this hub's presence now (on every broker (re)connect)."""
        self._dirty = False
        try:
            await self._mqtt.publish(presence(self.hub_id, self._devices()))
        except (MessageError, aiomqtt.MqttError) as err:
            # The next connect publishes it again; meanwhile the other hubs see the older one.
            log.info("hub presence not published: %s", err)

    async def _publish_loop(self) -> None:
        while self._dirty:
            await self.publish_now()

    async def stop(self) -> None:
        """Publish nothing more (before the broker link's goodbye)."""
        self._stopped = True
        task, self._publishing = self._publishing, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
