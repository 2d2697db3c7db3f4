"""shared.timestamps.utc_iso: the spec's UTC timestamp text, in one place."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.timestamps import utc_iso

pytestmark = pytest.mark.unit

WHEN = dt.datetime(2024, 1, 15, 10, 30, 0, 123456, tzinfo=dt.UTC)


def test_milliseconds_by_default_seconds_on_request() -> None:
    assert utc_iso(WHEN) == "2024-01-15T10:30:00.123Z"
    assert utc_iso(WHEN, timespec="seconds") == "2024-01-15T10:30:00Z"


def test_another_zone_is_converted_to_utc() -> None:
    cet = dt.timezone(dt.timedelta(hours=1))
    assert utc_iso(WHEN.astimezone(cet)) == "2024-01-15T10:30:00.123Z"


def test_now_when_no_time_is_given() -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    text = utc_iso(timespec="seconds")
    assert text.endswith("Z")
    assert dt.datetime.fromisoformat(text) >= before
