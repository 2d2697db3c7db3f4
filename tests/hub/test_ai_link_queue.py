"""The uplink queue's accounting: per-device bounds, drops while disconnected (no network)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from hub.ai_link import AiLink, Outbound, _StreamEnded
from hub.metrics import HubMetrics
from shared.backoff import Backoff
from shared.contract import pb

pytestmark = pytest.mark.unit


def item(device: str, frames: int = 1) -> Outbound:
    return Outbound(pb.AudioInput(device_id=device, event=pb.CONTINUE, audio_pcm=b"\0" * 640),
                    frames=frames, captured_at=0.0)


def make() -> tuple[AiLink, HubMetrics]:
    m = HubMetrics()
    link = AiLink("127.0.0.1:1", m, on_output=lambda out: None, backoff=Backoff(0.1, 1.0), per_device_limit=10)
    return link, m


async def test_everything_is_dropped_and_counted_while_disconnected() -> None:
    link, m = make()
    assert not link.send(item("a"))
    assert not link.send(item("a", frames=13))
    assert m.frames_dropped["ai_disconnected"] == 14 and link.pending("a") == 0


async def test_one_flooding_device_cannot_crowd_out_another() -> None:
    link, m = make()
    link._apply_connected(True, 1)  # as if stream #1 were up and stalled (nothing drains the queue)
    accepted = sum(link.send(item("noisy")) for _ in range(25))
    assert accepted == 10 and m.frames_dropped["device_queue_full"] == 15
    assert all(link.send(item("quiet")) for _ in range(10))
    # A message written frees its slot.
    link._sent(1, item("noisy"), 1.0)
    assert link.pending("noisy") == 9 and m.frames_forwarded == 1
    assert link.send(item("noisy"))
    # Losing the stream resets the per-device bounds; what was queued for it is dropped (and
    # counted) when the next stream's iterator meets it, never sent on the new stream.
    link._apply_connected(False, 1)
    assert link.pending("noisy") == 0 and link.pending("quiet") == 0
    assert not link.send(item("quiet"))


async def test_stale_messages_are_dropped_by_the_next_streams_iterator() -> None:
    link, m = make()
    link._loop = asyncio.get_running_loop()
    link._apply_connected(True, 1)
    link.send(item("a"))
    link._apply_connected(False, 1)
    link._apply_connected(True, 2)
    link.send(item("a", frames=13))
    await asyncio.sleep(0)  # both go to the gRPC thread as one batch at the end of the loop iteration
    link._tx.put(_StreamEnded(1))  # a marker for a stream whose iterator is gone: skipped
    link._tx.put(_StreamEnded(2))
    sent = list(link._requests(2))
    assert [len(msg.audio_pcm) for msg in sent] == [640]  # only the message queued for stream 2
    await asyncio.sleep(0)
    assert m.frames_dropped["ai_disconnected"] == 1 and m.frames_forwarded == 13


async def test_reply_for_an_unknown_device_is_counted_and_ignored() -> None:
    from hub.server import Hub
    from shared.config import HubSettings, load

    hub = Hub(load(HubSettings))
    hub.route_output(pb.AudioOutput(device_id="nobody", audio_pcm=b"\0\0" * 100, sample_rate=22050))
    hub.route_output(pb.AudioOutput(device_id="nobody", is_final=True))
    assert hub.metrics.unknown_device_outputs == 2 and hub.metrics.tts_frames_routed == 0
    assert b"naila_hub_unknown_device_outputs_total 2.0" in hub.metrics.exposition()


async def test_written_messages_are_accounted_in_order_with_one_loop_wakeup_per_batch() -> None:
    """The gRPC thread's "written" reports reach the loop batched (issue 21): one callback for
    what was written while the loop was busy, in write order, with each message's own write time."""
    link, m = make()
    loop = asyncio.get_running_loop()
    link._loop = loop
    link._apply_connected(True, 1)
    sent_at: list[float] = []
    items = [Outbound(pb.AudioInput(device_id="a", event=pb.CONTINUE), frames=1, captured_at=0.0,
                      on_sent=sent_at.append) for _ in range(3)]
    for it in items:
        assert link.send(it)
    posts: list[object] = []
    real_post = link._post

    def counting_post(fn: Callable[..., None], *args: Any) -> None:
        posts.append(fn)
        real_post(fn, *args)

    def grpc_writes() -> None:
        for i, it in enumerate(items):
            link._wrote(1, it, 10.0 + i)

    link._post = counting_post  # type: ignore[method-assign]
    grpc_thread = threading.Thread(target=grpc_writes)
    grpc_thread.start()
    grpc_thread.join()  # blocks the loop: the gRPC thread writes three while the loop is busy
    assert len(posts) == 1 and m.frames_forwarded == 0  # one wake-up queued, nothing accounted yet
    await asyncio.sleep(0)
    assert sent_at == [10.0, 11.0, 12.0] and m.frames_forwarded == 3 and link.pending("a") == 0
    link._wrote(1, items[0], 13.0)  # the next write wakes the loop again
    await asyncio.sleep(0)
    assert len(posts) == 2 and sent_at[-1] == 13.0


async def test_a_loop_iterations_messages_go_to_the_grpc_thread_as_one_batch_in_order() -> None:
    """One queue put (one thread wake-up) per loop iteration (issue 21); a stream that ends mid-batch
    has the rest of the batch counted as not sent."""
    link, m = make()
    link._loop = asyncio.get_running_loop()
    link._apply_connected(True, 1)
    for i in range(3):
        link.send(Outbound(pb.AudioInput(device_id="a", sequence_num=i), frames=1, captured_at=0.0))
    assert link._tx.empty()  # nothing handed over mid-iteration
    await asyncio.sleep(0)
    assert link._tx.qsize() == 1
    requests = link._requests(1)
    assert next(requests).sequence_num == 0 and next(requests).sequence_num == 1
    requests.close()  # the call ended with message 1 pulled but not confirmed written, 2 never pulled
    await asyncio.sleep(0)
    assert m.frames_forwarded == 1 and m.frames_dropped["ai_disconnected"] == 2 and link.pending("a") == 0
