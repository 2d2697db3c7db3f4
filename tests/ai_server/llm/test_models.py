"""The embedded model catalogue's re-encoding (ai_server/llm/models.py): the shipped SmolLM2 Q4_1
re-encoded as Q8_0, made once by llama.cpp's own quantizer into the model cache and pinned (anything
that goes wrong on the way runs the shipped file instead), and the choice between the two by their
speed on this machine (ai_server/llm/encoding.py)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from ai_server.llm import encoding, models

SMOL = "smollm2-135m"


def _with_run_as(monkeypatch: pytest.MonkeyPatch, **changes: str) -> models.EmbeddedModel:
    model = models.CATALOGUE[SMOL]
    assert model.run_as is not None
    changed = dataclasses.replace(model, run_as=dataclasses.replace(model.run_as, **changes))
    monkeypatch.setitem(models.CATALOGUE, SMOL, changed)
    return changed


def test_shipped_smollm2_runs_as_the_pinned_q8_0_made_once(tmp_path: Path) -> None:
    from llama_cpp import Llama

    model = models.CATALOGUE[SMOL]
    assert model.run_as is not None
    path = models.model_path(SMOL, tmp_path, "reencoded")
    assert path == tmp_path / model.run_as.file
    assert path.stat().st_size == model.run_as.size
    assert models.sha256_file(path) == model.run_as.sha256  # the same bytes on every machine
    mtime = path.stat().st_mtime_ns
    assert models.model_path(SMOL, tmp_path, "reencoded").stat().st_mtime_ns == mtime  # not made again
    assert {p.name for p in tmp_path.iterdir()} == {model.run_as.file, model.run_as.file + ".verified",
                                                    model.file + ".verified"}  # no temp file left
    llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        assert llm.metadata["general.file_type"] == "7"  # LLAMA_FTYPE_MOSTLY_Q8_0
    finally:
        llm.close()


def test_a_re_encoding_that_comes_out_different_runs_the_shipped_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = _with_run_as(monkeypatch, sha256="0" * 64)  # as another llama.cpp might make it
    with caplog.at_level(logging.WARNING, logger="ai_server.llm.models"):
        path = models.model_path(SMOL, tmp_path, "reencoded")
    assert path.name == model.file and path.parent != tmp_path  # the package's own file
    assert "runs as shipped" in caplog.text and "expected 0000" in caplog.text


def test_a_quantizer_that_cannot_make_it_runs_the_shipped_file_and_leaves_nothing_half_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = _with_run_as(monkeypatch, ftype="NO_SUCH_TYPE")
    with caplog.at_level(logging.WARNING, logger="ai_server.llm.models"):
        path = models.model_path(SMOL, tmp_path)  # auto: nothing to choose from
    assert path.name == model.file
    assert "runs as shipped" in caplog.text and "NO_SUCH_TYPE" in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == [model.file + ".verified"]


def _timed(monkeypatch: pytest.MonkeyPatch, seconds: dict[str, float]) -> list[str]:
    timed: list[str] = []

    def timer(path: Path) -> float:
        timed.append(path.name)
        return seconds["q8" if "Q8_0" in path.name else "q4"]

    monkeypatch.setattr(encoding, "first_clause_s", timer)
    return timed


@pytest.mark.parametrize(("q4", "q8", "runs"), [
    (0.160, 0.125, "Q8_0"),  # the AMD EPYC box: Q8_0's first clause 35 ms sooner
    (0.135, 0.165, "Q4_1"),  # the Intel box: Q8_0 decodes slower (memory-bound)
    (0.160, 0.155, "Q4_1"),  # 3 % is not enough: the measured bytes stay
])
def test_auto_runs_the_faster_encoding_on_this_machine_timed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, q4: float, q8: float, runs: str
) -> None:
    timed = _timed(monkeypatch, {"q4": q4, "q8": q8})
    path = models.model_path(SMOL, tmp_path)
    assert runs in path.name and len(timed) == 2
    assert models.model_path(SMOL, tmp_path) == path and len(timed) == 2  # remembered, not timed again
    assert models.model_path(SMOL, tmp_path, "shipped").name.endswith("Q4_1.gguf")
    assert models.model_path(SMOL, tmp_path, "reencoded").name.endswith("Q8_0.gguf")


def test_the_choice_is_timed_again_for_other_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    timed = _timed(monkeypatch, {"q4": 0.16, "q8": 0.12})
    path = models.model_path(SMOL, tmp_path)
    path.unlink()  # made again (another mtime): another llama.cpp build may also make it faster or slower
    assert models.model_path(SMOL, tmp_path) == path and len(timed) == 4


def test_a_timing_that_fails_runs_the_shipped_file_and_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(path: Path) -> float:
        raise RuntimeError("no memory for a second model")

    monkeypatch.setattr(encoding, "first_clause_s", broken)
    with caplog.at_level(logging.WARNING, logger="ai_server.llm.encoding"):
        assert models.model_path(SMOL, tmp_path).name.endswith("Q4_1.gguf")
    assert "no memory for a second model" in caplog.text
    assert not (tmp_path / encoding.CHOICES_FILE).exists()  # nothing remembered: timed at the next start
    timed = _timed(monkeypatch, {"q4": 0.16, "q8": 0.12})
    assert models.model_path(SMOL, tmp_path).name.endswith("Q8_0.gguf") and len(timed) == 2


def test_first_clause_time_is_measured_on_the_real_model(tmp_path: Path) -> None:
    shipped = models.model_path(SMOL, tmp_path, "shipped")
    seconds = encoding.first_clause_s(shipped, rounds=1)
    assert 0.001 < seconds < 30  # one thread, a question and a clause's tokens: real work, not an instant


def test_unknown_encoding_is_a_clear_error() -> None:
    with pytest.raises(models.StartupError, match="unknown LLM_EMBEDDED_ENCODING 'q2'"):
        models.model_path(SMOL, encoding="q2")
