"""The hub's one long-lived gRPC stream to the AI server, shared by every device.

Uplink: every device hands AudioInput messages to :meth:`AiLink.send`, which never blocks:
messages go on ONE asyncio queue that feeds the StreamConversation request stream, and
each device may have at most ``per_device_limit`` messages waiting in it, so a device that
floods (or a slow stream) costs only that device its frames. While the stream is down,
uplink messages are dropped and counted (nothing piles up), and :attr:`generation` tells
callers a new stream began, so a device that was mid-utterance drops the rest of it and
starts cleanly with its next START.

Downlink: every AudioOutput is handed to ``on_output``, which demultiplexes by device_id.

Reconnects use :class:`hub.backoff.Backoff` (exponential, full jitter). The WebRTC sessions
are unaffected by a lost AI stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import grpc
import grpc.aio

from hub.backoff import Backoff
from hub.metrics import HubMetrics
from shared.contract import pb, pb_grpc

log = logging.getLogger("naila.hub.ai_link")

# How long one connection attempt waits for the channel to become ready, s.
CONNECT_TIMEOUT_S = 1.0
# Liveness: a GetStatus every HEARTBEAT_PERIOD_S with a HEARTBEAT_TIMEOUT_S deadline; this many
# misses in a row and the stream is torn down and re-established. (gRPC keepalive pings would
# need matching settings on the AI server, or it answers frequent pings with GOAWAY
# "too_many_pings"; a GetStatus needs nothing there and measures the round trip too.)
HEARTBEAT_PERIOD_S = 5.0
HEARTBEAT_TIMEOUT_S = 5.0
HEARTBEAT_MISSES = 3


@dataclass
class Outbound:
    """One queued uplink message and what the link needs to account for it."""

    msg: pb.AudioInput
    frames: int  # 20 ms frames of audio it carries (for frames_forwarded / drop counts)
    captured_at: float | None  # hub monotonic time the newest audio in it arrived (latency)
    on_sent: Callable[[float], None] | None = None  # called with the time it was written


class AiLink:
    """Owns the channel, the reconnect loop, the outbound queue and the reply reader."""

    def __init__(
        self,
        target: str,
        metrics: HubMetrics,
        *,
        on_output: Callable[[pb.AudioOutput], None],
        on_connection_change: Callable[[bool], None] | None = None,
        backoff: Backoff,
        per_device_limit: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        heartbeat_period_s: float | None = None,
        heartbeat_timeout_s: float | None = None,
        heartbeat_misses: int | None = None,
    ) -> None:
        self.target = target
        self.metrics = metrics
        self._on_output = on_output
        self._on_change = on_connection_change
        self._backoff = backoff
        self._limit = per_device_limit
        self._clock = clock
        self._sleep = sleep
        self._connect_timeout_s = connect_timeout_s
        self._hb_period = HEARTBEAT_PERIOD_S if heartbeat_period_s is None else heartbeat_period_s
        self._hb_timeout = HEARTBEAT_TIMEOUT_S if heartbeat_timeout_s is None else heartbeat_timeout_s
        self._hb_misses = HEARTBEAT_MISSES if heartbeat_misses is None else heartbeat_misses
        self._queue: asyncio.Queue[Outbound] = asyncio.Queue()
        self._pending: Counter[str] = Counter()
        self._connected = False
        self._ever_connected = False
        self._generation = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._connected_event = asyncio.Event()

    # ----- state -----

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def generation(self) -> int:
        """Incremented each time a new stream is established."""
        return self._generation

    def pending(self, device_id: str) -> int:
        return self._pending[device_id]

    async def wait_connected(self, within_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected_event.wait(), within_s)
        return self._connected

    # ----- uplink -----

    def send(self, item: Outbound) -> bool:
        """Queue a message for the AI server without blocking. False if it was dropped."""
        device = item.msg.device_id
        if not self._connected:
            self._drop(item, "ai_disconnected")
            return False
        if self._pending[device] >= self._limit:
            self._drop(item, "device_queue_full")
            return False
        self._pending[device] += 1
        self._queue.put_nowait(item)
        return True

    def _drop(self, item: Outbound, reason: str) -> None:
        self.metrics.frames_dropped[reason] += max(1, item.frames)

    async def _write_loop(self, call: grpc.aio.StreamStreamCall) -> None:
        """Feed the one outbound queue into one call. Cancelled when that call ends.

        An explicit writer task (not a request iterator) so the hub, not gRPC, decides when
        a dead call stops taking messages: grpc.aio leaves a request-iterator consumer
        waiting on the queue after the server drops the call, and it would swallow the
        next stream's first message.
        """
        while True:
            item = await self._queue.get()
            device = item.msg.device_id
            self._pending[device] -= 1
            if self._pending[device] <= 0:
                del self._pending[device]
            try:
                await call.write(item.msg)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                self._drop(item, "ai_disconnected")
                return
            now = self._clock()
            if item.captured_at is not None:
                self.metrics.uplink_latency.observe(max(0.0, now - item.captured_at))
            self.metrics.frames_forwarded += item.frames
            if item.on_sent is not None:
                item.on_sent(now)

    async def _heartbeat(self, stub: pb_grpc.NailaAIAsyncStub, call: grpc.aio.StreamStreamCall) -> None:
        """Cancel ``call`` when the AI server stops answering (a host gone without a TCP reset)."""
        misses = 0
        while True:
            await self._sleep(self._hb_period)
            t = self._clock()
            try:
                await stub.GetStatus(pb.StatusRequest(), timeout=self._hb_timeout)
            except grpc.aio.AioRpcError as err:
                if err.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                    misses = 0  # it answered (e.g. UNIMPLEMENTED): alive
                    continue
                misses += 1
                log.warning("AI server %s missed heartbeat %d/%d (%s)", self.target, misses, self._hb_misses,
                            err.code().name)
                if misses >= self._hb_misses:
                    self.metrics.grpc_heartbeat_failures += 1
                    call.cancel()
                    return
                continue
            misses = 0
            self.metrics.grpc_status_rtt.observe(self._clock() - t)

    def _flush_queue(self) -> None:
        while not self._queue.empty():
            self._drop(self._queue.get_nowait(), "ai_disconnected")
        self._pending.clear()

    # ----- lifecycle -----

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="hub-ai-link")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._set_connected(False)

    def _set_connected(self, up: bool) -> None:
        if up == self._connected:
            return
        self._connected = up
        if up:
            self._connected_event.set()
        else:
            self._connected_event.clear()
            self._flush_queue()
        if self._on_change is not None:
            try:
                self._on_change(up)
            except Exception:
                log.exception("connection-change callback failed")

    async def _run(self) -> None:
        while not self._stopping:
            await self._attempt()
            if self._stopping:
                break
            delay = self._backoff.next_delay()
            log.info("reconnecting to AI server %s in %.2fs", self.target, delay)
            await self._sleep(delay)

    def _channel_options(self) -> list[tuple[str, int]]:
        # One TCP attempt per connection attempt: our Backoff, not gRPC's, sets the pace.
        ms = int(self._connect_timeout_s * 1000)
        return [
            ("grpc.initial_reconnect_backoff_ms", ms),
            ("grpc.min_reconnect_backoff_ms", ms),
            ("grpc.max_reconnect_backoff_ms", ms),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
        ]

    async def _attempt(self) -> None:
        channel = grpc.aio.insecure_channel(self.target, options=self._channel_options())
        call: grpc.aio.StreamStreamCall | None = None
        writer: asyncio.Task[None] | None = None
        heartbeat: asyncio.Task[None] | None = None
        try:
            try:
                await asyncio.wait_for(channel.channel_ready(), self._connect_timeout_s)
            except TimeoutError:
                self.metrics.grpc_connect_failures += 1
                log.warning("AI server %s unreachable", self.target)
                return
            stub = cast("pb_grpc.NailaAIAsyncStub", pb_grpc.NailaAIStub(channel))
            call = stub.StreamConversation()
            writer = asyncio.create_task(self._write_loop(call), name="hub-ai-writer")
            heartbeat = asyncio.create_task(self._heartbeat(stub, call), name="hub-ai-heartbeat")
            self._generation += 1
            if self._ever_connected:
                self.metrics.grpc_reconnects += 1
            self._ever_connected = True
            self._backoff.connected()
            self._set_connected(True)
            log.info("AI stream open to %s (stream #%d)", self.target, self._generation)
            async for out in call:
                try:
                    self._on_output(out)
                except Exception:
                    log.exception("routing an AudioOutput failed")
            log.warning("AI server %s ended the stream", self.target)
        except grpc.aio.AioRpcError as err:
            log.warning("AI stream to %s lost: %s %s", self.target, err.code().name, err.details())
        except asyncio.CancelledError:
            if self._stopping:
                raise
            log.warning("AI stream to %s cancelled (no heartbeat)", self.target)
        except Exception:
            log.exception("AI stream to %s failed", self.target)
        finally:
            for task in (writer, heartbeat):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            if call is not None:
                call.cancel()
            if self._connected:
                self._backoff.disconnected()
            self._set_connected(False)
            with contextlib.suppress(Exception):
                await asyncio.shield(channel.close())
