"""Requests waiting for a device's reply, matched by ``request_id`` *and* the replying device.

Why the device too: a request id travels in clear on the broker, so any client could answer it;
only a reply on the addressed device's own topic (which broker ACLs can reserve for that device)
completes the request.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(eq=False)
class _Waiter(Generic[T]):
    device_id: str
    future: asyncio.Future[T]


class PendingReplies(Generic[T]):
    """``request_id`` -> the future its reply completes. Use :meth:`expect` then ``await`` the future."""

    def __init__(self) -> None:
        self._waiters: dict[str, _Waiter[T]] = {}

    def expect(self, device_id: str, request_id: str) -> asyncio.Future[T]:
        """Register before publishing the request, so a fast reply cannot arrive unclaimed."""
        if request_id in self._waiters:
            raise ValueError(f"request {request_id} is already pending")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = _Waiter(device_id, future)
        return future

    def resolve(self, device_id: str, request_id: str, value: T) -> bool:
        """Complete the request with ``value``; False when nobody waits for it from this device."""
        waiter = self._waiters.get(request_id)
        if waiter is None or waiter.device_id != device_id:
            return False
        del self._waiters[request_id]
        if not waiter.future.done():
            waiter.future.set_result(value)
        return True

    def fail(self, device_id: str, request_id: str, error: BaseException) -> bool:
        """Complete the request with an exception; False when nobody waits for it from this device."""
        waiter = self._waiters.get(request_id)
        if waiter is None or waiter.device_id != device_id:
            return False
        del self._waiters[request_id]
        if not waiter.future.done():
            waiter.future.set_exception(error)
        return True

    def waiting(self, device_id: str, request_id: str) -> bool:
        """Whether a reply from ``device_id`` with ``request_id`` would complete a request."""
        waiter = self._waiters.get(request_id)
        return waiter is not None and waiter.device_id == device_id

    def forget(self, request_id: str) -> None:
        """Stop waiting (timeout or cancellation); a later reply is then "unmatched"."""
        self._waiters.pop(request_id, None)

    def cancel_all(self) -> None:
        for waiter in self._waiters.values():
            waiter.future.cancel()
        self._waiters.clear()

    def __len__(self) -> int:
        return len(self._waiters)
