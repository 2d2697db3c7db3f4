"""Which hub answers an MQTT offer (hub/hub_directory.py), and the device's hub list (device_agent/hub_choice.py)."""

from __future__ import annotations

import pytest

from device_agent.hub_choice import HubChoice
from hub.hub_directory import answering_hub
from shared.mqtt import HubStatus

pytestmark = pytest.mark.unit


def hubs(**entries: tuple[bool, list[str]]) -> dict[str, HubStatus]:
    return {
        h: HubStatus(hub_id=h, online=online, devices=devices, device_count=len(devices))
        for h, (online, devices) in entries.items()
    }


def test_no_hub_known_means_every_hub_answers() -> None:
    assert answering_hub("d1", None, {}) is None
    assert answering_hub("d1", "a", hubs(a=(False, []))) is None


def test_an_online_target_wins_over_the_serving_hub() -> None:
    assert answering_hub("d1", "b", hubs(a=(True, ["d1"]), b=(True, []))) == "b"


def test_an_offline_or_unknown_target_falls_back_to_the_serving_hub_then_the_least_loaded() -> None:
    known = hubs(a=(True, ["d1"]), b=(True, []), c=(False, []))
    assert answering_hub("d1", "c", known) == "a"  # sticky: a serves d1
    assert answering_hub("d1", "zz", known) == "a"
    assert answering_hub("d2", "c", known) == "b"  # new device: the hub with fewer devices


def test_new_devices_spread_over_equally_loaded_hubs_and_every_hub_agrees() -> None:
    known = hubs(a=(True, []), b=(True, []), c=(True, []))
    winners = [answering_hub(f"dev-{n}", None, known) for n in range(300)]
    counts = {h: winners.count(h) for h in known}
    assert all(70 <= c <= 130 for c in counts.values()), counts
    # A pure function of the presences: another hub (another dict order) computes the same.
    reordered = dict(reversed(list(known.items())))
    assert winners == [answering_hub(f"dev-{n}", None, reordered) for n in range(300)]


def test_the_hub_list_stays_on_a_working_hub_and_moves_on_failure() -> None:
    choice = HubChoice(["http://a/connect", "http://b/connect", "http://c/connect"])
    assert choice.current == "http://a/connect"
    assert choice.failed() is True and choice.current == "http://b/connect"  # b not tried yet: at once
    choice.succeeded()
    assert choice.current == "http://b/connect"  # stays on b
    assert choice.failed() is True and choice.failed() is True  # c, then a: both untried since b worked
    assert choice.failed() is False and choice.current == "http://b/connect"  # all failed: back off


def test_a_single_hub_always_backs_off() -> None:
    choice = HubChoice(["http://a/connect"])
    assert choice.failed() is False and choice.current == "http://a/connect"


async def test_the_dashboard_lists_devices_served_by_other_hubs_with_their_hub() -> None:
    from hub.metrics import HubMetrics
    from hub.turns import TurnLog
    from hub.web.events import EventBus
    from hub.web.state import MQTT_FILTERS, DashboardState
    from shared.mqtt import outbound, topics

    assert topics.ALL_HUB_STATUS in MQTT_FILTERS
    state = DashboardState(EventBus(), HubMetrics(), TurnLog(10), {}, hub_instance="i")
    for status in (
        HubStatus(hub_id="hall", online=True, devices=["pi-hall"], device_count=1),
        HubStatus(hub_id="attic", online=True, devices=["pi-attic"], device_count=1),
    ):
        msg = outbound(topics.hub_status(status.hub_id), status)
        await state.on_mqtt(msg.topic, msg.payload)
    listed = {d["device_id"]: d for d in state.device_list()}
    assert listed["pi-hall"]["hub"] == "hall" and listed["pi-attic"]["hub"] == "attic"
    assert listed["pi-attic"]["online"] is True and listed["pi-attic"]["connected"] is False
    assert state.health()["hubs"] == {"hall": {"online": True, "devices": 1}, "attic": {"online": True, "devices": 1}}
    gone = outbound(topics.hub_status("attic"), HubStatus(hub_id="attic", online=False))
    await state.on_mqtt(gone.topic, gone.payload)
    listed = {d["device_id"]: d for d in state.device_list()}
    assert listed["pi-attic"]["hub"] is None and listed["pi-attic"]["online"] is False
