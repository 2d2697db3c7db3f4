"""Arbitration decisions on captures built from real speech (espeak-ng), on a controllable clock (no sleeps).

Most cases use speech envelopes with a gain, a delay and a noise floor; the ones named "rooms"
render each microphone's samples as bench/arbitration.py does: several voices and sentences,
room reverberation and noise.
"""

from __future__ import annotations

import functools
import random

import pytest

from bench.arbitration import Device, Source
from bench.arbitration import speech as spoken
from hub.arbitration import FRAME_S, Arbiter, Claim, ClaimState, level_mismatch
from shared.audio import HUB_RATE, espeak, rms_dbfs

pytestmark = pytest.mark.unit


PHRASES = [
    "What is the weather like today?",
    "Turn off the kitchen lights.",
    "How many legs does a spider have?",
    "Set a timer for ten minutes.",
    "Play some music in the living room.",
    "Who wrote Romeo and Juliet?",
]


@functools.cache
def _envelope(phrase: str) -> tuple[float, ...]:
    audio = espeak(phrase)
    frame = HUB_RATE // 50
    return tuple(rms_dbfs(audio[i : i + frame]) for i in range(0, audio.size - frame + 1, frame))


def speech(seed: int, frames: int = 40) -> list[float]:
    """A real speech envelope (espeak-ng), from its first voiced frame; another phrase per seed."""
    env = _envelope(PHRASES[seed % len(PHRASES)])
    first = next(i for i, db in enumerate(env) if db > -45)
    return list(env[first : first + frames])


def capture(env: list[float], *, start: float, gain_db: float, noise_db: float, delay_s: float,
            preroll: int = 10, seed: int = 0) -> tuple[float, list[tuple[float, float]]]:
    """What a device hears: the room's noise for ``preroll`` frames, then the speech, all on the hub clock."""
    rng = random.Random(seed)
    t0 = start + delay_s
    levels = [(t0 - (preroll - i) * FRAME_S, noise_db + rng.uniform(-1, 1)) for i in range(preroll)]
    levels += [(t0 + i * FRAME_S, max(noise_db, db + gain_db) + rng.uniform(-0.5, 0.5)) for i, db in enumerate(env)]
    return t0, levels


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def run(arbiter: Arbiter, clock: Clock, caps: dict[str, tuple[float, list[tuple[float, float]]]],
        woke: frozenset[str] = frozenset(), decided: dict[str, float] | None = None) -> dict[str, Claim]:
    """Feed the captures frame by frame in hub-clock order, as the sessions would.

    ``decided`` gets each claim's first decision time (the frame clock's time when it resolved).
    """
    claims: dict[str, Claim] = {}
    times: dict[str, float] = {} if decided is None else decided

    def resolved(c: Claim) -> None:
        times.setdefault(c.device_id, clock.t)

    events = sorted((t, dev, db) for dev, (_, lv) in caps.items() for t, db in lv)
    seen: dict[str, list[tuple[float, float]]] = {d: [] for d in caps}
    for t, dev, db in events:
        clock.t = t
        start = caps[dev][0]
        if dev not in claims and t >= start + 2 * FRAME_S:  # onset confirmed after 3 voiced frames
            claims[dev] = arbiter.claim(dev, start, seen[dev], onset_frames=3, woke=dev in woke, on_resolved=resolved)
        if dev in claims:
            claims[dev].feed(t, db)
        else:
            seen[dev].append((t, db))
        arbiter.poll()
    return claims


def test_one_utterance_two_devices_the_louder_one_answers() -> None:
    clock = Clock()
    arbiter = Arbiter(clock=clock)
    env = speech(1)
    claims = run(arbiter, clock, {
        "kitchen": capture(env, start=1.0, gain_db=0, noise_db=-60, delay_s=0.0, seed=1),
        "hall": capture(env, start=1.0, gain_db=-12, noise_db=-60, delay_s=0.03, seed=2),
    })
    assert claims["kitchen"].state is ClaimState.WON
    assert claims["hall"].state is ClaimState.LOST and "kitchen" in claims["hall"].reason
    assert arbiter.stats.won == 1 and arbiter.stats.lost == 1


