"""hub/ai_pool.py: devices spread over several AI servers, sticky, moved at once when their server goes
down, back at a turn boundary when it returns; and the heartbeat's failure-detection bound.

The links are recorders (the one boundary faked here); the pool is the real one. The heartbeat test
drives the real AiLink heartbeat loop on a controllable clock (no sleeps): its waits advance the
clock, its GetStatus stub answers or times out.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from hub.ai_link import AiLink, Outbound, detection_bound_s
from hub.ai_pool import AiPool, rendezvous
from hub.metrics import HubMetrics
from shared.backoff import Backoff
from shared.config import HubSettings, load
from shared.contract import pb

pytestmark = pytest.mark.unit

A, B, C = "10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.3:50051"


@dataclass
class RecordingLink:
    target: str
    on_output: Callable[[pb.AudioOutput], None]
    on_change: Callable[[bool], None]
    connected: bool = False
    generation: int = 0
    ai_status: str = ""
    sent: list[pb.AudioInput] = field(default_factory=list)

    def up(self) -> None:
        self.connected, self.ai_status = True, "ok"
        self.generation += 1
        self.on_change(True)

    def down(self) -> None:
        self.connected, self.ai_status = False, ""
        self.on_change(False)

    def send(self, item: Outbound) -> bool:
        if not self.connected:
            return False
        self.sent.append(item.msg)
        return True

    def pending(self, device_id: str) -> int:
        return 0

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def wait_connected(self, within_s: float) -> bool:
        return self.connected


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make_pool(targets: list[str], clock: Clock | None = None) -> tuple[AiPool, dict[str, RecordingLink], list[str]]:
    links: dict[str, RecordingLink] = {}
    lost: list[str] = []

    def factory(t: str, on_output: Callable[[pb.AudioOutput], None], on_change: Callable[[bool], None]) -> Any:
        links[t] = RecordingLink(t, on_output, on_change)
        return links[t]

    pool = AiPool(targets, factory, on_output=lambda out: None, on_devices_lost=lost.extend, clock=clock or Clock())
    for link in links.values():
        link.up()
    return pool, links, lost


def say(pool: AiPool, device: str, event: int) -> bool:
    return pool.send(Outbound(pb.AudioInput(device_id=device, event=event), frames=1, captured_at=None))  # type: ignore[arg-type]


def turn(pool: AiPool, device: str) -> None:
    for event in (pb.START, pb.CONTINUE, pb.END):
        assert say(pool, device, event)


def reply_final(links: dict[str, RecordingLink], target: str, device: str) -> None:
    links[target].on_output(pb.AudioOutput(device_id=device, is_final=True))


DEVICES = [f"dev-{i}" for i in range(300)]


def test_devices_spread_and_stick_to_their_rendezvous_server() -> None:
    pool, links, _ = make_pool([A, B, C])
    for d in DEVICES:
        turn(pool, d)
        turn(pool, d)
    counts = {t: len({m.device_id for m in link.sent}) for t, link in links.items()}
    assert sum(counts.values()) == len(DEVICES), "a device's turns went to two servers"
    assert all(60 <= n <= 140 for n in counts.values()), counts
    assert all(pool.server_of(d) == rendezvous([A, B, C], d) for d in DEVICES)


def test_adding_a_server_moves_only_the_devices_whose_first_choice_it_is() -> None:
    before = {d: rendezvous([A, B], d) for d in DEVICES}
    after = {d: rendezvous([A, B, C], d) for d in DEVICES}
    moved = [d for d in DEVICES if before[d] != after[d]]
    assert all(after[d] == C for d in moved)
    assert 60 <= len(moved) <= 140  # about a third, not a reshuffle


def test_a_server_going_down_moves_its_devices_at_once_and_reports_the_lost_turns() -> None:
    pool, links, lost = make_pool([A, B])
    on_a = [d for d in DEVICES[:40] if rendezvous([A, B], d) == A]
    for d in DEVICES[:40]:
        turn(pool, d)
    mid_turn = on_a[0]
    assert say(pool, mid_turn, pb.START)  # an utterance open on A when it dies
    gen_before = pool.generation_of(mid_turn)

    links[A].down()

    assert sorted(lost) == sorted(on_a), "exactly A's devices were told their turn is lost"
    assert all(pool.server_of(d) == B for d in DEVICES[:40])
    assert pool.failovers == len(on_a) and pool.lost_turns == len(on_a)  # each had END sent, no final yet
    assert pool.generation_of(mid_turn) != gen_before, "the rest of the open utterance must not go to B"
    n = len(links[B].sent)
    turn(pool, mid_turn)  # its next turn is answered by B
    assert len(links[B].sent) == n + 3
    assert pool.connected


def test_camera_frames_go_to_the_first_server_that_is_up() -> None:
    """hub/vision's uplink asks this at every dial and every second (tests/hub/vision/test_uplink.py)."""
    pool, links, _ = make_pool([A, B])  # both up
    assert pool.first_up() == A
    links[A].down()
    links[B].down()
    assert pool.first_up() == A  # none up: the first, whose dial fails and is retried
    links[B].up()
    assert pool.first_up() == B
    links[A].up()
    assert pool.first_up() == A  # the first of HUB_AI_SERVER (the box with the GPU) whenever it is up
    links[A].down()
    assert pool.first_up() == B


