"""Finding H7, recordings: an unsolicited media/recording spends its device's byte quota per hour
(AI_RECORDING_QUOTA_BYTES_PER_H); beyond it it is refused over_quota, counted, not stored. A
recording that answers our own request is always accepted. Real broker, real control plane; the
quota's bucket is given a controllable clock, so the refill is tested without sleeping."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shared.rate_limit import RateLimiter
from tests.ai_server.control.conftest import ControlFactory, Watch, announce_device, b64, uid, until
from tests.ai_server.control.test_media import wav_bytes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def recording(data: bytes, request_id: str) -> dict[str, Any]:
    return {"request_id": request_id, "media_type": "audio", "format": "wav", "duration_ms": 200,
            "sample_rate": 16000, "data": b64(data)}


async def test_unsolicited_recordings_stop_at_the_quota_and_requested_ones_do_not(
    control_server: ControlFactory, watch: Watch
) -> None:
    clip = wav_bytes(200)  # 6.4 kB
    now = [1000.0]
    quota = 3 * len(clip)
    _server, plane = await control_server(settings={"ai_recording_quota_bytes_per_h": quota})
    assert plane.media.recording_quota == quota
    plane.media._quota = RateLimiter(quota / 3600.0, quota, clock=lambda: now[0])
    dev, other = uid("rec"), uid("rec")
    for d in (dev, other):
        await announce_device(watch, d, zone="garage")
    await until(lambda: plane.registry.get(dev) is not None and plane.registry.get(other) is not None)

    def stored(device_id: str) -> int:
        return len([r for r in plane.media.store.recent(50, source="mqtt_recording") if r.device_id == device_id])

    for i in range(5):
        await watch.publish(f"naila/devices/{dev}/media/recording", recording(clip, f"own-{i}"))
    await until(lambda: plane.metrics.rejected["over_quota"] == 2)
    await until(lambda: stored(dev) == 3)

    # Another device has its own quota.
    await watch.publish(f"naila/devices/{other}/media/recording", recording(clip, "o-1"))
    await until(lambda: stored(other) == 1)

    # An answer to our own request is accepted although the device is over its quota.
    await watch.subscribe(f"naila/devices/{dev}/media/request")
    pending = asyncio.ensure_future(plane.request_recording(dev, {"duration_ms": 200}, timeout_s=5))
    request = await watch.next_json(f"naila/devices/{dev}/media/request")
    await watch.publish(f"naila/devices/{dev}/media/recording", recording(clip, request["request_id"]))
    record = await pending
    assert record.device_id == dev and stored(dev) == 4
    assert plane.metrics.rejected["over_quota"] == 2

    # The quota refills continuously (a sliding hour): 20 minutes give back a third of it.
    now[0] += 1200.0 + 1.0
    await watch.publish(f"naila/devices/{dev}/media/recording", recording(clip, "later"))
    await until(lambda: stored(dev) == 5)
    await watch.publish(f"naila/devices/{dev}/media/recording", recording(clip, "later-2"))
    await until(lambda: plane.metrics.rejected["over_quota"] == 3)
