"""The rules on their own: zones (bottom-centre, inertia), alert policy (once per track, de-dup, overlap), settings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ai_server.vision.alerting import AlertPolicy, CameraRank, alert_type_for
from ai_server.vision.config import VisionConfig
from ai_server.vision.zones import CameraZones, ZoneInertia, bottom_centre, safe_name
from shared.config import AIServerSettings, ConfigError, load

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 15, 3, 0, tzinfo=UTC)
PORCH = [(0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (0.0, 1.0)]  # lower-left quarter
DRIVE = [(0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.5, 1.0)]  # lower-right quarter


def test_an_object_is_where_its_feet_are() -> None:
    zones = CameraZones({"porch": PORCH, "drive": DRIVE})
    # A tall box whose top is in the sky and whose feet stand on the porch: on the porch.
    feet = bottom_centre((40, 10, 40, 200), 320, 240)
    assert feet == pytest.approx((60 / 320, 210 / 240))
    assert zones.zones_at(feet) == ["porch"]
    # Feet in the upper half (in no polygon): in no zone, even though the box reaches into both.
    assert zones.zones_at(bottom_centre((100, 0, 200, 100), 320, 240)) == []
    # On the shared edge: in both (configuration order).
    assert zones.zones_at((0.5, 0.75)) == ["porch", "drive"]
    # No polygons: one zone, named by the caller.
    assert CameraZones().zones_at((0.9, 0.1), "front_door") == ["front_door"]


def test_zone_names_become_topic_segments() -> None:
    assert safe_name("Front Door") == "front_door"
    assert safe_name("  ") == "default" and safe_name("..") == "default"
    assert safe_name("a/b+#c") == "a_b_c"
    assert alert_type_for("person") == "person_detected" and alert_type_for("Fall") == "fall_detected"
    assert alert_type_for("traffic light") == "traffic_light_detected"


def test_inertia_enters_after_k_consecutive_frames_and_leaves_at_once() -> None:
    inertia = ZoneInertia(k=3)
    assert inertia.observe(1, ["porch"]) == []
    assert inertia.observe(1, ["porch"]) == []
    assert inertia.observe(1, ["porch"]) == ["porch"]  # the third frame
    assert inertia.observe(1, ["porch", "drive"]) == ["porch"]
    assert inertia.observe(1, ["drive"]) == []  # left the porch; the drive needs 3 in a row
    assert inertia.observe(1, ["drive"]) == ["drive"]
    # One frame outside resets the count: a box flickering across an edge never enters.
    for _ in range(5):
        inertia.observe(2, ["porch"])
        assert inertia.observe(2, []) == []
        assert inertia.observe(2, ["porch"]) == []
    inertia.forget(1)
    assert inertia.current(1) == []
    with pytest.raises(ValueError):
        ZoneInertia(k=0)


def _observe(policy: AlertPolicy, device: str, track: int, at: float, zone: str = "porch", label: str = "person"
             ) -> int:
    return len(policy.observe(device, track, label, 0.9, [zone], now=at, time=T0, jpeg=b"jpeg"))


def test_one_alert_per_track_and_zone_and_dedup_per_zone_and_type() -> None:
    policy = AlertPolicy(labels=["person"], dedup_s=60)
    assert _observe(policy, "cam", 1, 0.0) == 1
    assert _observe(policy, "cam", 1, 1.0) == 0  # same track, still in the zone: nothing new
    assert [d.verdict for d in policy.decide(1.0)] == ["alert"]
    # Another person (new track) in the same zone 30 s later: a duplicate, recorded, not alerted.
    assert _observe(policy, "cam", 2, 30.0) == 1
    assert [d.verdict for d in policy.decide(30.0)] == ["duplicate"]
    # The same zone with another alert type is not a duplicate.
    assert _observe(policy, "cam", 2, 31.0, label="car") == 0  # cars do not alert here at all
    policy.labels.add("car")
    assert _observe(policy, "cam", 2, 31.0, label="car") == 1
    assert [d.verdict for d in policy.decide(31.0)] == ["alert"]
    # After the window, a new object in the zone alerts again.
    assert _observe(policy, "cam", 3, 61.0) == 1
    assert [d.verdict for d in policy.decide(61.0)] == ["alert"]
    # Another zone is its own key.
    assert _observe(policy, "cam", 3, 62.0, zone="drive") == 1
    assert [d.verdict for d in policy.decide(62.0)] == ["alert"]


def test_a_parked_track_never_alerts_again_however_long_it_stays() -> None:
    policy = AlertPolicy(labels=["car"], dedup_s=60)
    assert _observe(policy, "cam", 7, 0.0, label="car") == 1
    policy.decide(0.0)
    for hour in range(1, 24):  # the same track (it never left), hours later, well past the window
        assert _observe(policy, "cam", 7, hour * 3600.0, label="car") == 0
        assert policy.decide(hour * 3600.0) == []
    # Once its track ended (it drove away) a car parking there is news again.
    policy.forget_track("cam", 7)
    assert _observe(policy, "cam", 7, 90_000.0, label="car") == 1


def test_overlapping_cameras_alert_once_from_the_higher_priority_one() -> None:
    ranks = {"door": CameraRank(10, "front"), "hall": CameraRank(1, "front"), "yard": CameraRank(5, None)}
    online = {"door": True, "hall": True, "yard": True}
    policy = AlertPolicy(labels=["person"], dedup_s=60, hold_s=2.0, cameras=ranks, online=lambda d: online[d])
    # The low-priority camera sees the person first: its entry waits for the door camera.
    assert _observe(policy, "hall", 1, 0.0, zone="front_door") == 1
    assert policy.decide(0.5) == [] and policy.next_due == 2.0
    assert _observe(policy, "door", 4, 0.8, zone="front_door") == 1
    first = policy.decide(0.8)
    assert [(d.entry.device_id, d.verdict) for d in first] == [("door", "alert")]
    later = policy.decide(2.0)
    assert [(d.entry.device_id, d.verdict) for d in later] == [("hall", "overlap")]

    # Both in the same frame batch: the priority camera's goes first.
    assert _observe(policy, "hall", 2, 100.0, zone="front_door") == 1
    assert _observe(policy, "door", 5, 100.0, zone="front_door") == 1
    assert [(d.entry.device_id, d.verdict) for d in policy.decide(102.0)] == [("door", "alert"), ("hall", "overlap")]

    # The door camera is offline (or blind): no waiting for it; and if it never sees it, the hall alerts.
    online["door"] = False
    assert _observe(policy, "hall", 3, 200.0, zone="front_door") == 1
    assert [(d.entry.device_id, d.verdict) for d in policy.decide(200.0)] == [("hall", "alert")]
    online["door"] = True
    assert _observe(policy, "hall", 6, 300.0, zone="front_door") == 1
    assert policy.decide(301.0) == []
    assert [(d.entry.device_id, d.verdict) for d in policy.decide(302.0)] == [("hall", "alert")]
    # A camera without an overlap group never waits.
    assert _observe(policy, "yard", 1, 400.0, zone="yard") == 1
    assert [d.verdict for d in policy.decide(400.0)] == ["alert"]


def test_vision_settings_parse_and_refuse_bad_values() -> None:
    s = load(
        AIServerSettings,
        vision_zones='{"door": {"porch": [[0, 0.5], [1, 0.5], [1, 1]]}}',
        vision_cameras='{"door": {"priority": 10, "overlap": "front"}, "hall": {"overlap": "front"}}',
        vision_alert_labels="person, car",
    )
    cfg = VisionConfig.from_settings(s)
    assert cfg.alert_labels == ("person", "car")
    assert cfg.zones == {"door": {"porch": [(0.0, 0.5), (1.0, 0.5), (1.0, 1.0)]}}
    assert cfg.cameras == {"door": CameraRank(10, "front"), "hall": CameraRank(0, "front")}
    defaults = load(AIServerSettings)
    assert (defaults.vision_enabled, defaults.vision_model, defaults.vision_imgsz, defaults.vision_alert_dedup_s) == (
        True, "", 320, 60.0)
    for bad in ('{"door": {"porch": [[0, 0], [1, 1]]}}', '{"door": {"porch": [[0, 0], [2, 0], [1, 1]]}}',
                '{"door": {"front door": [[0, 0], [1, 0], [1, 1]]}}', "{not json"):
        with pytest.raises(ConfigError, match="VISION_ZONES"):
            load(AIServerSettings, vision_zones=bad)
    with pytest.raises(ConfigError, match="VISION_CAMERAS"):
        load(AIServerSettings, vision_cameras='{"door": {"prio": 1}}')
    with pytest.raises(ConfigError, match="VISION_IMGSZ"):
        load(AIServerSettings, vision_imgsz=300)
