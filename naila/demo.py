"""``naila demo``: the whole product on one machine, on embedded defaults.

Starts mosquitto (or uses ``--mqtt host:port``), the AI server with the shipped models, the
hub, and a device agent whose microphone is a WAV of "Okay Nabu." and a spoken question (piper), whose
speaker is recorded to a WAV and whose camera films a still photo (ultralytics' bus.jpg, when the
vision extra is installed): ``--question "What do you see?"`` is answered from that camera.
Prints the transcript, the reply, the per-stage latency of the turn and the recorded reply's
path; exits 0 when the assistant answered out loud.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import signal
import sys
import time
import types
from pathlib import Path

from naila.stack import Stack, new_workdir, wait_until


def demo_photo() -> Path | None:
    """ultralytics' bus.jpg, found without importing ultralytics (seconds of torch import)."""
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        return None
    photo = Path(next(iter(spec.submodule_search_locations))) / "assets" / "bus.jpg"
    return photo if photo.is_file() else None


def demo_camera_clip(photo: Path, path: Path, *, fps: int = 15, zoom_s: float = 3.0, hold_s: float = 57.0,
                     size: tuple[int, int] = (640, 480)) -> Path:
    """An H.264 clip (looped by the file camera) of the camera zooming out onto ``photo``'s street, then
    holding still. A still photo never moves, so the hub's motion gate sends only refreshes and no
    person ever "enters" the camera's zone: the zoom is motion, so YOLO sees the people for a few
    seconds (past the zone inertia) and a ``person_detected`` alert with a snapshot goes out; the
    minute-long hold keeps YOLO idle and alerts to one a loop (VISION_ALERT_DEDUP_S is 60 s)."""
    import av
    import cv2
    import numpy as np

    src = cv2.imread(str(photo))
    if src is None:
        raise RuntimeError(f"cannot read {photo}")
    w, h = size
    fit = min(w / src.shape[1], h / src.shape[0])
    pw, ph = round(src.shape[1] * fit), round(src.shape[0] * fit)
    zoom_frames = max(2, int(zoom_s * fps))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(zoom_frames + int(hold_s * fps)):
            if i < zoom_frames:  # the hold repeats the last frame
                zoom = 1.6 - 0.6 * i / (zoom_frames - 1)  # 1.6x onto the people, out to the whole photo
                big = cv2.resize(src, (round(pw * zoom), round(ph * zoom)), interpolation=cv2.INTER_AREA)
                x0, y0 = (big.shape[1] - pw) // 2, round((big.shape[0] - ph) * 0.6)
                img = np.full((h, w, 3), 40, np.uint8)  # pillarboxed: the photo is portrait
                img[(h - ph) // 2:(h - ph) // 2 + ph, (w - pw) // 2:(w - pw) // 2 + pw] = big[y0:y0 + ph, x0:x0 + pw]
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path

# Whisper tiny hears piper say this one right ("the capital of France" came out as "friends").
DEFAULT_QUESTION = "What is the largest planet in our solar system?"
TIMER_COMMAND = "Set a timer for five seconds."  # answered by the intent fast path, no LLM
TIMER_S = 5.0
STAY_TIMER_COMMAND = "Set a timer for ten minutes."  # --stay: long enough to watch and cancel on the dashboard
RING_MAX_S = 15.0  # the demo's ASSIST_RING_MAX_S: "stop" ends the ring, this bounds it if it is missed
LEAD_SILENCE_S = 2.0  # the agent connects to the hub while this plays
WAKE_WORD = "okay_nabu"  # the hub's HUB_WAKE_WORD default
WAKE_PAUSE_S = 2.0  # a person waits for the earcon; a shorter pause loses the command's first word


def _make_question_wav(text: str, path: Path) -> float:
    """What the device's microphone plays, in the shipped piper voice (espeak-ng's wake word does not
    fire the detector; see the dependency notes): "Okay Nabu. Set a timer for five seconds.", quiet
    while it is confirmed and rings, "Okay Nabu. Stop." while it rings, then "Okay Nabu." and the
    question. Returns the seconds it plays."""
    import numpy as np

    from shared.audio import write_wav
    from shared.wakeword import piper_speech

    rate = 48_000

    def quiet(s: float) -> np.ndarray[tuple[int], np.dtype[np.int16]]:
        return np.zeros(int(s * rate), dtype=np.int16)

    def woken(words: str) -> np.ndarray[tuple[int], np.dtype[np.int16]]:
        return np.concatenate([piper_speech("Okay Nabu.", rate), quiet(WAKE_PAUSE_S), piper_speech(words, rate)])

    # The ring starts TIMER_S after the command is understood (about a second after it ends):
    # "stop" comes a few seconds into it, the question once it is quiet again.
    audio = np.concatenate([quiet(LEAD_SILENCE_S), woken(TIMER_COMMAND), quiet(TIMER_S + 4.0), woken("Stop."),
                            quiet(4.0), woken(text), quiet(1.0)])
    write_wav(path, audio, rate)
    return audio.size / rate


def _wake_heard(hub_url: str, device_id: str) -> float | None:
    """Seconds ago the hub heard the device's wake word (its /health?detail=1), or None."""
    from naila.stack import hub_read

    try:
        detail = json.loads(hub_read(hub_url, "/health?detail=1", timeout=2))
    except (OSError, ValueError):
        return None
    for d in detail.get("devices", []):
        if d.get("device_id") == device_id and d.get("wake_word_heard_s_ago") is not None:
            return float(d["wake_word_heard_s_ago"])
    return None


def _print_turn(turn: dict[str, object], wav: Path) -> None:
    timing = turn.get("timing") or {}
    assert isinstance(timing, dict)
    print()
    print(f"  you said:    {turn.get('transcript', '')!r}")
    print(f"  NAILA said:  {turn.get('reply_text', '')!r}")
    if turn.get("error_code") not in (None, "", "NONE", 0):
        print(f"  error:       {turn.get('error_code')}")
    print("  latency after end of speech (AI server monotonic clock, ms):")
    for key in ("stt_ms", "llm_first_token_ms", "first_sentence_ms", "tts_first_audio_ms",
                "first_frame_sent_ms", "total_ms"):
        if key in timing:
            print(f"    {key:<22} {timing[key]:>6}")
    print(f"  reply audio: {wav}")


def _question_turn(turns: list[dict[str, object]], question: str) -> dict[str, object] | None:
    """The device's turn whose transcript has most of the question's words (the timer and "stop"
    turns come first)."""
    from naila.harness import words

    want = set(words(question))
    for t in turns:
        heard = set(words(str(t.get("transcript", ""))))
        if t.get("device_id") == "demo-device" and len(want & heard) * 2 >= len(want):
            return t
    return None


def _chimes(wav: Path) -> list[float]:
    """Seconds into the speaker recording where the alarm chime starts."""
    from naila.harness import chime_starts
    from shared.audio import read_wav

    if not wav.exists():
        return []
    data, rate = read_wav(wav)
    return chime_starts(data, rate)


def _speaker_has_speech(wav: Path) -> float:
    from shared.audio import read_wav, rms_dbfs

    if not wav.exists():
        return 0.0
    data, rate = read_wav(wav)
    frame = rate // 50
    voiced = sum(1 for i in range(0, data.size - frame, frame) if rms_dbfs(data[i:i + frame]) > -45)
    return voiced * 0.02


def _stay(stack: Stack, workdir: Path, photo: Path | None) -> None:
    """What ``--stay`` keeps up for the dashboard: the device again (the scripted run stopped it to close
    its speaker WAV), saying "Okay Nabu. Set a timer for ten minutes." (a timer that lasts long enough to
    be seen counting down and cancelled on the page), and its camera zooming onto the photo's street so a
    person alert with a snapshot is raised (a still photo raises none: no motion, no detection)."""
    import numpy as np

    from shared.audio import write_wav
    from shared.wakeword import piper_speech

    rate = 48_000
    audio = np.concatenate([np.zeros(int(LEAD_SILENCE_S * rate), np.int16), piper_speech("Okay Nabu.", rate),
                            np.zeros(int(WAKE_PAUSE_S * rate), np.int16), piper_speech(STAY_TIMER_COMMAND, rate),
                            np.zeros(rate, np.int16)])
    write_wav(workdir / "stay.wav", audio, rate)
    stack.extra_env.update(DEVICE_MIC_FILE=str(workdir / "stay.wav"),
                           DEVICE_SPEAKER_FILE=str(workdir / "stay-reply.wav"))
    if photo is not None:
        clip = demo_camera_clip(photo, workdir / "camera.mp4")
        stack.extra_env.update(DEVICE_CAMERA="file", DEVICE_CAMERA_FILE=str(clip))
    print(f"[demo] the device again: 'Okay Nabu.' {STAY_TIMER_COMMAND!r}"
          + (", its camera zooming out onto the street in bus.jpg (a person alert)" if photo else ""), flush=True)
    stack._spawn("device", [sys.executable, "-m", "naila", "device"])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="naila demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--question", default=DEFAULT_QUESTION,
                        help="what the device asks after 'Okay Nabu' (spoken by the shipped piper voice)")
    parser.add_argument("--mqtt", metavar="HOST:PORT", help="use this broker instead of starting mosquitto")
    parser.add_argument("--out", type=Path, help="folder for the WAVs and logs (default: a temp folder)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the answer")
    parser.add_argument("--stay", action="store_true",
                        help="after the spoken turn, keep everything running (Ctrl-C stops) so you can talk to "
                             "the assistant from the browser page and watch the dashboard: the device comes back, "
                             "sets a ten-minute timer and its camera raises a person alert")
    ns = parser.parse_args(argv)

    workdir = ns.out or new_workdir("naila-demo-")
    workdir.mkdir(parents=True, exist_ok=True)
    # The product default: nothing is a turn until the wake word.
    stack = Stack(workdir=workdir, progress=lambda m: print(m, flush=True), listening_mode="wake_word")

    def _sigterm(signum: int, frame: types.FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _sigterm)
    question_wav, reply_wav = workdir / "question.wav", workdir / "reply.wav"
    staying = False  # the turn succeeded and --stay keeps the stack up: Ctrl-C is then the normal end
    try:
        external = None
        if ns.mqtt:
            host, _, port = ns.mqtt.rpartition(":")
            external = (host or "127.0.0.1", int(port))
        stack.start_mosquitto(external)
        stack.extra_env["ASSIST_RING_MAX_S"] = str(RING_MAX_S)
        stack.start_ai_server()
        # The web app needs a login token; the demo makes a fresh one and prints it.
        web_token = os.environ.get("HUB_WEB_TOKEN") or secrets.token_urlsafe(18)
        stack.extra_env["HUB_WEB_TOKEN"] = web_token
        # /connect is default-deny: the demo device gets its own token, as `naila init` would write.
        stack.extra_env["HUB_DEVICE_TOKENS"] = json.dumps({"demo-device": stack.device_token})
        stack.start_hub()
        stack.wait_grpc_connected()
        print(f"[demo] web app: {stack.hub_url}/ (talk) and {stack.hub_url}/dashboard; log in with {web_token}",
              flush=True)
        speech_s = _make_question_wav(ns.question, question_wav)
        print(f"[demo] starting device agent 'demo-device' (microphone plays {speech_s:.1f}s, piper voice: "
              f"'Okay Nabu.' {TIMER_COMMAND!r}, then 'Okay Nabu. Stop.' while it rings, then 'Okay Nabu.' "
              f"{ns.question!r})", flush=True)
        stack.extra_env.update(
            DEVICE_ID="demo-device",
            DEVICE_ROOM="Hall",  # the camera's zone too (no VISION_ZONES polygons): its alerts say hall
            DEVICE_HUB_URL=stack.hub_url,
            DEVICE_AUDIO_BACKEND="file",
            DEVICE_MIC_FILE=str(question_wav),
            DEVICE_SPEAKER_FILE=str(reply_wav),
        )
        photo = demo_photo()
        if photo is not None:
            stack.extra_env.update(DEVICE_CAMERA="file", DEVICE_CAMERA_FILE=str(photo))
            print(f"[demo] the device's camera films {photo.name} (ask --question 'What do you see?')", flush=True)
        device = stack._spawn("device", [sys.executable, "-m", "naila", "device"])
        t0 = time.monotonic()

        wake_said: list[float] = []

        def answered() -> bool:
            if not wake_said:
                ago = _wake_heard(stack.hub_url, "demo-device")
                if ago is not None:
                    wake_said.append(time.monotonic() - ago)
                    print(f"[demo] wake word {WAKE_WORD!r} heard at {wake_said[0] - t0:.2f}s after the device "
                          "started; the hub listens for the question (earcon played)", flush=True)
            return _question_turn(stack.turns(), ns.question) is not None

        wait_until(answered, ns.timeout + speech_s, "the assistant's answer", device.proc)
        turns = [t for t in stack.turns() if t.get("device_id") == "demo-device"]
        turn = _question_turn(turns, ns.question) or turns[-1]
        for t in turns:
            if t is not turn:
                print(f"[demo] turn: you said {t.get('transcript', '')!r}; NAILA said {t.get('reply_text', '')!r} "
                      f"(total {dict(t.get('timing') or {}).get('total_ms', '?')} ms)", flush=True)  # type: ignore[call-overload]
        # Let the reply finish playing out at the device (real-time paced), then stop it
        # so it closes the speaker WAV.
        reply_text = str(turn.get("reply_text", ""))
        time.sleep(min(20.0, 1.5 + 0.09 * len(reply_text)))
        device.stop()
        stack.parts.pop("device", None)
        heard = _speaker_has_speech(reply_wav)
        rang = _chimes(reply_wav)
        if rang:
            print(f"[demo] the timer rang on the device: alarm chime at {', '.join(f'{r:.1f}s' for r in rang)} "
                  "in its speaker recording (880 + 1318.5 Hz, found by FFT)", flush=True)
        else:
            print("[demo] the timer's chime was not found in the device's speaker recording", flush=True)
        print(f"[demo] turn finished {time.monotonic() - t0:.1f}s after the device started; "
              f"{heard:.1f}s of reply audio reached the device's speaker")
        _print_turn(turn, reply_wav)
        if not turn.get("transcript") or heard < 0.3 or not rang:
            print("[demo] FAILED: no transcript or no reply audio at the device", file=sys.stderr)
            for pname in ("ai-server", "hub"):
                if pname in stack.parts:
                    print(f"--- {pname} log tail ---\n{stack.parts[pname].tail()}", file=sys.stderr)
            return 1
        if ns.stay:
            staying = True
            _stay(stack, workdir, photo)
            print(f"[demo] still running: open {stack.hub_url}/dashboard in a browser on this machine, log in with "
                  f"{web_token}: the camera, its alert with the snapshot, the turns' latency and the ten-minute "
                  f"timer (Cancel it there, or set another for the device with the timers panel's form); "
                  f"{stack.hub_url}/ talks (press Start and ask). Ctrl-C stops everything.",
                  flush=True)
            while all(p.proc.poll() is None for p in stack.parts.values()):
                time.sleep(1.0)
            print("[demo] a part of the stack exited; shutting down", file=sys.stderr)
            return 1
        return 0
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean shutdown short
        print("\n[demo] interrupted, shutting down", flush=True)
        return 0 if staying else 130
    except (RuntimeError, TimeoutError) as exc:
        print(f"[demo] FAILED: {exc}", file=sys.stderr)
        for pname, p in stack.parts.items():
            print(f"--- {pname} log tail ---\n{p.tail()}", file=sys.stderr)
        return 1
    finally:
        if "device" in stack.parts:
            stack.parts.pop("device").stop()
        stack.stop()
        print(f"[demo] stopped everything; logs in {workdir}", flush=True)