def test_devices_return_to_their_server_only_at_a_turn_boundary() -> None:
    pool, links, _ = make_pool([A, B])
    device = next(d for d in DEVICES if rendezvous([A, B], d) == A)
    turn(pool, device)
    links[A].down()
    turn(pool, device)
    assert pool.server_of(device) == B
    assert say(pool, device, pb.START)  # a turn is being spoken on B...
    links[A].up()  # ...when A comes back
    assert say(pool, device, pb.CONTINUE) and say(pool, device, pb.END)
    assert pool.server_of(device) == B, "moved mid-turn"
    assert say(pool, device, pb.START), "barge-in while B's reply is still coming"
    assert pool.server_of(device) == B, "moved while a reply was in flight"
    assert say(pool, device, pb.END)
    reply_final(links, B, device)
    before = len(links[A].sent)
    turn(pool, device)  # the next turn after the reply ended: back home
    assert pool.server_of(device) == A and len(links[A].sent) == before + 3 and pool.returns == 1


def test_a_reply_that_never_ends_stops_pinning_the_device_after_a_while() -> None:
    clock = Clock()
    pool, links, _ = make_pool([A, B], clock)
    device = next(d for d in DEVICES if rendezvous([A, B], d) == A)
    links[A].down()
    turn(pool, device)  # END on B; B never sends is_final
    links[A].up()
    clock.t += 10
    assert say(pool, device, pb.START) and pool.server_of(device) == B
    assert say(pool, device, pb.END)
    clock.t += 61
    assert say(pool, device, pb.START) and pool.server_of(device) == A


def test_with_every_server_down_messages_are_dropped_and_the_next_start_finds_the_first_back() -> None:
    pool, links, _ = make_pool([A, B])
    links[A].down()
    links[B].down()
    assert not pool.connected and pool.ai_status == ""
    assert not say(pool, "dev-1", pb.START)
    links[B].up()
    assert say(pool, "dev-1", pb.START) and pool.server_of("dev-1") == B


def test_health_detail_and_status_follow_the_servers() -> None:
    pool, links, _ = make_pool([A, B])
    turn(pool, "dev-1")
    links[B].ai_status = "degraded"
    assert pool.ai_status == "degraded"
    details = {d["address"]: d for d in pool.details()}
    assert set(details) == {A, B} and sum(int(str(d["devices"])) for d in details.values()) == 1
    pool.forget("dev-1")
    assert pool.server_of("dev-1") is None and sum(int(str(d["devices"])) for d in pool.details()) == 0


def test_one_address_is_one_link_as_before() -> None:
    pool, links, _ = make_pool(["127.0.0.1:50051"])
    turn(pool, "dev-1")
    assert list(links) == ["127.0.0.1:50051"] and len(links["127.0.0.1:50051"].sent) == 3


def test_hub_ai_server_lists_are_parsed_and_checked() -> None:
    assert load(HubSettings).ai_servers == ["127.0.0.1:50051"]
    assert load(HubSettings, hub_ai_server=f" {A} ,{B}").ai_servers == [A, B]
    for bad in (f"{A},,{B}", f"{A},{A}", ""):
        with pytest.raises(Exception, match=r"AI server|empty entry"):
            load(HubSettings, hub_ai_server=bad)


# ----- failure detection on a controllable clock -----


class SilentStub:
    """GetStatus of a host that answered until ``dies_at`` and then went silent (no TCP reset)."""

    def __init__(self, clock: Clock, dies_at: float) -> None:
        self.clock, self.dies_at = clock, dies_at

    def GetStatus(self, request: pb.StatusRequest, timeout: float) -> pb.StatusResponse:
        if self.clock.t < self.dies_at:
            self.clock.t += 0.01  # a quick answer
            return pb.StatusResponse(status="ok")
        self.clock.t += timeout  # the deadline passes
        raise _Deadline()


class _Deadline(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.DEADLINE_EXCEEDED

    def details(self) -> str:
        return "deadline"


class Call:
    cancelled_at: float | None = None

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def cancel(self) -> None:
        self.cancelled_at = self.clock.t


@pytest.mark.parametrize("dies_after", [0.0, 0.5, 0.999, 1.3])
def test_a_silent_ai_server_is_given_up_within_the_detection_bound(dies_after: float) -> None:
    settings = load(HubSettings)
    period, misses = settings.hub_ai_heartbeat_s, settings.hub_ai_heartbeat_misses
    clock = Clock()

    def wait(done: threading.Event, s: float) -> bool:
        clock.t += s
        return False

    link = AiLink(
        A,
        HubMetrics(),
        on_output=lambda out: None,
        backoff=Backoff(0.2, 5),
        per_device_limit=10,
        clock=clock,
        heartbeat_period_s=period,
        heartbeat_timeout_s=period,
        heartbeat_misses=misses,
        wait=wait,
    )
    dies_at = clock.t + dies_after
    call = Call(clock)
    link._heartbeat(SilentStub(clock, dies_at), call, threading.Event())  # type: ignore[arg-type]
    assert call.cancelled_at is not None
    bound = detection_bound_s(period, period, misses)
    assert call.cancelled_at - dies_at <= bound + 0.05
    assert bound <= 5.0, "the issue's failover goal with the defaults"
