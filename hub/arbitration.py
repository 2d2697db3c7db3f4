"""Which device answers when several hear one person: pick the best capture, stand the others down.

With a device in every room, one sentence often reaches two or three microphones. Without
arbitration each device's VAD opens its own utterance and the assistant answers two or three
times, from the wrong rooms too. A session whose VAD confirms an onset *claims* the utterance
here instead of sending START; the claim stays pending for ``window_s`` (other devices' onsets
for the same speech land inside it) and until every onset in that window has ``compare_s`` of
speech to compare, then:

* claims whose energy envelopes match (same speech, time-aligned on the hub clock within
  ``max_lag_s``) form a group; the member with the best speech-to-noise ratio over the onset
  wins, ties (within ``tie_db``) go to the device that started first;
* a claim with a different envelope (a second person in another room) is its own group and
  wins on its own: arbitration compares the audio, not only the time;
* a claim similar to a recent winner that already spoke loses at once.

Only with one live device does a claim win at once, so a single-device home pays nothing.
Pure logic on an injected clock: sessions feed frame levels and call :meth:`Arbiter.poll`
on each frame (every live WebRTC stream delivers one every 20 ms).
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

FRAME_S = 0.02
FLOOR_DBFS = -80.0  # digital silence would otherwise dominate the correlation


class ClaimState(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


@dataclass(eq=False)
class Claim:
    """One device's bid for an utterance: its frame levels from the pre-roll on."""

    device_id: str
    started_at: float  # hub clock, capture time of the first onset frame
    onset_frames: int
    levels: list[tuple[float, float]] = field(default_factory=list)  # (capture time, dBFS)
    state: ClaimState = ClaimState.PENDING
    reason: str = ""
    on_resolved: Callable[[Claim], None] | None = None
    beaten_by: Claim | None = None
    checked_at: float = 0.0  # when a lost claim was last compared with its winner again

    def feed(self, at: float, level_db: float) -> None:
        self.levels.append((at, max(FLOOR_DBFS, level_db)))

    @property
    def snr_db(self) -> float:
        """Loudest onset frames over the quietest pre-roll frames (speech level above the room's noise)."""
        speech = sorted((db for t, db in self.levels if t >= self.started_at - 1e-9), reverse=True)
        before = sorted(db for t, db in self.levels if t < self.started_at - 1e-9)
        if not speech:
            return 0.0
        level = sum(speech[:3]) / min(3, len(speech))
        noise = sum(before[: max(1, len(before) // 4)]) / max(1, len(before) // 4) if before else FLOOR_DBFS
        return level - noise


def envelope_similarity(
    a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]], max_lag: int = 3, *, since: float = -math.inf
) -> float:
    """Best Pearson correlation of two dB envelopes on the 20 ms grid, over lags up to ``max_lag`` frames.

    Only frames at or after ``since`` count: callers pass the later onset, because the jump
    from room noise to speech correlates for *any* two onsets that happen together.
    Returns -1 when they share fewer than 5 frames or one of them is flat.
    """
    slots_a = {round(t / FRAME_S): db for t, db in a if t >= since - 1e-9}
    slots_b = {round(t / FRAME_S): db for t, db in b if t >= since - 1e-9}
    best = -1.0
    for lag in range(-max_lag, max_lag + 1):
        common = [s for s in slots_a if s + lag in slots_b]
        if len(common) < 5:
            continue
        xs = [slots_a[s] for s in common]
        ys = [slots_b[s + lag] for s in common]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
        sxx = sum((x - mx) ** 2 for x in xs)
        syy = sum((y - my) ** 2 for y in ys)
        if sxx <= 1e-9 or syy <= 1e-9:
            continue
        best = max(best, sxy / math.sqrt(sxx * syy))
    return best


@dataclass
class ArbiterStats:
    claims: int = 0
    immediate: int = 0  # won at once: the only live device
    won: int = 0
    lost: int = 0
    separate: int = 0  # overlapping onsets judged to be different speech
    reclaimed: int = 0  # stood down, then let through: different speech after all


class Arbiter:
    """Groups overlapping claims and resolves them; see the module doc."""

    def __init__(
        self,
        *,
        window_s: float = 0.2,
        compare_s: float = 0.16,
        similarity: float = 0.6,
        max_lag_s: float = 0.06,
        tie_db: float = 1.0,
        recent_s: float = 1.0,
        recheck_s: float = 0.3,
        separate_below: float = 0.4,
        live_devices: Callable[[], int] = lambda: 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.compare_s = compare_s
        self.similarity = similarity
        self.max_lag = max(0, round(max_lag_s / FRAME_S))
        self.tie_db = tie_db
        self.recent_s = recent_s
        self.recheck_s = recheck_s
        self.separate_below = separate_below
        self._live_devices = live_devices
        self._clock = clock
        self.pending: list[Claim] = []
        self._now = 0.0
        self._standing_down: list[Claim] = []  # lost, utterance still open: re-checked
        self._recent_winners: list[Claim] = []
        self.stats = ArbiterStats()

    @property
    def enabled(self) -> bool:
        return self.window_s > 0

    def claim(
        self,
        device_id: str,
        started_at: float,
        levels: Sequence[tuple[float, float]],
        onset_frames: int,
        on_resolved: Callable[[Claim], None] | None = None,
    ) -> Claim:
        """Open a claim with the levels heard so far (pre-roll + onset). May resolve at once."""
        c = Claim(device_id, started_at, onset_frames, on_resolved=on_resolved)
        for at, db in levels:
            c.feed(at, db)
        self.stats.claims += 1
        if not self.enabled or self._live_devices() <= 1:
            self.stats.immediate += 1
            self._resolve(c, ClaimState.WON, "only device")
            return c
        self.pending.append(c)
        return c

    def withdraw(self, claim: Claim) -> None:
        """The claim's utterance ended (or its session closed): stop tracking it."""
        if claim in self.pending:
            self.pending.remove(claim)
        if claim in self._standing_down:
            self._standing_down.remove(claim)

    def poll(self, now: float | None = None) -> None:
        """Resolve every claim whose window has passed."""
        now = self._clock() if now is None else now
        self._now = now
        self._recent_winners = [w for w in self._recent_winners if now - w.started_at <= self.recent_s]
        self._recheck(now)
        while self.pending:
            first = min(self.pending, key=lambda c: c.started_at)
            if now < first.started_at + self.window_s:
                return
            # Every candidate needs some speech of its own before envelopes can be compared.
            last_start = max(c.started_at for c in self.pending if c.started_at - first.started_at <= self.window_s)
            if now < last_start + self.compare_s:
                return
            self._resolve_group(first)

    def _recheck(self, now: float) -> None:
        """A device stood down on leaked speech may then hear its own person: let it through.

        A second person who starts talking in another room while the first is speaking is
        first heard as the first one's leak (same envelope). Once the loser's recent envelope
        no longer follows the winner's and it is well above its own noise, it wins after all.
        """
        for c in list(self._standing_down):
            if now - c.checked_at < self.recheck_s or c.beaten_by is None:
                continue
            c.checked_at = now
            since = now - self.recheck_s
            recent = [db for t, db in c.levels if t >= since]
            before = sorted(db for t, db in c.levels if t < c.started_at - 1e-9)
            noise = before[len(before) // 4] if before else FLOOR_DBFS
            if len(recent) < 5 or sum(recent) / len(recent) < noise + 10:
                continue
            # Compared with every device answering now, not only the one it lost to: a third
            # device hearing both people must not pass for a third speaker.
            others = {id(w): w for w in [c.beaten_by, *self._recent_winners] if w.device_id != c.device_id}
            sim = max(envelope_similarity(c.levels, w.levels, self.max_lag, since=since) for w in others.values())
            if sim < self.separate_below:
                self._standing_down.remove(c)
                self.stats.reclaimed += 1
                self._resolve(c, ClaimState.WON, f"own speech after all (similarity {sim:.2f} at most)")

    def _similar(self, a: Claim, b: Claim) -> bool:
        if a.device_id == b.device_id:
            return False
        since = max(a.started_at, b.started_at)
        return envelope_similarity(a.levels, b.levels, self.max_lag, since=since) >= self.similarity

    def _resolve_group(self, first: Claim) -> None:
        window = [c for c in self.pending if c.started_at - first.started_at <= self.window_s]
        group = [first]
        for c in window:  # grow the group: anything similar to a member is the same speech
            if c is not first and any(self._similar(c, m) for m in group):
                group.append(c)
        for c in group:
            self.pending.remove(c)
        if len(window) > len(group):
            self.stats.separate += 1
        beaten_by = next((w for w in self._recent_winners if any(self._similar(w, c) for c in group)), None)
        if beaten_by is not None:
            for c in group:
                c.beaten_by = beaten_by
                self._resolve(c, ClaimState.LOST, f"{beaten_by.device_id} already answers this speech")
            return
        best = group[0]
        for c in group[1:]:
            if c.snr_db > best.snr_db + self.tie_db or (
                abs(c.snr_db - best.snr_db) <= self.tie_db and c.started_at < best.started_at
            ):
                best = c
        for c in group:
            if c is best:
                why = f"best of {len(group)} (snr {c.snr_db:.1f} dB)" if len(group) > 1 else "alone in its window"
                self._resolve(c, ClaimState.WON, why)
            else:
                c.beaten_by = best
                self._resolve(c, ClaimState.LOST, f"{best.device_id} heard it better ({best.snr_db:.1f} dB snr)")

    def _resolve(self, claim: Claim, state: ClaimState, reason: str) -> None:
        claim.state = state
        claim.reason = reason
        if state is ClaimState.WON:
            self.stats.won += 1
            self._recent_winners.append(claim)
        else:
            self.stats.lost += 1
            claim.checked_at = self._now  # the poll's time: sessions poll on their capture clock
            self._standing_down.append(claim)
        if claim.on_resolved is not None:
            claim.on_resolved(claim)