def test_the_better_capture_wins_even_when_it_starts_later() -> None:
    clock = Clock()
    arbiter = Arbiter(clock=clock)
    env = speech(2)
    claims = run(arbiter, clock, {
        "near": capture(env, start=1.0, gain_db=0, noise_db=-65, delay_s=0.05, seed=3),
        "far": capture(env, start=1.0, gain_db=-15, noise_db=-60, delay_s=0.0, seed=4),
    })
    assert claims["near"].state is ClaimState.WON and claims["far"].state is ClaimState.LOST


def test_ties_go_to_the_device_that_started_first() -> None:
    clock = Clock()
    arbiter = Arbiter(clock=clock)
    env = speech(3)
    claims = run(arbiter, clock, {
        "a": capture(env, start=1.0, gain_db=0, noise_db=-60, delay_s=0.04, seed=5),
        "b": capture(env, start=1.0, gain_db=0, noise_db=-60, delay_s=0.0, seed=6),
    })
    assert claims["b"].state is ClaimState.WON and claims["a"].state is ClaimState.LOST


def test_two_people_in_two_rooms_at_once_are_both_answered() -> None:
    clock = Clock()
    arbiter = Arbiter(clock=clock)
    claims = run(arbiter, clock, {
        "kitchen": capture(speech(10, frames=80), start=1.0, gain_db=0, noise_db=-60, delay_s=0.0, seed=7),
        "bedroom": capture(speech(20, frames=80), start=1.0, gain_db=-3, noise_db=-60, delay_s=0.05, seed=8),
    })
    assert claims["kitchen"].state is ClaimState.WON and claims["bedroom"].state is ClaimState.WON
    # Told apart at once, or (the first 160 ms of two phrases can look alike) soon after.
    assert arbiter.stats.separate + arbiter.stats.reclaimed >= 1


def test_three_devices_one_utterance_exactly_one_wins() -> None:
    clock = Clock()
    arbiter = Arbiter(clock=clock, live_devices=lambda: 3)
    env = speech(4)
    claims = run(arbiter, clock, {
        "a": capture(env, start=1.0, gain_db=-6, noise_db=-60, delay_s=0.02, seed=9),
        "b": capture(env, start=1.0, gain_db=0, noise_db=-62, delay_s=0.06, seed=10),
        "c": capture(env, start=1.0, gain_db=-18, noise_db=-58, delay_s=0.0, seed=11),
    })
    assert [d for d, c in claims.items() if c.state is ClaimState.WON] == ["b"]


def test_a_single_live_device_wins_at_once_without_waiting() -> None:
    clock = Clock()
    resolved: list[Claim] = []
    arbiter = Arbiter(clock=clock, live_devices=lambda: 1)
    t0, levels = capture(speech(5), start=1.0, gain_db=0, noise_db=-60, delay_s=0.0)
    c = arbiter.claim("solo", t0, levels[:13], onset_frames=3, on_resolved=resolved.append)
    assert c.state is ClaimState.WON and resolved == [c] and arbiter.stats.immediate == 1


def test_nothing_is_decided_before_the_window_ends() -> None:
    clock = Clock()
    arbiter = Arbiter(clock=clock, window_s=0.2)
    t0, levels = capture(speech(6), start=1.0, gain_db=0, noise_db=-60, delay_s=0.0)
    c = arbiter.claim("a", t0, levels[:13], onset_frames=3)
    arbiter.poll(t0 + 0.19)
    before = c.state
    arbiter.poll(t0 + 0.2)  # alone: the window is all it waits for
    assert (before, c.state) == (ClaimState.PENDING, ClaimState.WON)


