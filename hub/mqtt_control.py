"""The hub's broker connection: one :class:`~shared.mqtt_link.MqttLink` shared by every hub module.

Why one: a broker allows one connection per client id, and each extra connection would redial,
authenticate and re-subscribe on its own. So the hub opens exactly one (client id
``naila-hub-<HUB_ID>``, credentials and TLS from ``MQTT_*``) and hub modules register what they
want to hear with :meth:`HubMqtt.add_listener`.

The hub must run without a broker: :meth:`HubMqtt.start` returns at once and the link keeps
redialling in the background (exponential backoff with jitter); HTTP ``POST /connect`` and the
media path never wait for it. ``naila_hub_mqtt_connected`` says whether it is up.

Listener API (for any hub module, e.g. a web dashboard)::

    async def on_status(topic: str, payload: bytes) -> None:
        try:
            parsed, status = decode_message(topic, payload)   # shared.mqtt: validates, never trust payloads
        except MessageError:
            return
        ...

    remove = hub.mqtt.add_listener(topics.ALL_DEVICE_STATUS, on_status)
    hub.mqtt.add_listener(topics.ALERTS_ALL, on_alert)
    ...
    remove()  # stop calling on_status (the broker subscription stays; other listeners may share it)

* ``hub.mqtt`` is ``None`` when ``HUB_MQTT=false``: check before registering.
* Register any time, before or after :meth:`start`; the subscription (QoS 1) is made at once if
  connected, and again after every reconnect.
* A handler gets every message whose topic matches its filter (``+`` and ``#`` wildcards), in
  arrival order, including retained ones sent on (re)subscribe.
* Handlers run inline in the one receive loop: return quickly and spawn a task for slow work.
  A handler that raises is logged and counted (``naila_hub_mqtt_listener_errors_total``); the
  other listeners and the connection carry on.
* :meth:`publish` sends a :func:`shared.mqtt.outbound` message; it raises ``aiomqtt.MqttError``
  while the broker is unreachable (nothing is queued).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiomqtt

from hub.metrics import HubMetrics
from shared.backoff import Backoff
from shared.config import MqttSettings
from shared.mqtt import OutboundMessage
from shared.mqtt_link import MqttLink

log = logging.getLogger("naila.hub.mqtt")

#: ``async def handler(topic: str, payload: bytes) -> None``
MessageHandler = Callable[[str, bytes], Awaitable[None]]


@dataclass(frozen=True, eq=False)
class Listener:
    """One registration: compared by identity, so the same handler may be registered twice."""

    topic_filter: str
    handler: MessageHandler


class HubMqtt:
    """The hub's MQTT link and its listeners; see the module doc."""

    def __init__(
        self,
        settings: MqttSettings,
        hub_id: str,
        metrics: HubMetrics,
        *,
        backoff: Backoff | None = None,
        goodbye: OutboundMessage | None = None,
    ) -> None:
        """``goodbye``: the link's last will and what :meth:`stop` publishes (the hub's offline
        presence, hub.hub_directory, issue 21)."""
        self.metrics = metrics
        self._listeners: list[Listener] = []
        self._subscribing: set[asyncio.Task[None]] = set()
        self._goodbye = goodbye
        self._connect_hooks: list[Callable[[], Awaitable[None]]] = []
        self.link = MqttLink(
            settings,
            client_id=f"naila-hub-{hub_id}",
            on_message=self._dispatch,
            # A fixed id per hub: the broker keeps its subscriptions and queues QoS 1 alerts and chat
            # replies while it reconnects or restarts (finding M1).
            persistent=True,
            backoff=backoff or Backoff(0.5, 30.0),
            will=goodbye,
            on_connect=self._connected,
        )
        metrics.mqtt_connected = self.link.connected.is_set

    @property
    def connected(self) -> bool:
        return self.link.connected.is_set()

    async def wait_connected(self, within_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                await self.link.connected.wait()
        return self.connected

    # -- listeners ------------------------------------------------------------------------
    def add_listener(self, topic_filter: str, handler: MessageHandler) -> Callable[[], None]:
        """Call ``handler(topic, payload)`` for every message matching ``topic_filter``; returns a remover.

        Raises ``ValueError`` for a malformed filter (e.g. ``a/#/b``), at registration rather than
        at the broker.
        """
        aiomqtt.Wildcard(topic_filter)  # validates
        listener = Listener(topic_filter, handler)
        self._listeners.append(listener)
        # The link subscribes to everything in this list on every (re)connect, including one in
        # progress. Registration is synchronous so that setup code (Hub.__init__, before any event
        # loop runs) can use it; only a link that is already up needs a subscribe round trip now.
        if topic_filter not in self.link.subscriptions:
            self.link.subscriptions.append(topic_filter)
        if self.link.connected.is_set():
            task = asyncio.get_running_loop().create_task(
                self._subscribe(topic_filter), name=f"mqtt-sub {topic_filter}"
            )
            self._subscribing.add(task)
            task.add_done_callback(self._subscribing.discard)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    async def _subscribe(self, topic_filter: str) -> None:
        try:
            await self.link.subscribe(topic_filter)
        except aiomqtt.MqttError as exc:  # the link went down meanwhile: it subscribes on reconnect
            log.info("MQTT subscribe to %s deferred to the next connect: %s", topic_filter, exc)

    async def _dispatch(self, topic: str, payload: bytes) -> None:
        matched = aiomqtt.Topic(topic)
        for listener in list(self._listeners):
            if not matched.matches(listener.topic_filter):
                continue
            try:
                await listener.handler(topic, payload)
            except asyncio.CancelledError:
                raise
            except Exception:  # one module's bug must not starve the others
                self.metrics.mqtt_listener_errors += 1
                log.exception("MQTT listener for %s failed on %s", listener.topic_filter, topic)

    def on_connect(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` after every (re)connect (e.g. republish retained state); errors are logged."""
        self._connect_hooks.append(hook)

    async def _connected(self, _link: MqttLink) -> None:
        for hook in list(self._connect_hooks):
            try:
                await hook()
            except aiomqtt.MqttError as exc:
                log.info("MQTT connect hook deferred to the next connect: %s", exc)
            except Exception:
                log.exception("MQTT connect hook failed")

    # -- publishing and lifecycle ---------------------------------------------------------
    async def publish(self, msg: OutboundMessage) -> None:
        """Publish with the message's QoS/retain; raises ``aiomqtt.MqttError`` while disconnected."""
        await self.link.publish(msg)

    async def start(self) -> None:
        """Start connecting in the background; returns at once, with or without a broker."""
        log.info("MQTT: connecting to %s as %s", self.link.address, self.link.client_id)
        await self.link.start()

    async def stop(self) -> None:
        pending = list(self._subscribing)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self.link.stop(goodbye=self._goodbye)
