"""Devices spread over several AI servers (HUB_AI_SERVER=a:50051,b:50051): one AiLink per server.

Which server: rendezvous (highest-random-weight) hashing of the device id over the servers whose
link is up. Every hub computes the same answer without talking to anyone, a device stays on its
server while that server is up (the conversation's history and the timers it set live there), and
adding or removing a server moves only the devices whose top choice it is (about 1/N of them).

Sticky, and moved only at a turn boundary: a device's server is chosen again only when it sends a
START while it has no turn in flight (no utterance open, no reply still coming). So a device that
failed over comes back to its own server when that server returns, but never mid-turn.

A server that goes away (its stream ended, or :class:`hub.ai_link.AiLink`'s heartbeat gave up on
it): every device on it is moved at once to its next choice among the servers still up, and
``on_devices_lost`` tells their sessions that the turn in flight is lost. That turn is NOT re-sent:
the hub streams the utterance upstream as it is spoken and keeps no copy, so the device's turn ends
with the logged, counted error "AI stream lost" (/turns, the page's turn_end) and the user says it
again; the next START goes to the new server. The failover bound is therefore the link's failure
detection (immediate for a killed process: the TCP connection resets; at most
:func:`hub.ai_link.detection_bound_s` for a host that stopped answering) plus nothing.

Everything here runs on the event loop; the links' threads post to it (see hub/ai_link.py).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from hub.ai_link import Outbound
from shared.contract import pb

log = logging.getLogger("naila.hub.ai_pool")

# A reply that never ended (the AI server dropped it without is_final) stops counting as a turn in
# flight after this long, so it cannot pin the device to a server forever.
TURN_STALE_S = 60.0


class Link(Protocol):
    """What the pool needs of one server's link (hub.ai_link.AiLink; a recorder in unit tests)."""

    target: str
    ai_status: str

    @property
    def connected(self) -> bool: ...

    @property
    def generation(self) -> int: ...

    def send(self, item: Outbound) -> bool: ...

    def pending(self, device_id: str) -> int: ...

    def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def wait_connected(self, within_s: float) -> bool: ...


# Builds one server's link: (target, on_output, on_connection_change) -> Link.
LinkFactory = Callable[[str, Callable[[pb.AudioOutput], None], Callable[[bool], None]], Link]


