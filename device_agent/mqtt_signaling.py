"""The device's offer/answer exchange over MQTT (``DEVICE_SIGNALING=mqtt``), for hubs reached only via the broker.

:class:`HubClient` calls :meth:`MqttSignaling.exchange` with its offer where it would otherwise
``POST /connect``; everything around it (ICE gathering first, the reconnect backoff, the link
monitor) is the same for both transports.

* The offer goes to ``naila/devices/{id}/signaling/offer`` (QoS 1) through the device's own broker
  connection (:class:`MqttAgent`'s link), with a ``session_id`` that is new for every attempt and
  ``DEVICE_HUB_TOKEN`` as ``token`` when set.
* The answer comes on ``naila/devices/{id}/signaling/answer``, which :class:`MqttAgent` subscribes
  to and hands to :meth:`MqttSignaling.on_answer`. An answer with another ``session_id`` belongs
  to an attempt given up on (a late answer after a timeout): it is counted and ignored, so the
  device never applies an answer whose hub session has already been replaced.
* An answer with ``error`` set is the hub refusing the offer (bad SDP, rate limit, token): the
  attempt fails at once with that reason, and the normal backoff applies.
* Several hubs on one broker (issue 21): the offer carries ``hub_id``, the hub it is meant for:
  ``DEVICE_HUB_ID`` when set, else the hub that answered the last offer (stickiness: the device
  goes back to the hub that has its session and conversation). The hubs answer an offer for a
  hub that is offline themselves (hub/hub_directory.py), so a device whose hub died lands on
  another at its next offer. After an offer to a hub that timed out, the next one names no hub.
* No answer within ``timeout_s`` (waiting for the broker connection included) fails the attempt
  like an HTTP timeout.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

import aiomqtt

from device_agent.webrtc_client import ConnectError
from shared.mqtt import MessageError, SignalingDescription, build, decode_message, outbound, topics
from shared.mqtt_link import MqttLink

log = logging.getLogger(__name__)


def new_session_id() -> str:
    return uuid.uuid4().hex


class MqttSignaling:
    """One offer at a time over the device's broker link; see the module doc."""

    def __init__(
        self,
        link: MqttLink,
        device_id: str,
        *,
        token: str | None = None,
        hub_id: str | None = None,
        timeout_s: float = 10.0,
        session_ids: Callable[[], str] = new_session_id,
    ) -> None:
        self.link = link
        self.device_id = device_id
        self.token = token or None
        self.home_hub = hub_id or None  # DEVICE_HUB_ID
        self.last_hub: str | None = None  # the hub that answered the last offer
        self._skip_target = False
        self.timeout_s = timeout_s
        self._session_ids = session_ids
        self.offer_topic = topics.signaling_offer(device_id)
        self.answer_topic = topics.signaling_answer(device_id)
        self._waiting: tuple[str, asyncio.Future[SignalingDescription]] | None = None
        self.stale_answers = 0
        self.bad_answers = 0

    @property
    def target_hub(self) -> str | None:
        """The hub the next offer names (None: let the hubs elect one)."""
        return None if self._skip_target else self.home_hub or self.last_hub

    def describe(self) -> str:
        return f"mqtt://{self.link.address}/{self.offer_topic}"

    async def exchange(self, offer_sdp: str) -> str:
        """Publish the offer and return the hub's answer SDP; raises :class:`ConnectError`."""
        session_id = self._session_ids()
        target = self.target_hub
        self._skip_target = False
        answered: asyncio.Future[SignalingDescription] = asyncio.get_running_loop().create_future()
        self._waiting = (session_id, answered)
        try:
            offer = build(
                SignalingDescription,
                type="offer",
                sdp=offer_sdp,
                device_id=self.device_id,
                session_id=session_id,
                token=self.token,
                hub_id=target,
            )
            message = outbound(self.offer_topic, offer)
            async with asyncio.timeout(self.timeout_s):
                # At start-up the WebRTC client is usually ready before the broker connection.
                await self.link.connected.wait()
                await self.link.publish(message)
                log.info("offer %s published on %s", session_id, self.offer_topic)
                answer = await answered
        except TimeoutError:
            self._skip_target = target is not None  # that hub may be alive but stuck: ask any hub next
            where = "from the hub" if self.link.connected.is_set() else f"(broker {self.link.address} unreachable)"
            raise ConnectError(f"no answer {where} within {self.timeout_s:g} s on {self.answer_topic}") from None
        except aiomqtt.MqttError as exc:
            raise ConnectError(f"cannot publish the offer: {exc}") from None
        except MessageError as exc:  # e.g. an SDP over the signaling size limit
            raise ConnectError(f"offer not sendable over MQTT: {exc}") from None
        finally:
            self._waiting = None
        if answer.error is not None:
            raise ConnectError(f"hub refused the offer: {answer.error}")
        if answer.hub_id is not None and answer.hub_id != self.last_hub:
            log.info("answered by hub %s", answer.hub_id)
            self.last_hub = answer.hub_id
        return answer.sdp

    async def on_answer(self, topic: str, payload: bytes) -> None:
        """A message on our answer topic (called from the MQTT receive loop)."""
        try:
            _parsed, message = decode_message(topic, payload)
        except MessageError as exc:
            self.bad_answers += 1
            log.warning("malformed signaling answer ignored: %s", exc)
            return
        if not isinstance(message, SignalingDescription):  # decode_message picked by topic; cannot happen
            return
        waiting = self._waiting
        if waiting is None or waiting[0] != message.session_id:
            self.stale_answers += 1
            log.info("answer for session %s ignored: not the offer being waited for", message.session_id)
            return
        if not waiting[1].done():
            waiting[1].set_result(message)
