"""Visual questions answered by code (issue 19, item 6): right labels and counts, and how fast.

Two cameras film ultralytics' shipped photos at the size the hub sends (320x240): ``door_cam``
(hall / front door) bus.jpg (truth: 4 people and a bus), ``pitch_cam`` (garden) zidane.jpg
(truth: 2 people). They go through the AI server's own code: the real YOLO checkpoint
(VISION_MODEL; the shipped one knows only person / fallen_person, so the bus cannot be found and
the answer says "I can't tell"), the vision pipeline, OCR (RapidOcr), VisualQuestions with
answer_by="code", and the real piper voice for the first audio chunk.

Two cases per question: ``analysed`` (the frame was a motion frame, YOLO already ran on it as it
arrived, the usual case) and ``on_demand`` (the latest frame is a no-motion refresh: YOLO runs at
question time). Times on one monotonic clock (time.perf_counter): question text -> answer text,
and -> first piper audio chunk. End of speech -> first audio adds speech-to-text; its p50 is read
from bench/results/turn_latency.json (same machine) when present and added as an estimate.

Usage: python bench/visual_questions.py [--repeats 5]; writes bench/results/visual_questions.json.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "naila-yolo-config"))

import cv2  # noqa: E402

from ai_server.media.analysis import ImageAnalyser  # noqa: E402
from ai_server.media.ocr import RapidOcr  # noqa: E402
from ai_server.store.home import StoreConfig, open_store  # noqa: E402
from ai_server.tts import build_tts  # noqa: E402
from ai_server.vision.ask import VisualQuestions  # noqa: E402
from ai_server.vision.config import VisionConfig  # noqa: E402
from ai_server.vision.detector import YoloDetector, resolve_weights  # noqa: E402
from ai_server.vision.pipeline import Frame, VisionPipeline  # noqa: E402
from shared.config import AIServerSettings, load  # noqa: E402

OUT = ROOT / "bench/results/visual_questions.json"
PLACES = {"door_cam": ("hall", "front_door"), "pitch_cam": ("garden", "")}
PHOTOS = {"door_cam": "bus.jpg", "pitch_cam": "zidane.jpg"}
TRUTH = {"door_cam": {"person": 4, "bus": 1}, "pitch_cam": {"person": 2}}
# (asker, room, question, camera, what a right answer holds)
QUESTIONS: list[tuple[str, str, str, str, dict[str, Any]]] = [
    ("door_cam", "hall", "What do you see?", "door_cam", {"person": 4}),
    ("kitchen_pi", "kitchen", "How many people are at the front door?", "door_cam", {"person": 4}),
    ("kitchen_pi", "kitchen", "Is anyone at the front door?", "door_cam", {"yes": True}),
    ("door_cam", "hall", "Is there a bus out there?", "door_cam", {"cannot_tell": "bus"}),
    ("kitchen_pi", "kitchen", "How many people are in the garden?", "pitch_cam", {"person": 2}),
    ("kitchen_pi", "kitchen", "Is there anybody in the garden?", "pitch_cam", {"yes": True}),
    ("bed_pi", "bedroom", "What do you see?", "", {"no_camera": True}),
]
_NUMBER = re.compile(r"\b(\d+|a|an) (people|person)\b")


def hub_frame(assets: Path, name: str) -> bytes:
    img = cv2.imread(str(assets / name))
    assert img is not None, assets / name
    return cv2.imencode(".jpg", cv2.resize(img, (320, 240)), [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


def people_said(text: str) -> int | None:
    m = _NUMBER.search(text)
    if m is None:
        return 0 if re.search(r"\b(nobody|no people)\b", text) else None
    return 1 if m.group(1) in ("a", "an") else int(m.group(1))


def right(text: str, want: dict[str, Any]) -> bool:
    if "person" in want:
        return people_said(text) == int(want["person"])
    if "yes" in want:
        return text.startswith("Yes")
    if "cannot_tell" in want:
        return text.startswith("I can't tell") and str(want["cannot_tell"]) in text
    return "no camera" in text


async def run(repeats: int) -> dict[str, Any]:
    settings = load(AIServerSettings)
    spec = importlib.util.find_spec("ultralytics")
    assert spec is not None and spec.submodule_search_locations
    assets = Path(next(iter(spec.submodule_search_locations))) / "assets"
    detector = YoloDetector(resolve_weights(settings.vision_model), device="cpu", imgsz=settings.vision_imgsz,
                            confidence=settings.vision_confidence, labels=settings.vision_labels)
    detector.load()
    ocr = RapidOcr()
    ocr.load()
    tts = build_tts("piper")
    async for _ in tts.synthesize("Warming up."):
        pass
    analyser = ImageAnalyser(detector, ocr)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(StoreConfig(media_dir=tmp))  # as the server opens its one store
        vp = VisionPipeline(detector, VisionConfig(), store=store, places=lambda d: PLACES.get(d, (None, None)))
        q = VisualQuestions(vp, analyser=analyser, answer_by="code")
        frame_id = 0
        try:
            for case in ("analysed", "on_demand"):
                for _ in range(repeats):
                    for device, photo in PHOTOS.items():
                        frame_id += 1
                        await vp.analyse(Frame(device, hub_frame(assets, photo), frame_id=frame_id,
                                               motion_score=0.2, refresh=case == "on_demand"))
                    for asker, room, question, camera, want in QUESTIONS:
                        started = time.perf_counter()
                        seen = await q.look(asker, room, question)
                        text_s = time.perf_counter() - started
                        async for chunk in tts.synthesize(seen.answer):
                            if chunk.size:
                                break
                        audio_s = time.perf_counter() - started
                        rows.append({"case": case, "question": question, "camera": camera, "answer": seen.answer,
                                     "llm_prompt": seen.prompt, "right": right(seen.answer, want), "want": want,
                                     "answer_text_ms": round(text_s * 1000, 1),
                                     "first_audio_ms": round(audio_s * 1000, 1)})
                    # the next frame of the same photo must be new to the pipeline: each case starts fresh
        finally:
            await vp.stop()
            store.close()
    return summarise(rows, detector)


def summarise(rows: list[dict[str, Any]], detector: YoloDetector) -> dict[str, Any]:
    stt_ms = None
    turn = ROOT / "bench/results/turn_latency.json"
    if turn.is_file():
        try:
            data = json.loads(turn.read_text())
            stt_ms = _find_stt_p50(data)
        except (ValueError, KeyError):
            stt_ms = None
    cases: dict[str, Any] = {}
    for case in ("analysed", "on_demand"):
        mine = [r for r in rows if r["case"] == case]
        audio = sorted(r["first_audio_ms"] for r in mine)
        cases[case] = {
            "right": sum(r["right"] for r in mine), "asked": len(mine),
            "answer_text_ms_p50": round(statistics.median(r["answer_text_ms"] for r in mine), 1),
            "first_audio_ms_p50": round(statistics.median(audio), 1),
            "first_audio_ms_max": audio[-1],
            "end_of_speech_to_first_audio_ms_p50_estimate": None if stt_ms is None
            else round(stt_ms + statistics.median(audio), 1),
        }
    answers: dict[str, tuple[str, bool, dict[str, Any]]] = {}
    for r in rows:
        answers.setdefault(f"{r['question']} ({r['camera'] or 'no camera'})", (r["answer"], r["right"], r["want"]))
    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "detector": {"name": detector.name, "knows": sorted(detector.names.values())},
        "truth": TRUTH,
        "stt_p50_ms_from_turn_latency": stt_ms,
        "goal": "right labels and counts; end of speech -> first audio <= 1500 ms",
        "cases": cases,
        "answers": [{"question": k, "answer": a, "right": ok, "want": w} for k, (a, ok, w) in answers.items()],
        "rows": rows,
    }


def _find_stt_p50(data: Any) -> float | None:
    """The speech-to-text p50 (ms) anywhere in turn_latency.json (its layout is that bench's)."""
    if isinstance(data, dict):
        for key, value in data.items():
            if "stt" in str(key).lower() and isinstance(value, dict) and isinstance(value.get("p50"), int | float):
                return float(value["p50"])
        for value in data.values():
            found = _find_stt_p50(value)
            if found is not None:
                return found
    if isinstance(data, list):
        for value in data:
            found = _find_stt_p50(value)
            if found is not None:
                return found
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=5)
    ns = parser.parse_args()
    result = asyncio.run(run(ns.repeats))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    for case, c in result["cases"].items():
        print(f"{case:10s} right {c['right']}/{c['asked']}  answer text p50 {c['answer_text_ms_p50']} ms  "
              f"first audio p50 {c['first_audio_ms_p50']} ms (max {c['first_audio_ms_max']})  "
              f"+STT estimate {c['end_of_speech_to_first_audio_ms_p50_estimate']} ms")
    for a in result["answers"]:
        print(f"  {'ok ' if a['right'] else 'BAD'} {a['question']}: {a['answer']}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