def test_a_late_copy_of_speech_already_answered_loses() -> None:
    clock = Clock()
    arbiter = Arbiter(clock=clock)
    env = speech(7)
    # The garage hears the same speech at the same moment, but its VAD confirms the onset only
    # 250 ms later (the first syllables were too quiet there): past the kitchen's window.
    _, garage = capture(env, start=1.0, gain_db=-20, noise_db=-60, delay_s=0.0, seed=13)
    claims = run(arbiter, clock, {
        "kitchen": capture(env, start=1.0, gain_db=0, noise_db=-60, delay_s=0.0, seed=12),
        "garage": (1.25, garage),
    })
    assert claims["kitchen"].state is ClaimState.WON
    assert claims["garage"].state is ClaimState.LOST and "already answers" in claims["garage"].reason


def test_level_mismatch_is_small_for_a_delayed_copy_and_large_for_other_speech() -> None:
    env = speech(8)
    _, a = capture(env, start=0.0, gain_db=0, noise_db=-60, delay_s=0.0, seed=1)
    _, b = capture(env, start=0.0, gain_db=-10, noise_db=-55, delay_s=0.04, seed=2)
    _, c = capture(speech(9), start=0.0, gain_db=0, noise_db=-60, delay_s=0.0, seed=3)
    assert (same := level_mismatch(a, b, -60, -55, since=0.0)) is not None and same < 1.5
    assert (other := level_mismatch(a, c, -60, -60, since=0.0)) is not None and other > 6
    assert level_mismatch(a[:3], b[:3], -60, -55, since=-1.0) is None  # too little overlap to judge


def test_a_device_stood_down_on_leaked_speech_is_let_through_when_its_own_person_talks() -> None:
    clock = Clock()
    arbiter = Arbiter(clock=clock)
    a_env, b_env = speech(30, frames=90), speech(31, frames=45)
    t_kitchen, kitchen = capture(a_env, start=1.0, gain_db=0, noise_db=-60, delay_s=0.0, seed=20)
    # The bedroom first hears the kitchen through the wall (and is stood down on it), then its own
    # person from t=1.9.
    _, leak = capture(a_env, start=1.0, gain_db=-22, noise_db=-60, delay_s=0.02, seed=21)
    own = {round(t / FRAME_S): db for t, db in capture(b_env, start=1.9, gain_db=0, noise_db=-90, delay_s=0.0)[1]}
    bedroom = [(t, max(db, own.get(round(t / FRAME_S), -120.0))) for t, db in leak]
    claims = run(arbiter, clock, {"kitchen": (t_kitchen, kitchen), "bedroom": (1.02, bedroom)})
    assert claims["kitchen"].state is ClaimState.WON
    assert claims["bedroom"].state is ClaimState.WON and "own speech" in claims["bedroom"].reason
    assert arbiter.stats.lost == 1 and arbiter.stats.reclaimed == 1


def rooms(mics: dict[str, tuple[float, list[Source]]], seed: int) -> dict[str, tuple[float, list[tuple[float, float]]]]:
    """Each microphone's frame levels from rendered audio, and its onset (3 frames 10 dB over its noise)."""
    rng = random.Random(seed)
    seconds = max(s.delay_s + s.audio.size / HUB_RATE for _, srcs in mics.values() for s in srcs) + 0.8
    caps = {}
    for name, (noise_db, sources) in mics.items():
        dev = Device(noise_db, sources)
        dev.render(seconds, rng)
        lv = dev.levels
        onset = next(i for i in range(2, len(lv)) if all(lv[k] > noise_db + 10 for k in (i - 2, i - 1, i))) - 2
        caps[name] = (onset * FRAME_S, [(i * FRAME_S, db) for i, db in enumerate(lv)])
    return caps


TWO_ROOMS = [  # (sentence, voice) in one room, (sentence, voice) in the other, the second onset's offset
    ((0, "en-us"), (1, "en-gb"), 0.0),
    ((2, "en-us+f3"), (3, "en-gb-scotland"), 0.04),
    ((4, "en-029"), (5, "en-us-nyc"), 0.1),
    ((6, "en-gb-x-rp"), (7, "en-us"), 0.2),
    ((8, "en-gb+f2"), (9, "en-029"), 0.02),
    ((1, "en-us-nyc"), (2, "en-gb"), 0.3),
]


