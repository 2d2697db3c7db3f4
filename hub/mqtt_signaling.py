"""WebRTC signaling over MQTT: the same sessions as ``POST /connect``, for devices that cannot do HTTP.

A device publishes a :class:`~shared.mqtt.SignalingDescription` offer (``session_id`` new per
attempt) on ``naila/devices/{id}/signaling/offer``; the hub answers on
``naila/devices/{id}/signaling/answer`` (QoS 1, not retained) with the same ``session_id``.
The session itself is :meth:`hub.server.Hub.connect_device`, exactly as for HTTP: a new
offer replaces the device's old session once it has been accepted.

Several hubs on one broker (issue 21): every hub hears every offer, and only the hub that
:class:`~hub.hub_directory.HubDirectory` elects answers it (the offer's ``hub_id`` when that hub
is online, else the hub already serving the device, else the least loaded); the others count it
in ``naila_hub_mqtt_offers_other_hub_total`` and stay silent. An offer that cannot be read (or
is over the rate limit) is refused only by the hub elected without its ``hub_id``. Answers carry
the answering hub's ``hub_id``, which the device sends back in its next offer (stickiness).

Checks on every offer, in this order (each refusal counted in
``naila_hub_mqtt_offers_rejected_total{reason}``):

1. ``rate_limited``: per device (the topic's id), ``HUB_MQTT_OFFER_BURST`` back to back, then
   ``HUB_MQTT_OFFERS_PER_MIN``. Checked before parsing, so a flood costs almost nothing.
2. ``bad_message``: the payload is not a valid SignalingDescription offer.
   ``topic_mismatch``: its ``device_id`` is not the topic's (spec §15.1, "validate device IDs
   in signaling"), so a device cannot open a session in another device's name.
3. ``duplicate``: the same ``session_id`` as this device's previous offer: a QoS 1 redelivery.
   Dropped without a reply (the first copy is answered); answering it again would replace the
   device's working session with one nobody uses.
4. ``unauthorized``: ``HUB_DEVICE_TOKENS`` applies as for HTTP: the offer's ``token`` must
   match the device's entry (or ``"*"``); a device with neither is refused unless
   ``HUB_ALLOW_UNAUTHENTICATED=true``.
5. ``bad_sdp`` (and ``too_many_media``, ``no_bundle``, ``sdp_too_large``):
   ``hub.signaling.check_offer_sdp``, then whatever ``connect_device`` refuses.
6. ``busy``: ``HUB_MAX_NEGOTIATIONS`` offers of this module are being negotiated; the hub's
   own cap, shared with HTTP, refuses with ``busy`` or ``too_many_sessions`` as well.

A refused offer is answered with ``error`` set and an empty ``sdp`` (when its ``session_id``
can be read), so the device learns why at once and backs off, instead of timing out.

Authentication: over MQTT the broker is the gatekeeper, not ``HUB_DEVICE_TOKENS``. Give every
device its own broker account with user name == device id and an ACL that lets it write only
its own ``naila/devices/<id>/signaling/offer`` and read only its own ``.../signaling/answer``
(``deploy/mosquitto/acl``, accounts from ``scripts/mqtt-users.sh``); the topic-vs-payload check
above then makes the payload's ``device_id`` trustworthy. Use TLS (``MQTT_TLS``) so offers and
tokens cannot be read on the LAN. ``HUB_DEVICE_TOKENS`` is an extra check on top, not a
replacement: on a broker without ACLs any client can read the offer topics, tokens included.

ICE: aiortc gathers every candidate before it answers (no trickle), so the hub never publishes
on ``.../signaling/ice``. A device that trickles may publish :class:`~shared.mqtt.IceCandidate`
messages there with the offer's ``session_id``: they are added to that session's peer
connection (``pc.addIceCandidate``), or held (up to :data:`MAX_EARLY_CANDIDATES`) while its
offer is still being negotiated; anything else is counted in
``naila_hub_mqtt_ice_candidates_total{outcome}`` and dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

import aiomqtt
from aiortc import RTCIceCandidate, RTCPeerConnection
from aiortc.sdp import candidate_from_sdp

from hub.metrics import HubMetrics
from hub.mqtt_control import MessageHandler
from hub.signaling import RequestRejected, check_offer_sdp, check_token
from shared.config import HubSettings
from shared.errors import one_line
from shared.mqtt import (
    IceCandidate,
    MessageError,
    OutboundMessage,
    SignalingDescription,
    build,
    check_consistent,
    decode,
    decode_message,
    is_safe_segment,
    outbound,
    parse_topic,
    topics,
)
from shared.mqtt.limits import CONTROL_MAX_PAYLOAD_BYTES, MAX_ERROR_LEN
from shared.rate_limit import RateLimiter

log = logging.getLogger("naila.hub.mqtt_signaling")

#: Trickled candidates kept for one offer while it is being negotiated.
MAX_EARLY_CANDIDATES: Final = 32
#: Trickled candidates per device: a burst for one gathering, then a steady trickle.
ICE_BURST: Final = 64
ICE_PER_S: Final = 20.0
#: Devices whose last offer's session_id is remembered (for redelivered duplicates).
MAX_REMEMBERED: Final = 10_000
#: How long stop() lets negotiations in flight finish before cancelling them.
STOP_GRACE_S: Final = 2.0


class PeerSession(Protocol):
    """What this module needs of a hub session (hub.session.DeviceSession)."""

    pc: RTCPeerConnection
    closed: bool


class SignalingHub(Protocol):
    """The hub side: its live sessions and the shared offer -> answer logic."""

    @property
    def sessions(self) -> Mapping[str, PeerSession]: ...

    async def connect_device(self, device_id: str, sdp: str) -> str: ...


class OfferElection(Protocol):
    """Which hub answers an offer (hub.hub_directory.HubDirectory)."""

    hub_id: str

    def answers(self, device_id: str, target: str | None) -> bool: ...


class MqttPort(Protocol):
    """The hub's broker connection (hub.mqtt_control.HubMqtt)."""

    def add_listener(self, topic_filter: str, handler: MessageHandler) -> Callable[[], None]: ...

    async def publish(self, msg: OutboundMessage) -> None: ...


