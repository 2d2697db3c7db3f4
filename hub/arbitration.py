"""Which device answers when several hear one person: pick the best capture, stand the others down.

With a device in every room, one sentence often reaches two or three microphones. Without
arbitration each device's VAD opens its own utterance and the assistant answers two or three
times, from the wrong rooms too. But two people talking in two rooms at about the same time
must both be answered at once, so a claim is stood down only on evidence that it is the same
speech, never for starting at the same moment.

A session whose VAD confirms an onset *claims* the utterance here instead of sending START;
the claim stays pending for ``window_s`` (other devices' onsets for the same speech land inside
it) and until every onset in that window has ``compare_s`` of speech to compare. Then, from the
best capture down (speech over the device's own noise; ties within ``tie_db`` go to the device
that started first; a device that heard the wake word before one that did not):

* the evidence is :func:`level_mismatch`: how far one capture's frame levels are from the other's,
  attenuated by one constant gain, masked by its own room noise and sustained by its room's
  reverberation, at the best lag up to ``max_lag_s``, from the earlier onset on. One sound heard
  in two rooms differs by a gain (1-3 dB of error); two people differ by 5-20 dB, above all where
  one is talking and the other is not yet;
* a claim that matches a better one or a winner (error <= ``same_db``, once it has ``min_voiced``
  frames of its own speech) loses; one that differs from all of them (>= ``different_db``) wins;
  in between it waits for more speech, at most until ``decide_s`` after its onset, then the
  midpoint decides. The best capture never waits on the worse ones. Winners count while their
  utterance is open (or for ``recent_s`` after their onset), so a late copy loses too;
* a lost claim is re-checked every ``recheck_s`` over its last ``recheck_span_s``: once it is
  well apart from the capture it lost to (>= ``release_db``), plainly apart from every other
  winner (>= ``others_db``) and not the sum of two of them (:func:`mixture_excess`, a device
  between two talkers), its own person started talking after another room's speech leaked in,
  and it wins after all.

Figures for these settings: docs/benchmarks.md "Arbitration" (bench/arbitration.py).

With HUB_LISTENING_MODE=wake_word a claim made after the device heard the wake word is never
stood down in favour of one that did not. Only with one live device does a claim win at once,
so a single-device home pays nothing. Pure logic on an injected clock: sessions feed frame
levels and call :meth:`Arbiter.poll` on each frame (every live WebRTC stream delivers one every
20 ms).
"""

from __future__ import annotations

import bisect
import enum
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