@pytest.mark.parametrize(("first", "second", "offset"), TWO_ROOMS)
def test_rooms_two_people_talking_at_once_are_both_answered_without_a_stand_down(
    first: tuple[int, str], second: tuple[int, str], offset: float
) -> None:
    a, b = spoken(*first), spoken(*second)
    caps = rooms({
        # Each room hears its own person (reverberant) and the other one faintly through the walls.
        "kitchen": (-58, [Source(a, 0, 0.5, 0.4, 6), Source(b, -36, 0.51 + offset, 0.5, -4)]),
        "bedroom": (-55, [Source(b, -2, 0.5 + offset, 0.3, 6), Source(a, -38, 0.52, 0.5, -4)]),
    }, seed=len(first[1]))
    clock = Clock()
    arbiter = Arbiter(clock=clock)
    decided: dict[str, float] = {}
    claims = run(arbiter, clock, caps, decided=decided)
    assert {d: c.state for d, c in claims.items()} == {"kitchen": ClaimState.WON, "bedroom": ClaimState.WON}
    assert arbiter.stats.lost == 0, [c.reason for c in claims.values()]
    for device, (start, _) in caps.items():  # held at most decide_s, on the frame clock
        assert decided[device] - start <= arbiter.decide_s + FRAME_S


ONE_VOICE = [(2, "en-us"), (5, "en-gb-scotland"), (7, "en-us+f3")]


@pytest.mark.parametrize(("sentence", "voice"), ONE_VOICE)
def test_rooms_one_person_heard_by_three_devices_is_answered_once_by_the_nearest(sentence: int, voice: str) -> None:
    audio = spoken(sentence, voice)
    caps = rooms({
        "kitchen": (-60, [Source(audio, 0, 0.5, 0.4, 6)]),  # the person stands here
        "hall": (-56, [Source(audio, -14, 0.53, 0.5, -4)]),  # through an open door: reverberant
        "study": (-52, [Source(audio, -24, 0.555, 0.6, -6)]),  # farther, noisier
    }, seed=sentence)
    clock = Clock()
    arbiter = Arbiter(clock=clock, live_devices=lambda: 3)
    decided: dict[str, float] = {}
    claims = run(arbiter, clock, caps, decided=decided)
    assert claims["kitchen"].state is ClaimState.WON
    assert decided["kitchen"] - caps["kitchen"][0] <= 0.4  # the best capture never waits on the worse ones
    losers = {d: c for d, c in claims.items() if d != "kitchen"}
    assert losers and all(c.state is ClaimState.LOST for c in losers.values()), [c.reason for c in losers.values()]
    assert arbiter.stats.reclaimed == 0


def test_a_device_that_heard_the_wake_word_is_never_stood_down_for_one_that_did_not() -> None:
    clock = Clock()
    arbiter = Arbiter(clock=clock)
    env = speech(2)
    # The living room (always listening) hears the question louder than the kitchen whose user
    # said the wake word: the kitchen answers all the same.
    claims = run(arbiter, clock, {
        "kitchen": capture(env, start=1.0, gain_db=-12, noise_db=-55, delay_s=0.03, seed=31),
        "living": capture(env, start=1.0, gain_db=0, noise_db=-62, delay_s=0.0, seed=32),
    }, woke=frozenset({"kitchen"}))
    assert claims["kitchen"].state is ClaimState.WON
    assert claims["living"].state is ClaimState.LOST and "kitchen" in claims["living"].reason


def test_between_devices_that_both_heard_the_wake_word_the_better_capture_answers() -> None:
    clock = Clock()
    arbiter = Arbiter(clock=clock)
    env = speech(4)
    claims = run(arbiter, clock, {
        "kitchen": capture(env, start=1.0, gain_db=-12, noise_db=-55, delay_s=0.03, seed=33),
        "living": capture(env, start=1.0, gain_db=0, noise_db=-62, delay_s=0.0, seed=34),
    }, woke=frozenset({"kitchen", "living"}))
    assert claims["living"].state is ClaimState.WON and claims["kitchen"].state is ClaimState.LOST