@dataclass(eq=False)
class _Negotiation:
    session_id: str
    early: list[IceCandidate] = field(default_factory=list)  # trickled before the answer


@dataclass(frozen=True)
class _Live:
    session_id: str
    session: PeerSession


class MqttSignaling:
    """Serves offers and trickled candidates from the broker; see the module doc."""

    def __init__(
        self,
        hub: SignalingHub,
        mqtt: MqttPort,
        settings: HubSettings,
        metrics: HubMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        directory: OfferElection | None = None,
    ) -> None:
        """``directory``: None answers every offer (a hub alone on its broker, tests)."""
        self._hub = hub
        self._directory = directory
        self._mqtt = mqtt
        self._hub_id = settings.hub_id
        self._tokens = settings.hub_device_tokens
        self._open = settings.hub_allow_unauthenticated
        self._max_negotiations = settings.hub_max_negotiations
        self.metrics = metrics
        self.offer_limit = RateLimiter(
            settings.hub_mqtt_offers_per_min / 60.0, settings.hub_mqtt_offer_burst, clock=clock
        )
        self.ice_limit = RateLimiter(ICE_PER_S, ICE_BURST, clock=clock)
        self._negotiating: dict[str, _Negotiation] = {}  # device_id -> its latest offer in flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._live: dict[str, _Live] = {}  # device_id -> the session its latest answered offer opened
        self._last_offer: dict[str, str] = {}  # device_id -> session_id of its latest offer
        mqtt.add_listener(topics.ALL_SIGNALING_OFFERS, self.on_offer)
        mqtt.add_listener(topics.ALL_SIGNALING_ICE, self.on_ice)

    async def stop(self) -> None:
        """Let negotiations in flight finish briefly, then cancel the rest."""
        tasks = set(self._tasks)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    def session_closed(self, device_id: str, session: PeerSession) -> None:
        """The hub closed a device's session: forget it (no per-id entry outlives its device)."""
        live = self._live.get(device_id)
        if live is not None and live.session is session:
            del self._live[device_id]

    async def wait_idle(self) -> None:
        """Wait until no offer is being negotiated (tests)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    # -- offers ---------------------------------------------------------------------------
    async def on_offer(self, topic: str, payload: bytes) -> None:
        self.metrics.mqtt_offers += 1
        try:
            parsed = parse_topic(topic)
        except MessageError:
            parsed = None
        device_id = parsed.device_id if parsed is not None else None
        if parsed is None or device_id is None:  # impossible with our wildcard subscription; be safe anyway
            await self._refuse(None, None, "bad_message", f"not a signaling offer topic: {topic[:100]!r}")
            return
        if not self.offer_limit.allow(device_id):
            if self._answers(device_id, None):
                await self._refuse(device_id, _session_id_of(payload), "rate_limited", "too many offers; slow down")
            return
        try:
            offer = decode(SignalingDescription, payload)
        except MessageError as err:
            if self._answers(device_id, None):
                await self._refuse(device_id, _session_id_of(payload), "bad_message", str(err))
            return
        if not self._answers(device_id, offer.hub_id):
            self.metrics.mqtt_offers_other_hub += 1
            log.debug("%s: offer %s is for another hub (hub_id %s)", device_id, offer.session_id, offer.hub_id)
            return
        try:
            check_consistent(parsed, offer)
        except MessageError as err:
            await self._refuse(device_id, offer.session_id, "topic_mismatch", str(err))
            return
        if self._last_offer.get(device_id) == offer.session_id:
            self.metrics.mqtt_offers_rejected["duplicate"] += 1
            log.debug("%s: offer %s received again (QoS 1 redelivery); ignored", device_id, offer.session_id)
            return
        self._remember(device_id, offer.session_id)
        try:
            check_token(self._tokens, device_id, f"Bearer {offer.token}" if offer.token else None,
                        allow_unauthenticated=self._open)
            check_offer_sdp(offer.sdp)
            # Checked here too, so a flood of offers cannot pile up tasks waiting for the hub's cap.
            if len(self._tasks) >= self._max_negotiations:
                raise RequestRejected("busy", f"{self._max_negotiations} offers are being negotiated; retry later")
        except RequestRejected as err:
            await self._refuse(device_id, offer.session_id, err.reason, err.message)
            return
        negotiation = _Negotiation(offer.session_id)
        self._negotiating[device_id] = negotiation
        # The WebRTC negotiation (ICE gathering included) takes tens of ms to seconds: off the
        # receive loop, so other devices' messages keep flowing.
        task = asyncio.create_task(self._negotiate(device_id, offer.sdp, negotiation), name=f"mqtt-offer {device_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _answers(self, device_id: str, target: str | None) -> bool:
        # Decided synchronously in the receive loop: see hub.hub_directory on why hubs agree.
        return self._directory is None or self._directory.answers(device_id, target)

    async def _negotiate(self, device_id: str, sdp: str, negotiation: _Negotiation) -> None:
        session_id = negotiation.session_id
        try:
            try:
                answer = await self._hub.connect_device(device_id, sdp)
            except RequestRejected as err:
                await self._refuse(device_id, session_id, err.reason, err.message)
                return
            except Exception as err:  # aiortc refusing the SDP: the HTTP path reports it the same way
                reason = f"offer rejected: {one_line(err, with_type=False)}"
                await self._refuse(device_id, session_id, "bad_sdp", reason)
                return
            # connect_device returned without yielding after storing the session, so this is the
            # session this offer opened (a later offer for the device waits on the hub's lock).
            session = self._hub.sessions.get(device_id)
            if session is not None:
                self._live[device_id] = _Live(session_id, session)
                for candidate in negotiation.early:
                    await self._add_candidate(session, candidate)
                negotiation.early.clear()
            await self._publish_answer(device_id, session_id, answer)
        finally:
            if self._negotiating.get(device_id) is negotiation:
                del self._negotiating[device_id]

    async def _publish_answer(self, device_id: str, session_id: str, sdp: str) -> None:
        try:
            reply = build(SignalingDescription, type="answer", sdp=sdp, device_id=device_id, session_id=session_id,
                          hub_id=self._hub_id)
            await self._mqtt.publish(outbound(topics.signaling_answer(device_id), reply))
        except (MessageError, aiomqtt.MqttError) as err:
            # The session stays open; the device times out, redials and replaces it.
            self.metrics.mqtt_offers_rejected["answer_not_sent"] += 1
            log.warning("%s: could not publish the answer to offer %s: %s", device_id, session_id, err)
            return
        self.metrics.mqtt_answers += 1
        log.info("%s: answered offer %s over MQTT", device_id, session_id)

    async def _refuse(self, device_id: str | None, session_id: str | None, reason: str, message: str) -> None:
        """Count and log a refusal, and tell the device when the offer says where to.

        Published inline: a QoS 1 publish is one broker round trip, and a device flooding offers
        is then slowed down by its own refusals rather than piling up tasks.
        """
        self.metrics.mqtt_offers_rejected[reason] += 1
        level = logging.DEBUG if reason == "rate_limited" else logging.WARNING
        log.log(level, "MQTT offer %s from %s refused (%s): %s", session_id or "-", device_id or "?", reason, message)
        if device_id is None or session_id is None:
            return
        error = f"{reason}: {message}"[:MAX_ERROR_LEN]
        try:
            reply = build(
                SignalingDescription, type="answer", sdp="", error=error, device_id=device_id, session_id=session_id,
                hub_id=self._hub_id,
            )
            await self._mqtt.publish(outbound(topics.signaling_answer(device_id), reply))
        except (MessageError, aiomqtt.MqttError) as err:
            log.info("%s: could not tell the device its offer was refused: %s", device_id, err)

    def _remember(self, device_id: str, session_id: str) -> None:
        self._last_offer.pop(device_id, None)
        if len(self._last_offer) >= MAX_REMEMBERED:  # forget the device that offered least recently
            del self._last_offer[next(iter(self._last_offer))]
        self._last_offer[device_id] = session_id

    # -- trickled ICE ---------------------------------------------------------------------
    async def on_ice(self, topic: str, payload: bytes) -> None:
        try:
            parsed, message = decode_message(topic, payload)
        except MessageError as err:
            self._ice_outcome("bad_message", topic, err)
            return
        device_id = parsed.device_id
        if device_id is None or not isinstance(message, IceCandidate):
            self._ice_outcome("bad_message", topic, "not an ICE candidate")
            return
        if not self.ice_limit.allow(device_id):
            self._ice_outcome("rate_limited", topic, "too many candidates")
            return
        live = self._live.get(device_id)
        if (
            live is not None
            and live.session_id == message.session_id
            and not live.session.closed
            and self._hub.sessions.get(device_id) is live.session
        ):
            await self._add_candidate(live.session, message)
            return
        negotiation = self._negotiating.get(device_id)
        if negotiation is not None and negotiation.session_id == message.session_id:
            if len(negotiation.early) >= MAX_EARLY_CANDIDATES:
                self._ice_outcome("too_many_early", topic, "offer still being negotiated")
            else:
                negotiation.early.append(message)
                self.metrics.mqtt_ice["held"] += 1
            return
        self._ice_outcome("no_session", topic, f"no session {message.session_id}")

    async def _add_candidate(self, session: PeerSession, message: IceCandidate) -> None:
        try:
            candidate = remote_candidate(message)
            await session.pc.addIceCandidate(candidate)
        except Exception as err:  # a malformed line, or aiortc refusing it: the session carries on
            self._ice_outcome("bad_candidate", message.session_id, err)
            return
        self.metrics.mqtt_ice["added" if candidate is not None else "end_of_candidates"] += 1

    def _ice_outcome(self, outcome: str, where: str, detail: object) -> None:
        self.metrics.mqtt_ice[outcome] += 1
        log.debug("ICE candidate on %s dropped (%s): %s", where, outcome, detail)


def remote_candidate(message: IceCandidate) -> RTCIceCandidate | None:
    """The aiortc candidate for a trickled ``candidate:...`` line; ``None`` for end-of-candidates (``""``).

    Raises ``ValueError`` for a line that is not a candidate.
    """
    text = message.candidate.strip().removeprefix("a=").removeprefix("candidate:")
    if not text:
        return None
    bits = text.split()
    # foundation component protocol priority address port "typ" type [extensions]
    if len(bits) < 8 or bits[6] != "typ" or not bits[1].isdigit() or not bits[3].isdigit() or not bits[5].isdigit():
        raise ValueError(f"not an ICE candidate: {text[:80]!r}")
    candidate = candidate_from_sdp(text)
    candidate.sdpMid = message.sdpMid
    candidate.sdpMLineIndex = message.sdpMLineIndex
    return candidate


def _session_id_of(payload: bytes) -> str | None:
    """The ``session_id`` of a payload that failed validation, if it has a usable one (to address a refusal)."""
    if len(payload) > CONTROL_MAX_PAYLOAD_BYTES:
        return None
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    value = data.get("session_id") if isinstance(data, dict) else None
    return value if is_safe_segment(value) else None
