"""H6 slowloris on a real socket: a client that trickles its headers or its body one byte at a time
is cut off at HUB_REQUEST_TIMEOUT_S (headers: connection closed; body: 408), counted, and a real
device still connects meanwhile. Real time is what is under test here, so the deadline is short.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.hub.conftest import connect_device

from .test_hub_connect_auth import Maker, make_hub

pytestmark = pytest.mark.integration
__all__ = ["make_hub"]

DEADLINE_S = 0.6


async def trickle(port: int, data: bytes, every_s: float = 0.05) -> tuple[bytes, float]:
    """Send ``data`` one byte at a time; returns what the hub answered and when it hung up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.monotonic()
    try:
        for i in range(len(data)):
            if reader.at_eof():
                break
            writer.write(data[i : i + 1])
            try:
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.sleep(every_s)
        answer = await asyncio.wait_for(reader.read(), 5)
    except ConnectionError:
        answer = b""
    finally:
        writer.close()
    return answer, time.monotonic() - t0


async def test_headers_sent_one_byte_at_a_time_are_cut_off(make_hub: Maker) -> None:
    hub = await make_hub(hub_request_timeout_s=DEADLINE_S, hub_allow_unauthenticated=True)
    request = b"POST /connect HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Pad: " + b"a" * 200 + b"\r\n\r\n"
    slow = [asyncio.create_task(trickle(hub.port, request)) for _ in range(5)]
    # Meanwhile a real device connects as usual.
    dev = await connect_device(hub.url, "legit")
    results = await asyncio.gather(*slow)
    await dev.close()
    for answer, hung_up_after in results:
        assert answer == b"" and DEADLINE_S <= hung_up_after < DEADLINE_S + 2.0
    assert hub.metrics.header_timeouts == 5
    assert hub.metrics.sessions_opened == 1


async def test_a_body_sent_one_byte_at_a_time_gets_408(make_hub: Maker) -> None:
    hub = await make_hub(hub_request_timeout_s=DEADLINE_S, hub_allow_unauthenticated=True)
    head = (b"POST /connect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 60000\r\n\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    writer.write(head)
    t0 = time.monotonic()
    for _ in range(200):
        if reader.at_eof() or writer.is_closing():
            break
        writer.write(b" ")
        await asyncio.sleep(0.02)
        if time.monotonic() - t0 > DEADLINE_S + 0.3:
            break
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert hub.metrics.connect_refused == {"timeout": 1}


async def test_an_idle_connection_is_closed_too(make_hub: Maker) -> None:
    """Opening sockets and sending nothing at all holds no fd past the deadline."""
    hub = await make_hub(hub_request_timeout_s=DEADLINE_S)
    conns = [await asyncio.open_connection("127.0.0.1", hub.port) for _ in range(10)]
    answers = await asyncio.gather(*(asyncio.wait_for(r.read(), 5) for r, _ in conns))
    for _, w in conns:
        w.close()
    assert answers == [b""] * 10 and hub.metrics.header_timeouts == 10
