"""One reconnecting MQTT client for every deployable (aiomqtt): connect, subscribe, serve, redial.

Why one home: the device, the hub and the AI server all need the same things from the broker
connection — credentials and TLS from :class:`MqttSettings`, a last will, re-subscribing and
republishing their retained status after every reconnect, exponential backoff with jitter
(:class:`shared.backoff.Backoff`), and a receive loop that a bad message or a failing handler
can never stop. Each deployable only supplies its subscriptions and two callbacks.

Handlers run one message at a time, in arrival order, so per-topic order is kept; a handler
with slow work (an LLM call, a WebRTC negotiation, a base64 decode) must spawn a task.

Delivery (finding M1): paho acknowledges a QoS 1 message (PUBACK) as soon as it is read, before
any handler saw it, and aiomqtt's own bounded queue then *discards* what does not fit, silently.
So aiomqtt's queue is left unbounded and a reader moves every message at once into the link's
inbox, which is bounded by **bytes** (``max_queued_bytes``; a 67 MB upload and a 200-byte status
are not the same load): what does not fit is refused there, counted (``stats.overflowed``),
logged, and handed to ``on_overflow`` so the caller can tell the sender. The inbox outlives a
reconnect, so nothing acknowledged is dropped by a broker blip.

``persistent=True`` asks the broker for a persistent session (MQTT 3.1.1 ``clean_session=0``)
under the caller's fixed ``client_id``: QoS 1 messages on its subscriptions published while it
is away are queued by the broker (``max_queued_messages``/``max_queued_bytes``) and delivered when
it returns. Devices keep clean sessions: they only receive short-lived commands.

This module imports aiomqtt, so it lives beside ``shared.mqtt`` (which needs only pydantic),
not inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiomqtt

from shared.backoff import Backoff
from shared.config import MqttSettings
from shared.mqtt import OutboundMessage, policy_for
from shared.rate_limit import RateLimiter

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], Awaitable[None]]
ConnectHook = Callable[["MqttLink"], Awaitable[None]]
OverflowHook = Callable[[str, bytes], None]

#: Default inbox size: plenty for statuses, commands and signaling; a deployable that receives
#: media (the AI server) sizes it from its upload limit.
DEFAULT_QUEUED_BYTES = 16 * 1024 * 1024


@dataclass
class LinkStats:
    """Counters a deployable exports as metrics."""

    connects: int = 0
    disconnects: int = 0
    received: int = 0
    handler_errors: int = 0
    published: int = 0
    overflowed: int = 0  # refused because the inbox was full (bytes)
    errors_by_kind: dict[str, int] = field(default_factory=dict)


def tls_parameters(settings: MqttSettings) -> aiomqtt.TLSParameters | None:
    """TLS options from config; ``None`` means plain TCP.

    The broker's certificate is always verified against ``mqtt_ca_file`` (or the system CAs);
    ``mqtt_tls_insecure`` only drops the host name check (see :meth:`MqttLink._client_for`).
    """
    if not settings.mqtt_tls:
        return None
    return aiomqtt.TLSParameters(
        ca_certs=settings.mqtt_ca_file,
        certfile=settings.mqtt_cert_file,
        keyfile=settings.mqtt_key_file,
        cert_reqs=ssl.CERT_REQUIRED,
    )


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it has ended. aiomqtt awaits replies with ``asyncio.wait_for``, which
    on Python 3.11 can swallow a cancellation that races the reply (a PUBACK in a connect hook): the task
    then goes on waiting for messages, and a plain ``await task`` would wait forever. So it is cancelled
    again until it ends."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled():
        with contextlib.suppress(Exception):
            task.result()  # retrieved: its failure was logged where it happened


class MqttLink:
    """A broker connection that stays up until :meth:`stop`; see the module doc."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        client_id: str,
        subscriptions: Sequence[str] = (),
        on_message: MessageHandler | None = None,
        on_connect: ConnectHook | None = None,
        will: OutboundMessage | None = None,
        backoff: Backoff | None = None,
        max_queued_bytes: int = DEFAULT_QUEUED_BYTES,
        persistent: bool = False,
        on_overflow: OverflowHook | None = None,
    ) -> None:
        self.settings = settings
        self.client_id = client_id
        self.subscriptions = list(subscriptions)
        self._on_message = on_message
        self._on_connect = on_connect
        self.will = will
        self.backoff = backoff or Backoff(0.5, 30.0)
        if max_queued_bytes < 1:
            raise ValueError("max_queued_bytes must be positive")
        self.max_queued_bytes = max_queued_bytes
        self.persistent = persistent
        self._on_overflow = on_overflow
        self.stats = LinkStats()
        self.connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.queued_bytes = 0
        self._handler_task: asyncio.Task[None] | None = None
        self._overflow_logs = RateLimiter(0.1, 3)  # a flood is counted, logged a few lines

    @property
    def address(self) -> str:
        return f"{self.settings.mqtt_host}:{self.settings.mqtt_port}"

    # -- publishing -----------------------------------------------------------------------
    async def publish(self, msg: OutboundMessage) -> None:
        """Publish with the message's own QoS/retain; raises ``aiomqtt.MqttError`` when offline."""
        client = self._client
        if client is None or not self.connected.is_set():
            raise aiomqtt.MqttError(f"not connected to the MQTT broker at {self.address}")
        await client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
        self.stats.published += 1

    async def publish_raw(self, topic: str, payload: bytes, *, qos: int | None = None, retain: bool = False) -> None:
        """Publish bytes that are not one of our models (error replies on a client's own topic)."""
        client = self._client
        if client is None or not self.connected.is_set():
            raise aiomqtt.MqttError(f"not connected to the MQTT broker at {self.address}")
        await client.publish(topic, payload, qos=policy_for(topic).qos if qos is None else qos, retain=retain)
        self.stats.published += 1

    async def subscribe(self, topic_filter: str) -> None:
        """Add a subscription now (if connected) and after every reconnect."""
        if topic_filter not in self.subscriptions:
            self.subscriptions.append(topic_filter)
        client = self._client
        if client is not None and self.connected.is_set():
            await client.subscribe(topic_filter, qos=1)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("MQTT link already started")
        self._handler_task = asyncio.create_task(self._handle_inbox(), name=f"mqtt-{self.client_id}-inbox")
        self._task = asyncio.create_task(self._run(), name=f"mqtt-{self.client_id}")

    async def stop(self, goodbye: OutboundMessage | None = None) -> None:
        """Publish ``goodbye`` (e.g. a retained offline status) if connected, then disconnect cleanly.

        A clean disconnect suppresses the broker's last will, so the goodbye is what others see.
        """
        if goodbye is not None and self.connected.is_set():
            try:
                async with asyncio.timeout(2.0):
                    await self.publish(goodbye)
            except (aiomqtt.MqttError, TimeoutError) as exc:
                log.warning("MQTT %s: could not publish the goodbye on %s: %s", self.client_id, goodbye.topic, exc)
        for task in (self._task, self._handler_task):
            if task is not None:
                await _cancel(task)
        self._task = self._handler_task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._session()
            except aiomqtt.MqttError as exc:
                log.warning("MQTT %s at %s: %s", self.client_id, self.address, exc)
            except Exception:
                log.exception("MQTT %s: session crashed", self.client_id)
            finally:
                if self.connected.is_set():
                    self.stats.disconnects += 1
                    self.backoff.disconnected()
                self._client = None
                self.connected.clear()
            delay = self.backoff.next_delay()
            log.info("MQTT %s: reconnecting in %.2f s", self.client_id, delay)
            await asyncio.sleep(delay)

    def _client_for(self) -> aiomqtt.Client:
        s = self.settings
        w = self.will
        return aiomqtt.Client(
            s.mqtt_host,
            s.mqtt_port,
            username=s.mqtt_username,
            password=s.mqtt_password.get_secret_value() if s.mqtt_password else None,
            identifier=self.client_id,
            # None: paho's default for MQTT 3.1.1, a clean session.
            clean_session=False if self.persistent else None,
            keepalive=s.mqtt_keepalive_s,
            will=aiomqtt.Will(w.topic, w.payload, w.qos, w.retain) if w is not None else None,
            tls_params=tls_parameters(s),
            # Only meaningful with TLS; None leaves paho's default (host name checked).
            tls_insecure=True if s.mqtt_tls and s.mqtt_tls_insecure else None,
            timeout=10,
            # Unbounded: aiomqtt would discard already-acknowledged messages beyond its limit. The
            # reader below empties it at once into the byte-bounded inbox.
            max_queued_incoming_messages=None,
            # A request/response pattern (QoS 1: PUBLISH, PUBACK, reply) otherwise meets Nagle's
            # algorithm against the peer's delayed ACK: ~40 ms on every hop. Measured in
            # bench/mqtt_control.py: command round trip 88 ms -> see README.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    async def _session(self) -> None:
        async with self._client_for() as client:
            self._client = client
            for topic_filter in self.subscriptions:
                await client.subscribe(topic_filter, qos=1)
            self.connected.set()
            self.stats.connects += 1
            self.backoff.connected()
            log.info(
                "MQTT %s: connected to %s, %d subscriptions", self.client_id, self.address, len(self.subscriptions)
            )
            if self._on_connect is not None:
                await self._on_connect(self)
            async for message in client.messages:
                self.stats.received += 1
                payload = message.payload
                data = payload if isinstance(payload, bytes) else str(payload).encode() if payload is not None else b""
                self._enqueue(message.topic.value, data)

    def _enqueue(self, topic: str, payload: bytes) -> None:
        size = len(payload)
        # An empty inbox takes any one message (the broker's max_packet_size bounds it), so a
        # budget set below the largest payload cannot refuse that payload forever.
        if self.queued_bytes and self.queued_bytes + size > self.max_queued_bytes:
            self.stats.overflowed += 1
            if self._overflow_logs.allow("overflow"):
                log.warning(
                    "MQTT %s: inbox full (%d bytes waiting, limit %d): refused %d bytes on %.200s (%d so far)",
                    self.client_id, self.queued_bytes, self.max_queued_bytes, size, topic, self.stats.overflowed,
                )
            if self._on_overflow is not None:
                try:
                    self._on_overflow(topic, payload)
                except Exception:
                    log.exception("MQTT %s: overflow hook failed on %s", self.client_id, topic)
            return
        self.queued_bytes += size
        self._inbox.put_nowait((topic, payload))

    async def _handle_inbox(self) -> None:
        while True:
            topic, payload = await self._inbox.get()
            try:
                await self._dispatch(topic, payload)
            finally:
                self.queued_bytes -= len(payload)

    async def _dispatch(self, topic: str, payload: bytes) -> None:
        if self._on_message is None:
            return
        try:
            await self._on_message(topic, payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a handler bug must not take the connection down for everyone
            self.stats.handler_errors += 1
            kind = type(exc).__name__
            self.stats.errors_by_kind[kind] = self.stats.errors_by_kind.get(kind, 0) + 1
            log.exception("MQTT %s: handler failed on %s", self.client_id, topic)
