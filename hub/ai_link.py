"""The hub's one long-lived gRPC stream to the AI server, shared by every device.

Uplink: every device hands AudioInput messages to :meth:`AiLink.send` on the event loop; it
never blocks. Messages go on ONE outbound queue that feeds the StreamConversation request
iterator (an event-loop iteration's messages as one batch: one thread wake-up), and each
device may have at most ``per_device_limit`` messages waiting in it, so a device that floods
(or a slow stream) costs only that device its frames. While the stream is down, uplink
messages are dropped and counted (nothing piles up), and :attr:`generation` tells callers a
new stream began, so a device that was mid-utterance drops the rest of it and starts cleanly
with its next START.

Downlink: every AudioOutput is handed to ``on_output`` on the event loop, which
demultiplexes by device_id.

Why a thread: the stream runs on gRPC's synchronous API in its own thread, not on grpc.aio
in the event loop. gRPC allows one outstanding write per call, and a grpc.aio write only
completes on a later event-loop iteration, so uplink throughput is one message per loop
iteration; with N aiortc sessions keeping the loop busy that collapsed (measured here at 80%
loop load: 1000 msg/s through a thread with p95 16 ms, vs grpc.aio p50 620 ms). The thread
only touches gRPC and thread-safe queues; every piece of hub state (connection flag,
per-device counts, metrics, routing) is changed on the event loop via call_soon_threadsafe.

Reconnects use :class:`hub.backoff.Backoff` (exponential, full jitter); a GetStatus
heartbeat detects a server that stopped answering without closing its connection, and its
answer's ``status`` ("ok" or "degraded": a fallback voice, a vision model that failed to load) is
kept as :attr:`AiLink.ai_status`, which the hub's plain /health follows. The WebRTC sessions are
unaffected by a lost AI stream.

Transport security (issue 18, C1): the channel is built by :class:`shared.grpc_security.ClientSecurity`
(mutual TLS with HUB_AI_TLS_*; plaintext only to a loopback AI server or with HUB_AI_INSECURE).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from hub.metrics import HubMetrics
from shared.aio import wait_event
from shared.backoff import Backoff
from shared.contract import pb, pb_grpc
from shared.grpc_security import ClientSecurity

log = logging.getLogger("naila.hub.ai_link")

# How long one connection attempt waits for the channel to become ready, s.
CONNECT_TIMEOUT_S = 1.0
# Liveness: a GetStatus every HEARTBEAT_PERIOD_S with a HEARTBEAT_TIMEOUT_S deadline; this many
# misses in a row and the stream is torn down and re-established. (gRPC keepalive pings would
# need matching settings on the AI server, or it answers frequent pings with GOAWAY
# "too_many_pings"; a GetStatus needs nothing there and measures the round trip too.)
# With several AI servers (hub/ai_pool.py) this is also the failover bound for a host that went
# silent, so the hub passes HUB_AI_HEARTBEAT_S / HUB_AI_HEARTBEAT_MISSES (defaults 1 s, 2).
HEARTBEAT_PERIOD_S = 5.0
HEARTBEAT_TIMEOUT_S = 5.0
HEARTBEAT_MISSES = 3


def detection_bound_s(period_s: float, timeout_s: float, misses: int) -> float:
    """Longest time from a server going silent until its stream is torn down: each of the
    ``misses`` beats in a row waits ``period_s`` after the previous one, then its ``timeout_s``
    deadline (a killed process is quicker: its connection resets and the stream ends at once)."""
    return misses * (period_s + timeout_s)


def channel_options(connect_timeout_s: float) -> list[tuple[str, int]]:
    """gRPC channel options of every hub channel to the AI server (this link, hub.vision's uplink)."""
    # One TCP attempt per connection attempt: our Backoff, not gRPC's, sets the pace.
    ms = int(connect_timeout_s * 1000)
    return [
        ("grpc.initial_reconnect_backoff_ms", ms),
        ("grpc.min_reconnect_backoff_ms", ms),
        ("grpc.max_reconnect_backoff_ms", ms),
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ]


@dataclass
class Outbound:
    """One queued uplink message and what the link needs to account for it."""

    msg: pb.AudioInput
    frames: int  # 20 ms frames of audio it carries (for frames_forwarded / drop counts)
    captured_at: float | None  # hub monotonic time the newest audio in it arrived (latency)
    on_sent: Callable[[float], None] | None = None  # called (on the loop) with the time it was written


@dataclass(frozen=True)
class _Queued:
    generation: int  # the stream the event loop believed was up when it queued this
    item: Outbound


@dataclass(frozen=True)
class _StreamEnded:
    generation: int  # releases that stream's request iterator if it is blocked on the queue


class AiLink:
    """Owns the gRPC thread, the reconnect loop, the outbound queue and the reply reader."""

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
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        heartbeat_period_s: float | None = None,
        heartbeat_timeout_s: float | None = None,
        heartbeat_misses: int | None = None,
        security: ClientSecurity | None = None,
        wait: Callable[[threading.Event, float], bool] | None = None,
    ) -> None:
        self.target = target
        # How the heartbeat thread waits between beats (a controllable clock in tests).
        self._wait = wait or (lambda event, s: event.wait(s))
        # None: plaintext (a loopback AI server in tests); the hub passes shared.grpc_security.hub_client().
        self._security = security or ClientSecurity(target)
        self.ai_status = ""  # GetStatus' status at the last heartbeat; "" = not known yet
        self.metrics = metrics
        self._on_output = on_output
        self._on_change = on_connection_change
        self._backoff = backoff
        self._limit = per_device_limit
        self._clock = clock
        self._connect_timeout_s = connect_timeout_s
        self._hb_period = HEARTBEAT_PERIOD_S if heartbeat_period_s is None else heartbeat_period_s
        self._hb_timeout = HEARTBEAT_TIMEOUT_S if heartbeat_timeout_s is None else heartbeat_timeout_s
        self._hb_misses = HEARTBEAT_MISSES if heartbeat_misses is None else heartbeat_misses
        # Shared with the gRPC thread: a thread-safe queue and a stop flag.
        self._tx: queue.SimpleQueue[list[_Queued] | _StreamEnded] = queue.SimpleQueue()
        # Messages sent during this loop iteration, handed to the gRPC thread as one batch at its end:
        # one queue put (one thread wake-up) per iteration instead of one per message.
        self._batch: list[_Queued] = []
        self._stopping = threading.Event()
        self._call_lock = threading.Lock()
        self._call: Any = None  # the current call (to cancel it from stop())
        self._thread: threading.Thread | None = None
        self._thread_generation = 0  # gRPC thread only
        # Written messages waiting for the loop to account for them: the gRPC thread appends, and
        # wakes the loop only when the list was empty, so a busy loop takes many per wake-up.
        self._written: list[tuple[int, Outbound, float]] = []
        self._written_lock = threading.Lock()
        # Event-loop state.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: Counter[str] = Counter()
        self._connected = False
        self._ever_connected = False
        self._generation = 0
        self._connected_event = asyncio.Event()

    # ----- state (event loop) -----

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
        await wait_event(self._connected_event, within_s)  # shared.aio: not wait_for (3.11 cancel bug)
        return self._connected

    # ----- uplink (event loop) -----

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
        if not self._batch:
            (self._loop or asyncio.get_running_loop()).call_soon(self._hand_over)
        self._batch.append(_Queued(self._generation, item))
        return True

    def _hand_over(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            self._tx.put(batch)

    def _drop(self, item: Outbound, reason: str) -> None:
        self.metrics.frames_dropped[reason] += max(1, item.frames)

    def _settle(self, generation: int, item: Outbound) -> None:
        if generation == self._generation and self._pending[item.msg.device_id] > 0:
            self._pending[item.msg.device_id] -= 1
            if not self._pending[item.msg.device_id]:
                del self._pending[item.msg.device_id]

    def _sent(self, generation: int, item: Outbound, at: float) -> None:
        self._settle(generation, item)
        if item.captured_at is not None:
            self.metrics.uplink_latency.observe(max(0.0, at - item.captured_at))
        self.metrics.frames_forwarded += item.frames
        if item.on_sent is not None:
            item.on_sent(at)

    def _not_sent(self, generation: int, item: Outbound) -> None:
        self._settle(generation, item)
        self._drop(item, "ai_disconnected")

    def _apply_connected(self, up: bool, generation: int) -> None:
        if up:
            self._generation = generation
            if self._ever_connected:
                self.metrics.grpc_reconnects += 1
            self._ever_connected = True
            self._connected = True
            self._connected_event.set()
        else:
            if generation != self._generation or not self._connected:
                return
            self._connected = False
            self.ai_status = ""
            self._connected_event.clear()
            self._pending.clear()  # what is still queued is dropped (and counted) by the thread
        if self._on_change is not None:
            try:
                self._on_change(up)
            except Exception:
                log.exception("connection-change callback failed")

    # ----- lifecycle (event loop) -----

    def start(self) -> None:
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="hub-ai-link", daemon=True)
            self._thread.start()

    async def stop(self) -> None:
        self._stopping.set()
        with self._call_lock:
            if self._call is not None:
                self._call.cancel()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
            self._thread = None
        self._apply_connected(False, self._generation)

    # ----- the gRPC thread -----

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the event loop (the only place hub state changes)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
            loop.call_soon_threadsafe(fn, *args)

    def _count(self, attr: str) -> None:
        self._post(lambda: setattr(self.metrics, attr, getattr(self.metrics, attr) + 1))

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._attempt()
            except Exception:
                log.exception("AI link attempt failed")
            if self._stopping.is_set():
                break
            delay = self._backoff.next_delay()
            log.info("reconnecting to AI server %s in %.2fs", self.target, delay)
            self._stopping.wait(delay)

    def _channel_options(self) -> list[tuple[str, int]]:
        return channel_options(self._connect_timeout_s)

    def _requests(self, generation: int) -> Iterator[pb.AudioInput]:
        """The request iterator of one call; gRPC pulls it from its own thread.

        gRPC asks for the next message only once the previous one was written, so resuming
        after a ``yield`` is the moment that message was sent.
        """
        while True:
            entry = self._tx.get()
            if isinstance(entry, _StreamEnded):
                if entry.generation == generation:
                    return
                continue  # a marker for an older stream whose iterator had already gone
            done = 0
            try:
                for queued in entry:
                    if queued.generation != generation:
                        # Queued for a stream that is gone: the AI server never saw its START.
                        self._post(self._not_sent, queued.generation, queued.item)
                    else:
                        yield queued.item.msg
                        self._wrote(generation, queued.item, self._clock())
                    done += 1
            finally:
                for queued in entry[done:]:  # the stream ended mid-batch: the rest was not sent
                    self._post(self._not_sent, queued.generation, queued.item)

    def _wrote(self, generation: int, item: Outbound, at: float) -> None:
        """(gRPC thread) ``item`` was written at ``at``: have the loop account for it.

        One ``call_soon_threadsafe`` per written frame woke the loop (a self-pipe write and a
        callback) ~50 times a second per speaking device; batching what was written while the
        loop had not got round to it keeps the order and the write times, with fewer wake-ups.
        """
        with self._written_lock:
            self._written.append((generation, item, at))
            if len(self._written) > 1:
                return  # a drain is already on its way to the loop
        self._post(self._account_written)

    def _account_written(self) -> None:
        with self._written_lock:
            written, self._written = self._written, []
        for generation, item, at in written:
            self._sent(generation, item, at)

    def _attempt(self) -> None:
        channel = self._security.channel(self._channel_options())
        call: Any = None
        generation = 0
        beat_done = threading.Event()
        try:
            try:
                grpc.channel_ready_future(channel).result(timeout=self._connect_timeout_s)
            except grpc.FutureTimeoutError:
                self._count("grpc_connect_failures")
                log.warning("AI server %s unreachable", self.target)
                return
            if self._stopping.is_set():
                return
            self._thread_generation += 1
            generation = self._thread_generation
            stub = pb_grpc.NailaAIStub(channel)
            call = stub.StreamConversation(self._requests(generation))
            with self._call_lock:
                self._call = call
            self._backoff.connected()
            self._post(self._apply_connected, True, generation)
            log.info("AI stream open to %s (stream #%d)", self.target, generation)
            threading.Thread(
                target=self._heartbeat, args=(stub, call, beat_done), name="hub-ai-heartbeat", daemon=True
            ).start()
            for out in call:
                self._post(self._route, out)
            log.warning("AI server %s ended the stream", self.target)
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else None
            if not self._stopping.is_set():
                log.warning("AI stream to %s lost: %s %s", self.target, getattr(code, "name", code),
                            err.details() if isinstance(err, grpc.Call) else err)
        finally:
            beat_done.set()
            with self._call_lock:
                self._call = None
            if call is not None:
                call.cancel()
            if generation:
                self._tx.put(_StreamEnded(generation))
                self._backoff.disconnected()
                self._post(self._apply_connected, False, generation)
            channel.close()

    def _set_ai_status(self, status: str) -> None:
        if status != self.ai_status and self.ai_status:
            log.log(logging.WARNING if status != "ok" else logging.INFO, "AI server status: %s", status)
        self.ai_status = status

    def _route(self, out: pb.AudioOutput) -> None:
        try:
            self._on_output(out)
        except Exception:
            log.exception("routing an AudioOutput failed")

    def _heartbeat(self, stub: pb_grpc.NailaAIStub, call: Any, done: threading.Event) -> None:
        """Cancel ``call`` when the AI server stops answering (a host gone without a TCP reset)."""
        misses = 0
        while not self._wait(done, self._hb_period):
            t = self._clock()
            try:
                status = stub.GetStatus(pb.StatusRequest(), timeout=self._hb_timeout)
            except grpc.RpcError as err:
                code = err.code() if isinstance(err, grpc.Call) else None
                if code not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                    misses = 0  # it answered (e.g. UNIMPLEMENTED): alive
                    continue
                misses += 1
                log.warning("AI server %s missed heartbeat %d/%d", self.target, misses, self._hb_misses)
                if misses >= self._hb_misses:
                    self._count("grpc_heartbeat_failures")
                    call.cancel()
                    return
                continue
            misses = 0
            rtt = self._clock() - t
            self._post(self.metrics.grpc_status_rtt.observe, rtt)
            self._post(self._set_ai_status, status.status)
