"""Arbitration decisions on captures built from real speech envelopes, on a controllable clock (no sleeps)."""

from __future__ import annotations

import functools
import random

import pytest

from hub.arbitration import FRAME_S, Arbiter, Claim, ClaimState, envelope_similarity
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


def run(arbiter: Arbiter, clock: Clock, caps: dict[str, tuple[float, list[tuple[float, float]]]]) -> dict[str, Claim]:
    """Feed the captures frame by frame in hub-clock order, as the sessions would."""
    claims: dict[str, Claim] = {}
    events = sorted((t, dev, db) for dev, (_, lv) in caps.items() for t, db in lv)
    seen: dict[str, list[tuple[float, float]]] = {d: [] for d in caps}
    for t, dev, db in events:
        clock.t = t
        start = caps[dev][0]
        if dev not in claims and t >= start + 2 * FRAME_S:  # onset confirmed after 3 voiced frames
            claims[dev] = arbiter.claim(dev, start, seen[dev], onset_frames=3)
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
    assert c.state is ClaimState.PENDING
    arbiter.poll(t0 + 0.2)  # alone: the window is all it waits for
    assert c.state is ClaimState.WON


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


def test_similarity_is_high_for_a_delayed_copy_and_low_for_other_speech() -> None:
    env = speech(8)
    _, a = capture(env, start=0.0, gain_db=0, noise_db=-60, delay_s=0.0, seed=1)
    _, b = capture(env, start=0.0, gain_db=-10, noise_db=-55, delay_s=0.04, seed=2)
    _, c = capture(speech(9), start=0.0, gain_db=0, noise_db=-60, delay_s=0.0, seed=3)
    assert envelope_similarity(a, b, since=0.04) > 0.8
    assert envelope_similarity(a, c, since=0.0) < 0.6
    assert envelope_similarity(a[:3], b[:3]) == -1.0  # too little overlap to judge


def test_a_device_stood_down_on_leaked_speech_is_let_through_when_its_own_person_talks() -> None:
    clock = Clock()
    arbiter = Arbiter(clock=clock)
    a_env, b_env = speech(30, frames=60), speech(31, frames=45)
    t_kitchen, kitchen = capture(a_env, start=1.0, gain_db=0, noise_db=-60, delay_s=0.0, seed=20)
    # The bedroom first hears the kitchen through the wall, then its own person from t=1.3.
    _, leak = capture(a_env, start=1.0, gain_db=-22, noise_db=-60, delay_s=0.02, seed=21)
    own = {round(t / FRAME_S): db for t, db in capture(b_env, start=1.3, gain_db=0, noise_db=-90, delay_s=0.0)[1]}
    bedroom = [(t, max(db, own.get(round(t / FRAME_S), -120.0))) for t, db in leak]
    claims = run(arbiter, clock, {"kitchen": (t_kitchen, kitchen), "bedroom": (1.02, bedroom)})
    assert claims["kitchen"].state is ClaimState.WON
    assert claims["bedroom"].state is ClaimState.WON and "own speech" in claims["bedroom"].reason
    assert arbiter.stats.lost == 1 and arbiter.stats.reclaimed == 1