def weight(target: str, device_id: str) -> int:
    """The rendezvous weight of ``device_id`` on ``target``: the same on every hub, every run."""
    digest = hashlib.blake2b(f"{target}\0{device_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous(targets: Sequence[str], device_id: str) -> str:
    """The target with the highest weight for the device (the first target when there is one)."""
    return max(targets, key=lambda t: weight(t, device_id))


class AiPool:
    """Routes each device's uplink to one server's link and its replies back; see the module doc.

    It offers the sessions what one link did (``send``, ``connected``, ``pending``) plus
    :meth:`generation_of`, which changes when the device's stream is a new one: its server's link
    reconnected, or the device was moved to another server.
    """

    def __init__(
        self,
        targets: Sequence[str],
        make_link: LinkFactory,
        *,
        on_output: Callable[[pb.AudioOutput], None],
        on_devices_lost: Callable[[list[str]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not targets:
            raise ValueError("at least one AI server")
        self._on_output = on_output
        self._on_lost = on_devices_lost
        self._clock = clock
        self.targets = list(dict.fromkeys(targets))
        self.links: dict[str, Link] = {t: make_link(t, self._output_from(t), self._change_of(t)) for t in self.targets}
        self._index = {t: i for i, t in enumerate(self.targets)}
        self._server: dict[str, str] = {}  # device -> the target its turns go to
        self._open: set[str] = set()  # devices whose utterance is open (START sent, END not yet)
        self._awaiting: dict[str, float] = {}  # device -> when its END was sent (reply not final yet)
        self.failovers = 0  # devices moved off a server that went down
        self.returns = 0  # devices moved back to their first choice at a turn boundary
        self.lost_turns = 0  # turns in flight on a server that went down

    # ----- what the sessions and the hub see -----

    @property
    def connected(self) -> bool:
        """At least one AI server is reachable."""
        return any(link.connected for link in self.links.values())

    @property
    def ai_status(self) -> str:
        """'degraded' if a reachable server says so, 'ok' if one answered, '' when none is known."""
        statuses = [link.ai_status for link in self.links.values() if link.connected and link.ai_status]
        if any(s != "ok" for s in statuses):
            return next(s for s in statuses if s != "ok")
        return "ok" if statuses else ""

    def server_of(self, device_id: str) -> str | None:
        return self._server.get(device_id)

    def first_up(self) -> str:
        """The first server of HUB_AI_SERVER whose stream is up (the first when none is): where camera
        frames go, so that the box with the GPU gets them whenever it is there (docs/scale.md)."""
        return next((t for t in self.targets if self.links[t].connected), self.targets[0])

    def in_flight(self, device_id: str) -> bool:
        """The device has an utterance open or a reply still coming."""
        return self._busy(device_id)

    def generation_of(self, device_id: str) -> int:
        """Changes whenever the stream this device's messages go on is a different one."""
        target = self._server.get(device_id)
        if target is None:
            return 0
        return self._index[target] + len(self.targets) * self.links[target].generation

    def pending(self, device_id: str) -> int:
        target = self._server.get(device_id)
        return self.links[target].pending(device_id) if target is not None else 0

    def send(self, item: Outbound) -> bool:
        """Queue a message on the device's server without blocking. False if it was dropped."""
        msg = item.msg
        device = msg.device_id
        if msg.event == pb.START:
            target = self._choose_at_boundary(device)
        else:
            target = self._server.get(device) or self._assign(device, self._up_or_all())
        ok = self.links[target].send(item)
        if not ok:
            return False
        if msg.event == pb.START:
            self._open.add(device)
        elif msg.event == pb.END:
            self._open.discard(device)
            self._awaiting[device] = self._clock()
        return True

    def forget(self, device_id: str) -> None:
        """The device's session closed: nothing per device outlives it."""
        self._server.pop(device_id, None)
        self._open.discard(device_id)
        self._awaiting.pop(device_id, None)

    def details(self) -> list[dict[str, object]]:
        """Per server, for /health?detail=1: address, stream up, its status, devices on it."""
        counts: dict[str, int] = {}
        for target in self._server.values():
            counts[target] = counts.get(target, 0) + 1
        return [
            {"address": t, "connected": link.connected, "status": link.ai_status, "devices": counts.get(t, 0)}
            for t, link in self.links.items()
        ]

    async def wait_connected(self, within_s: float) -> bool:
        """Until every server's stream is up (or ``within_s``): True when all are."""
        deadline = self._clock() + within_s
        for link in self.links.values():
            if not await link.wait_connected(max(0.0, deadline - self._clock())):
                return False
        return True

    def start(self) -> None:
        for link in self.links.values():
            link.start()

    async def stop(self) -> None:
        for link in self.links.values():
            await link.stop()

    # ----- choosing -----

    def _up_or_all(self) -> list[str]:
        up = [t for t, link in self.links.items() if link.connected]
        return up or self.targets  # none up: keep a stable choice (its link drops and counts)

    def _assign(self, device: str, candidates: Sequence[str]) -> str:
        target = rendezvous(candidates, device)
        self._server[device] = target
        return target

    def _busy(self, device: str) -> bool:
        if device in self._open:
            return True
        sent_at = self._awaiting.get(device)
        return sent_at is not None and self._clock() - sent_at < TURN_STALE_S

    def _choose_at_boundary(self, device: str) -> str:
        current = self._server.get(device)
        candidates = self._up_or_all()
        preferred = rendezvous(candidates, device)
        if current is None or not self.links[current].connected:
            return self._assign(device, candidates)
        if preferred != current and not self._busy(device):
            self.returns += 1
            log.info("%s: back to AI server %s (from %s)", device, preferred, current)
            self._server[device] = preferred
            self._open.discard(device)
            self._awaiting.pop(device, None)
            return preferred
        return current

    # ----- link events (on the event loop) -----

    def _output_from(self, target: str) -> Callable[[pb.AudioOutput], None]:
        def on_output(out: pb.AudioOutput) -> None:
            if out.is_final and self._server.get(out.device_id) == target:
                self._awaiting.pop(out.device_id, None)
            self._on_output(out)

        return on_output

    def _change_of(self, target: str) -> Callable[[bool], None]:
        return lambda up: self._link_changed(target, up)

    def _link_changed(self, target: str, up: bool) -> None:
        if up:
            # Devices come back one by one at their next turn boundary (_choose_at_boundary).
            log.info("AI server %s up", target)
            return
        moved = [d for d, t in self._server.items() if t == target]
        survivors = [t for t, link in self.links.items() if link.connected and t != target]
        for device in moved:
            if device in self._open or device in self._awaiting:
                self.lost_turns += 1
            self._open.discard(device)
            self._awaiting.pop(device, None)
            if survivors:
                self._assign(device, survivors)
        if survivors:
            self.failovers += len(moved)
        where = ", ".join(survivors) if survivors else "nowhere (no AI server is up)"
        log.warning("AI server %s down: %d device(s) move to %s", target, len(moved), where)
        if moved and self._on_lost is not None:
            try:
                self._on_lost(moved)
            except Exception:
                log.exception("devices-lost callback failed")
