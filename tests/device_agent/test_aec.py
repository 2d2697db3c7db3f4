"""Echo cancellation: ERLE after convergence, near-end speech kept in double talk, stream alignment."""

from __future__ import annotations

import numpy as np
import pytest

from device_agent.aec import EchoCancellerStream, NullEchoCanceller, SpeexEchoCanceller, make_echo_canceller
from device_agent.aec_eval import EchoScenario, erle_db, make_scenario, near_end_report, run_canceller
from shared.audio import Int16Array
from shared.config import AudioSettings, DeviceSettings, load

pytestmark = pytest.mark.unit

FAR_ONLY = (11.0, 15.0)  # the last seconds before the near end starts talking at 15 s


@pytest.fixture(scope="module")
def scenario() -> EchoScenario:
    # espeak speech through a 150 ms exponential-decay room + 30 ms delay, user talks at 15 s.
    return make_scenario(16_000, far_s=20.0, near_start_s=15.0, rt60_ms=150, delay_ms=30)


@pytest.mark.parametrize("noise_suppression", [False, True], ids=["linear", "with-preprocessor"])
def test_erle_after_convergence_and_near_end_kept(scenario: EchoScenario, noise_suppression: bool) -> None:
    aec = SpeexEchoCanceller(rate=16_000, frame_ms=10, filter_ms=200, noise_suppression=noise_suppression)
    out, _cpu = run_canceller(aec.process, scenario, aec.frame_size)
    w = scenario.far_only(*FAR_ONLY)
    erle = erle_db(scenario.mic[w], out[w])
    assert erle >= 20.0, f"ERLE {erle:.1f} dB"
    report = near_end_report(scenario, out)
    assert report.correlation > 0.9, report
    assert report.loss_db < 6.0, report
    aec.close()


def test_no_echo_cancellation_without_a_canceller(scenario: EchoScenario) -> None:
    """Sanity check of the measurement: passing the mic through gives ~0 dB."""
    null = NullEchoCanceller(rate=16_000)
    out, _ = run_canceller(null.process, scenario, null.frame_size)
    w = scenario.far_only(*FAR_ONLY)
    assert abs(erle_db(scenario.mic[w], out[w])) < 0.1


def test_ctypes_binding_matches_the_speexdsp_package(scenario: EchoScenario) -> None:
    pytest.importorskip("speexdsp")
    a = SpeexEchoCanceller(noise_suppression=False, engine="ctypes")
    b = SpeexEchoCanceller(noise_suppression=False, engine="package")
    n = 16_000 * 3
    for i in range(0, n, a.frame_size):
        m, r = scenario.mic[i : i + a.frame_size], scenario.far[i : i + a.frame_size]
        assert np.array_equal(a.process(m, r), b.process(m, r))


def test_stream_at_48k_keeps_mic_and_reference_aligned() -> None:
    """48 kHz blocks -> 16 kHz canceller -> 48 kHz: still converges (the two resamplers line up)."""
    sc = make_scenario(48_000, far_s=15.0, near_start_s=14.9)
    stream = EchoCancellerStream(SpeexEchoCanceller(noise_suppression=False), 48_000)
    block = 480
    outs = [stream.process(sc.mic[i : i + block], sc.far[i : i + block]) for i in range(0, sc.mic.size, block)]
    out = np.concatenate(outs)
    assert out.size == sc.mic.size  # FIR resamplers hold nothing back
    out = np.concatenate([out, np.zeros(sc.mic.size - out.size, np.int16)]) if out.size < sc.mic.size else out
    w = sc.far_only(10.5, 14.5)
    assert erle_db(sc.mic[w], out[w]) >= 20.0
    assert stream.frames == pytest.approx(15.0 * 100, abs=2)


class RecordingCanceller:
    name = "recording"

    def __init__(self, rate: int = 16_000, frame_size: int = 160) -> None:
        self.rate, self.frame_size = rate, frame_size
        self.mic: list[Int16Array] = []
        self.ref: list[Int16Array] = []

    def process(self, mic: Int16Array, ref: Int16Array) -> Int16Array:
        self.mic.append(mic)
        self.ref.append(ref)
        return mic

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_reference_delay_shifts_only_the_reference() -> None:
    rec = RecordingCanceller()
    stream = EchoCancellerStream(rec, 16_000, ref_delay_ms=25)
    x = np.zeros(16_000, np.int16)
    x[1000] = 10_000
    for i in range(0, x.size, 160):
        stream.process(x[i : i + 160], x[i : i + 160])
    mic, ref = np.concatenate(rec.mic), np.concatenate(rec.ref)
    assert int(np.argmax(mic)) == 1000
    assert int(np.argmax(ref)) == 1000 + 400


def test_null_canceller_passes_48k_audio_through_unchanged() -> None:
    stream = EchoCancellerStream(NullEchoCanceller(), 48_000)
    x = (np.random.default_rng(0).standard_normal(4800) * 3000).astype(np.int16)
    out = np.concatenate([stream.process(x[i : i + 480], np.zeros(480, np.int16)) for i in range(0, 4800, 480)])
    assert np.array_equal(out, x)


def test_settings_choose_the_canceller() -> None:
    dev = load(DeviceSettings, device_aec_frame_ms=20, device_aec_filter_ms=100)
    on = make_echo_canceller(dev, load(AudioSettings, audio_echo_cancellation=True, audio_noise_suppression=False))
    assert isinstance(on, SpeexEchoCanceller)
    assert (on.rate, on.frame_size, on.filter_length) == (16_000, 320, 1600)
    off = make_echo_canceller(dev, load(AudioSettings, audio_echo_cancellation=False))
    assert isinstance(off, NullEchoCanceller)


def test_wrong_frame_size_is_refused() -> None:
    aec = SpeexEchoCanceller(noise_suppression=False)
    with pytest.raises(ValueError):
        aec.process(np.zeros(100, np.int16), np.zeros(100, np.int16))
