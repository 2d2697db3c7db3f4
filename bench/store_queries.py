"""Store query times at scale: the queries a history question makes.

    python bench/store_queries.py [--events 100000] [--repeats 200]

prints the times and writes bench/results/store_queries.json. :func:`query_times` seeds a fresh
store with ``n`` events (30 days, 8 cameras in 6 zones) and as many
transcripts as ``n // 10``, then times each query ``repeats`` times with the existing indexes.
Returns ``{query: {"p50_ms", "p95_ms"}}`` plus the seeding time (the function prints nothing).
(Bench support, not production: it lived in ai_server/store/ and shipped with the AI server.)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ai_server.store.media import MediaStore  # noqa: E402
from bench.stats import pct  # noqa: E402

OUT = ROOT / "bench/results/store_queries.json"

_ZONES = ("front_door", "backyard", "driveway", "garage", "kitchen", "hall")
_T0 = datetime(2026, 1, 1, tzinfo=UTC)
_SPAN_S = 30 * 86400


def _seed(store: MediaStore, n: int, rng: random.Random) -> None:
    events = []
    for _ in range(n):
        cam = rng.randrange(8)
        when = (_T0 + timedelta(seconds=rng.randrange(_SPAN_S))).isoformat()
        events.append((when, f"cam{cam}", _ZONES[cam % len(_ZONES)], "person_detected", "person",
                       0.5 + rng.random() / 2, rng.randrange(1000), rng.choice(("alerted", "duplicate", "recorded"))))
    talks = [((_T0 + timedelta(seconds=rng.randrange(_SPAN_S))).isoformat(), "kitchen-1", "kitchen", "kitchen-1",
              "voice", "question", "answer") for _ in range(n // 10)]
    with store.locked() as db:
        db.execute("BEGIN")
        db.executemany("INSERT INTO events (time, device_id, zone, alert_type, label, confidence, track_id, outcome) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", events)
        db.executemany("INSERT INTO transcripts (time, device_id, room, thread, channel, user_text, reply_text) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", talks)
        db.execute("COMMIT")
        db.execute("ANALYZE")


def _times(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(pct(samples, 0.5), 3), "p95_ms": round(pct(samples, 0.95), 3)}


def query_times(n: int = 100_000, repeats: int = 200, root: Path | None = None, seed: int = 1) -> dict[str, object]:
    """See the module doc; ``root``: where to build the store (a temporary directory by default)."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="naila-store-bench-") as tmp:
        store = MediaStore(root or Path(tmp))
        try:
            started = time.perf_counter()
            _seed(store, n, rng)
            seeded_s = time.perf_counter() - started

            def hour() -> datetime:
                return _T0 + timedelta(hours=rng.randrange(_SPAN_S // 3600))

            def zone_hour() -> object:  # "what did the front door camera see at 3am"
                since = hour()
                return store.events.query(since=since, until=since + timedelta(hours=1), zone=rng.choice(_ZONES),
                                          limit=500)

            def zone_day() -> object:  # "... yesterday": a day, capped at 500 read
                since = hour()
                return store.events.query(since=since, until=since + timedelta(days=1), zone=rng.choice(_ZONES),
                                          limit=500)

            def any_hour() -> object:  # "was anyone here at 3am" (no place)
                since = hour()
                return store.events.query(since=since, until=since + timedelta(hours=1), limit=500)

            def last_alert() -> object:  # "the last alert from the backyard" (no time)
                return store.events.query(device_id=f"cam{rng.randrange(8)}", limit=500)

            def conversations_day() -> object:  # "what was I asking about yesterday"
                since = hour()
                return store.transcripts.query(since=since, until=since + timedelta(days=1), limit=500)

            out: dict[str, object] = {"events": n, "transcripts": n // 10, "seed_s": round(seeded_s, 2)}
            for name, fn in (("events_zone_hour", zone_hour), ("events_zone_day", zone_day),
                             ("events_any_hour", any_hour), ("events_last_by_camera", last_alert),
                             ("events_places", store.events.places), ("transcripts_day", conversations_day)):
                out[name] = _times(fn, repeats)
            return out
        finally:
            store.close()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--out", type=Path, default=OUT)
    ns = ap.parse_args(argv)
    out = query_times(ns.events, ns.repeats)
    print(json.dumps(out, indent=1))
    ns.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
