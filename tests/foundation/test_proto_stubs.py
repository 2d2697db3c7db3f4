"""The committed stubs in shared/gen must match a fresh generation from proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def _tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()
            and "__pycache__" not in p.parts}


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    subprocess.run([sys.executable, str(ROOT / "proto" / "generate.py"), "--out", str(out)], check=True,
                   capture_output=True)
    fresh, committed = _tree(out), _tree(ROOT / "shared" / "gen")
    stale = sorted(k for k in fresh.keys() | committed.keys() if fresh.get(k) != committed.get(k))
    assert not stale, f"stubs are stale, run `python proto/generate.py`: {stale}"


def test_stale_check_detects_a_changed_proto(tmp_path: Path) -> None:
    """The check above can fail: a proto edit changes the generated output."""
    import shutil

    work = tmp_path / "repo"
    shutil.copytree(ROOT / "proto", work / "proto")
    proto = work / "proto" / "naila" / "v1" / "naila.proto"
    proto.write_text(proto.read_text().replace("message StatusRequest {}",
                                               "message StatusRequest { bool verbose = 1; }"))
    out = tmp_path / "gen"
    subprocess.run([sys.executable, str(work / "proto" / "generate.py"), "--out", str(out)], check=True,
                   capture_output=True)
    assert _tree(out) != _tree(ROOT / "shared" / "gen")


def test_contract_matches_spec() -> None:
    from shared.contract import pb

    names = {f.name for f in pb.AudioInput.DESCRIPTOR.fields}
    assert {"device_id", "conversation_id", "audio_pcm", "audio_opus", "codec", "sample_rate",
            "chunk_duration_ms", "timestamp_ms", "sequence_num", "event"} <= names
    assert [o.name for o in pb.AudioInput.DESCRIPTOR.oneofs] == ["audio"]
    assert set(pb.AudioCodec.keys()) == {"PCM_S16LE", "OPUS"}
    assert set(pb.SpeechEvent.keys()) == {"START", "CONTINUE", "END", "INTERRUPT"}
    assert set(pb.ErrorCode.keys()) == {"NONE", "STT_FAILED", "LLM_FAILED", "TTS_FAILED", "INTERNAL"}
    out = {f.name for f in pb.AudioOutput.DESCRIPTOR.fields}
    assert {"device_id", "audio_pcm", "sample_rate", "sequence_num", "is_final", "final_stt",
            "error_code", "reply_text", "timing"} <= out
    svc = pb.DESCRIPTOR.services_by_name["NailaAI"]
    methods = {m.name: m for m in svc.methods}
    assert methods["StreamConversation"].client_streaming and methods["StreamConversation"].server_streaming
    assert "GetStatus" in methods and "AnalyzeFrames" in methods
    assert pb.DESCRIPTOR.package == "naila.v1"