FRAME_S = 0.02
FLOOR_DBFS = -80.0  # digital silence would otherwise dominate the comparison
VOICED_DB = 6.0  # a frame this far over the device's noise carries speech worth fitting a gain to
REVERB_DB_PER_FRAME = 2.5  # a living room's decay (RT60 ~0.5 s: 60 dB in 25 frames)
HOLD_FRAMES = 12  # frames before a comparison that can still sustain its first frames (30 dB of decay)
COMPARE_SPAN_S = 1.0  # the most of two captures compared at once (cost stays flat in long utterances)


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
    woke: bool = False  # the device heard the wake word for this utterance
    beaten_by: Claim | None = None
    checked_at: float = 0.0  # when a lost claim was last compared with the winners again
    closed: bool = False  # withdrawn: its utterance ended
    _noise: float | None = None

    def feed(self, at: float, level_db: float) -> None:
        self.levels.append((at, max(FLOOR_DBFS, level_db)))

    @property
    def noise_db(self) -> float:
        """The room's noise at this device: the lower quartile of the pre-roll frames."""
        if self._noise is None:
            before = sorted(db for t, db in self.levels if t < self.started_at - 1e-9)
            self._noise = before[len(before) // 4] if before else FLOOR_DBFS
        return self._noise

    @property
    def voiced_frames(self) -> int:
        """Frames since the onset that carry speech (over the noise by VOICED_DB): the evidence so far."""
        floor = self.noise_db + VOICED_DB
        return sum(1 for t, db in self.levels if t >= self.started_at - 1e-9 and db > floor)

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


def _slots(levels: Sequence[tuple[float, float]], since: float) -> tuple[dict[int, float], dict[int, float]]:
    """Levels on the 20 ms grid from ``since`` on, raw and as a room's reverberation would sustain them.

    A far device hears the speech mostly as reverberation, which decays by about
    ``REVERB_DB_PER_FRAME`` instead of stopping with the talker: predicting it from a near capture
    uses the near levels held up by that decay, or every pause reads as a mismatch.
    """
    raw: dict[int, float] = {}
    held: dict[int, float] = {}
    prev: tuple[int, float] | None = None
    # Levels are in time order: skip to shortly before ``since`` (a long utterance's older frames
    # cannot sustain the tail by more than those frames' decay), so a comparison costs the same
    # however long the claim has been open.
    first = bisect.bisect_left(levels, since - HOLD_FRAMES * FRAME_S, key=lambda lv: lv[0]) if since > -math.inf else 0
    for t, db in levels[first:]:
        s = round(t / FRAME_S)
        h = db if prev is None or s != prev[0] + 1 else max(db, prev[1] - REVERB_DB_PER_FRAME)
        prev = (s, h)
        if t >= since - 1e-9:
            raw[s], held[s] = db, h
    return raw, held


def _outside(level: float, noise: float, dry: float, reverberant: float) -> float:
    """How far (dB) ``level`` lies outside what the other capture predicts for it: at least the dry
    sound over this room's noise, at most that sound with the room's reverberation sustaining it."""
    low, high = _power_sum(noise, dry), _power_sum(noise, reverberant)
    return level - low if level < low else level - high if level > high else 0.0


def _power_sum(a_db: float, b_db: float) -> float:
    hi, lo = max(a_db, b_db), min(a_db, b_db)
    return hi + 10 * math.log10(1 + 10 ** ((lo - hi) / 10))


def level_mismatch(
    a: Sequence[tuple[float, float]],
    b: Sequence[tuple[float, float]],
    noise_a: float,
    noise_b: float,
    *,
    since: float,
    max_lag: int = 3,
) -> float | None:
    """RMS error (dB) of explaining one capture as the other one heard through a constant gain.

    Frames at or after ``since`` on the 20 ms grid, at the best lag up to ``max_lag`` frames. The
    gain is the median level difference over frames where both carry speech; the quieter capture
    is then predicted as the louder one attenuated by it, power-summed with its own noise floor
    (speech quieter than the room's noise is masked, not missing). Callers pass the *earlier*
    onset as ``since``: one person's speech starts in every room at once, two people's do not,
    and the frames where one talks and the other is still silent are the strongest evidence.
    None when the captures share fewer than 5 frames; infinity when they share no speech frames.
    """
    slots_a, held_a = _slots(a, since)
    slots_b, held_b = _slots(b, since)
    best: float | None = None
    for lag in range(-max_lag, max_lag + 1):
        common = [s for s in slots_a if s + lag in slots_b]
        if len(common) < 5:
            continue
        diffs = sorted(
            slots_b[s + lag] - slots_a[s]
            for s in common
            if slots_a[s] > noise_a + VOICED_DB and slots_b[s + lag] > noise_b + VOICED_DB
        )
        if len(diffs) < 3:
            best = math.inf if best is None else best
            continue
        gain = diffs[len(diffs) // 2]
        if gain <= 0:  # b is the quieter capture: b ~ a + gain over b's noise
            errors = [_outside(slots_b[s + lag], noise_b, slots_a[s] + gain, held_a[s] + gain) for s in common]
        else:
            errors = [_outside(slots_a[s], noise_a, slots_b[s + lag] - gain, held_b[s + lag] - gain) for s in common]
        rms = math.sqrt(sum(e * e for e in errors) / len(errors))
        best = rms if best is None else min(best, rms)
    return best


def mixture_excess(
    c: Sequence[tuple[float, float]],
    noise_c: float,
    sources: Sequence[tuple[Sequence[tuple[float, float]], float]],
    *,
    since: float,
    max_lag: int = 3,
) -> float | None:
    """RMS (dB) of how far capture ``c`` rises above what the ``sources`` (levels, noise) explain together.

    A device between two rooms hears both people at once: no single winner explains its levels,
    their sum does. Each source gets its own lag and gain; the gain is a low quantile of the level
    difference over the source's speech frames, because the mix is never quieter than any one of
    its parts (frames where another source adds to it only push the difference up). Only rises
    above the prediction count. None when a source shares too few frames with ``c``.
    """
    slots_c, _ = _slots(c, since)
    fitted: list[dict[int, float]] = []
    for levels, noise in sources:
        slots, held = _slots(levels, since - max_lag * FRAME_S)
        best: tuple[float, dict[int, float]] | None = None
        for lag in range(-max_lag, max_lag + 1):
            diffs = sorted(
                y - slots[s + lag] for s, y in slots_c.items() if slots.get(s + lag, -math.inf) > noise + VOICED_DB
            )
            if len(diffs) < 3:
                continue
            gain = diffs[len(diffs) // 10]
            shifted = {s: held[s + lag] + gain for s in slots_c if s + lag in slots}
            error = sum(max(0.0, slots_c[s] - _power_sum(noise_c, v)) ** 2 for s, v in shifted.items())
            if best is None or error < best[0]:
                best = (error, shifted)
        if best is None:
            return None
        fitted.append(best[1])
    errors = []
    for s, y in slots_c.items():
        power = 10 ** (noise_c / 10) + sum(10 ** (f[s] / 10) for f in fitted if s in f)
        errors.append(max(0.0, y - 10 * math.log10(power)))
    return math.sqrt(sum(e * e for e in errors) / len(errors)) if len(errors) >= 5 else None


@dataclass
class ArbiterStats:
    claims: int = 0
    immediate: int = 0  # won at once: the only live device
    won: int = 0
    lost: int = 0
    separate: int = 0  # claims won although another device's claim overlapped: different speech
    waited: int = 0  # claims that needed more speech than compare_s to decide
    reclaimed: int = 0  # stood down, then let through: different speech after all


class Arbiter:
    """Resolves overlapping claims; see the module doc."""

    def __init__(
        self,
        *,
        window_s: float = 0.2,
        compare_s: float = 0.16,
        same_db: float = 2.0,
        different_db: float = 6.0,
        decide_s: float = 0.6,
        max_lag_s: float = 0.06,
        tie_db: float = 1.0,
        recent_s: float = 1.0,
        recheck_s: float = 0.1,
        recheck_span_s: float = 0.5,
        release_db: float = 8.0,
        mixture_release_db: float = 6.0,
        min_voiced: int = 15,
        others_db: float = 4.0,
        live_devices: Callable[[], int] = lambda: 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.compare_s = compare_s
        self.same_db = same_db
        self.different_db = different_db
        self.decide_s = decide_s
        self.max_lag = max(0, round(max_lag_s / FRAME_S))
        self.tie_db = tie_db
        self.recent_s = recent_s
        self.recheck_s = recheck_s
        self.recheck_span_s = recheck_span_s
        self.release_db = release_db
        self.mixture_release_db = mixture_release_db
        self.min_voiced = min_voiced
        self.others_db = others_db
        self._live_devices = live_devices
        self._clock = clock
        self.pending: list[Claim] = []  # not yet compared (their window is open)
        self._undecided: list[Claim] = []  # compared, but the evidence was not clear yet
        self._now = 0.0
        self._undecided_at = -math.inf
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
        *,
        woke: bool = False,
    ) -> Claim:
        """Open a claim with the levels heard so far (pre-roll + onset). May resolve at once."""
        c = Claim(device_id, started_at, onset_frames, on_resolved=on_resolved, woke=woke)
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
        claim.closed = True
        for tracked in (self.pending, self._undecided, self._standing_down):
            if claim in tracked:
                tracked.remove(claim)

    def poll(self, now: float | None = None) -> None:
        """Resolve every claim whose window has passed (and undecided ones with enough evidence)."""
        now = self._clock() if now is None else now
        self._now = now
        # A winner whose utterance is still open keeps standing down copies of it, however late a
        # quiet device's VAD confirms one (a soft first syllable can take a second there).
        self._recent_winners = [w for w in self._recent_winners if not w.closed or now - w.started_at <= self.recent_s]
        self._recheck(now)
        if self._undecided and now - self._undecided_at >= FRAME_S / 2:  # every session polls: once a frame
            self._undecided_at = now
            self._decide(list(self._undecided), now)
        while self.pending:
            first = min(self.pending, key=lambda c: c.started_at)
            if now < first.started_at + self.window_s:
                return
            # Every candidate needs some speech of its own before captures can be compared.
            window = [c for c in self.pending if c.started_at - first.started_at <= self.window_s]
            if now < max(c.started_at for c in window) + self.compare_s:
                return
            for c in window:
                self.pending.remove(c)
            self._decide(window, now)

    def _mismatch(self, a: Claim, b: Claim, span_s: float | None = None) -> float | None:
        since = min(a.started_at, b.started_at) if span_s is None else self._now - span_s
        since = max(since, self._now - COMPARE_SPAN_S)
        return level_mismatch(a.levels, b.levels, a.noise_db, b.noise_db, since=since, max_lag=self.max_lag)

    def _mixture(self, c: Claim, sources: list[Claim], span_s: float | None = None) -> float | None:
        since = min(c.started_at, *(w.started_at for w in sources)) if span_s is None else self._now - span_s
        since = max(since, self._now - COMPARE_SPAN_S)
        return mixture_excess(
            c.levels, c.noise_db, [(w.levels, w.noise_db) for w in sources], since=since, max_lag=self.max_lag
        )

    def _best_first(self, claims: list[Claim]) -> list[Claim]:
        """Woken devices first, then by speech over noise (ties within tie_db to the earlier start)."""
        rest = sorted(claims, key=lambda c: (not c.woke, -c.snr_db, c.started_at))
        ordered: list[Claim] = []
        while rest:
            best = rest[0]
            for c in rest[1:]:
                if (
                    c.woke == best.woke
                    and abs(c.snr_db - best.snr_db) <= self.tie_db
                    and c.started_at < best.started_at
                ):
                    best = c
            rest.remove(best)
            ordered.append(best)
        return ordered

    def _decide(self, claims: list[Claim], now: float) -> None:
        """Judge each claim against the better ones and the recent winners, best first."""
        ahead: list[Claim] = [w for w in self._recent_winners]
        ranked = self._best_first([*claims, *(u for u in self._undecided if u not in claims)])
        for c in ranked:
            rivals = [r for r in ahead if r.device_id != c.device_id and (r.woke or not c.woke)]
            ahead.append(c)
            if c.state is not ClaimState.PENDING:
                continue
            if c not in claims:  # an undecided claim not up for judging now still ranks ahead of worse ones
                continue
            errors = [(e, r) for r in rivals if (e := self._mismatch(c, r)) is not None]
            closest = min(errors, key=lambda er: er[0], default=None)
            late = now >= c.started_at + self.decide_s
            cut = (self.same_db + self.different_db) / 2 if late else self.same_db
            enough = late or c.voiced_frames >= self.min_voiced
            if closest is None:
                self._settle(c)
                self._resolve(
                    c, ClaimState.WON, "alone in its window" if len(ranked) == 1 else f"best of {len(ranked)}"
                )
            elif closest[0] <= cut and enough:
                error, rival = closest
                while rival.state is ClaimState.LOST and rival.beaten_by is not None:
                    rival = rival.beaten_by  # matched a capture that is itself stood down: name the winner
                c.beaten_by = rival
                self._settle(c)
                why = "already answers" if rival.state is ClaimState.WON and rival not in claims else "heard it better"
                self._resolve(c, ClaimState.LOST, f"{rival.device_id} {why} (levels within {error:.1f} dB)")
            elif closest[0] >= self.different_db or late:
                self._settle(c)
                self.stats.separate += 1
                self._resolve(
                    c, ClaimState.WON, f"other speech than {closest[1].device_id} ({closest[0]:.1f} dB apart)"
                )
            elif c not in self._undecided:
                self.stats.waited += 1
                self._undecided.append(c)

    def _settle(self, c: Claim) -> None:
        if c in self._undecided:
            self._undecided.remove(c)

    def _recheck(self, now: float) -> None:
        """A device stood down on leaked speech may then hear its own person: let it through.

        A second person who starts talking in another room while the first is speaking is
        first heard as the first one's leak. Once the loser's recent levels no longer follow
        any winner's and it is well above its own noise, it wins after all.
        """
        for c in list(self._standing_down):
            if now - c.checked_at < self.recheck_s or c.beaten_by is None:
                continue
            c.checked_at = now
            since = now - self.recheck_span_s
            recent = [db for t, db in c.levels if t >= since]
            if len(recent) < 5 or sum(recent) / len(recent) < c.noise_db + 10:
                continue
            # Compared with every device answering now, not only the one it lost to: a third
            # device hearing both people must not pass for a third speaker.
            others = {id(w): w for w in [c.beaten_by, *self._recent_winners] if w.device_id != c.device_id}
            errors = [(e, w) for w in others.values() if (e := self._mismatch(c, w, self.recheck_span_s)) is not None]
            lost_to = next((e for e, w in errors if w is c.beaten_by), math.inf)
            closest = sorted(errors, key=lambda ew: ew[0])
            # Well apart from the capture it lost to, plainly apart from every other winner, and
            # not the sum of two of them.
            if lost_to < self.release_db or (closest and closest[0][0] < self.others_db):
                continue
            if len(closest) >= 2:
                mixed = self._mixture(c, [w for _, w in closest[:2]], self.recheck_span_s)
                if mixed is not None and mixed < self.mixture_release_db:
                    continue
            self._standing_down.remove(c)
            self.stats.reclaimed += 1
            self._resolve(c, ClaimState.WON, f"own speech after all ({lost_to:.1f} dB from {c.beaten_by.device_id})")

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
