"""The echo guard removes the canceller's convergence window and leaves the user's voice."""

from __future__ import annotations

import numpy as np
import pytest
import webrtcvad

from device_agent.aec import SpeexEchoCanceller
from device_agent.aec_eval import EchoScenario, make_scenario, run_canceller
from device_agent.echo_guard import EchoGuard
from shared.audio import Int16Array

pytestmark = pytest.mark.unit
RATE, BLOCK, VAD_FRAME = 16_000, 160, 320


def _cancel(sc: EchoScenario, guard: EchoGuard | None) -> Int16Array:
    aec = SpeexEchoCanceller(rate=RATE, frame_ms=10, filter_ms=200, noise_suppression=True)
    out, _ = run_canceller(aec.process, sc, BLOCK)
    if guard is None:
        return out
    guarded = np.zeros_like(out)
    for i in range(0, out.size - BLOCK + 1, BLOCK):
        guarded[i : i + BLOCK] = guard.process(out[i : i + BLOCK], sc.far[i : i + BLOCK], sc.mic[i : i + BLOCK])
    return guarded


def _longest_voiced_run(x: Int16Array, start: int, end: int) -> tuple[int, int]:
    vad = webrtcvad.Vad(3)
    run = best = total = 0
    for i in range(start, end - VAD_FRAME + 1, VAD_FRAME):
        voiced = vad.is_speech(x[i : i + VAD_FRAME].tobytes(), RATE)
        total += voiced
        run = run + 1 if voiced else 0
        best = max(best, run)
    return best, total


def test_no_echo_onset_reaches_the_hub_while_the_canceller_converges() -> None:
    sc = make_scenario(RATE, far_s=4.0, near_start_s=100.0)
    bare = _cancel(sc, None)
    guarded = _cancel(sc, EchoGuard(RATE))
    # Without the guard the first second of echo is a run the hub's barge-in (5 frames) takes.
    assert _longest_voiced_run(bare, 0, RATE)[0] >= 5
    assert _longest_voiced_run(guarded, 0, 3 * RATE)[0] < 5


def test_near_end_speech_during_the_guard_window_is_kept() -> None:
    sc = make_scenario(RATE, far_s=4.0, near_start_s=1.0)
    guarded = _cancel(sc, EchoGuard(RATE))
    span = (sc.near_start, sc.near_start + sc.near_len)
    _near_run, near_voiced = _longest_voiced_run(sc.near.astype(np.int16), *span)
    run, voiced = _longest_voiced_run(guarded, *span)
    assert run >= 5, "barge-in must still be possible"
    assert voiced >= 0.7 * near_voiced


def test_without_an_echo_path_the_guard_leaves_the_mic_alone() -> None:
    rng = np.random.default_rng(0)
    guard = EchoGuard(RATE)
    far = (rng.standard_normal(RATE * 2) * 3000).astype(np.int16)
    near = (rng.standard_normal(RATE * 2) * 1000).astype(np.int16)
    silent_mic = np.zeros_like(far)
    for i in range(0, far.size, BLOCK):  # far end plays, the mic hears nothing back
        guard.process(silent_mic[i : i + BLOCK], far[i : i + BLOCK], silent_mic[i : i + BLOCK])
    out = guard.process(near[:BLOCK], far[:BLOCK], near[:BLOCK])
    assert np.array_equal(out, near[:BLOCK])


def test_guard_switches_off_after_enough_far_end() -> None:
    guard = EchoGuard(RATE, converge_s=0.5)
    loud = np.full(BLOCK, 8000, dtype=np.int16)
    for _ in range(60):
        guard.process(loud, loud, loud)
    assert not guard.active
    assert np.array_equal(guard.process(loud, loud, loud), loud)
