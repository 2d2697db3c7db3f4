"""End of turn by a model: Smart Turn v3.2 (ONNX) asked when the VAD first hears a short pause.

Engines (AUDIO_END_OF_TURN, :data:`END_OF_TURN_ENGINES`):

* ``silence``: no model; HUB_VAD_HANGOVER_MS of silence ends the turn (the spec's behaviour).
* ``smart_turn``: after HUB_END_OF_TURN_CHECK_MS of silence the utterance so far (its last 8 s) goes
  to the model; P(complete) >= HUB_END_OF_TURN_THRESHOLD ends the turn at once,
  P >= HUB_END_OF_TURN_HANGOVER_THRESHOLD after the ordinary HUB_VAD_HANGOVER_MS, and a lower P
  only after HUB_END_OF_TURN_FALLBACK_MS of silence unless speech resumes (the policy itself is
  the VAD machine's, hub/vad.py, on the frame clock). The model is right about short commands and
  questions (0.97-0.99 complete, 0.06-0.28 cut mid-way, per the dependency notes) but not always
  about long sentences, hence the middle tier and the fallback.

The model takes ~70 ms of CPU; the hub serves many devices from one event loop, so
:class:`TurnJudge` runs it on its own worker thread and hands the probability back as an asyncio
future. The session feeds the verdict to the (pure) VAD state machine, which ignores it when the
speaker has gone on talking meanwhile (see ``VadStateMachine.verdict``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hub.log_mel import last_window, log_mel
from hub.models import SMART_TURN, model_path
from shared.audio import Int16Array
from shared.config import HubSettings
from shared.registry import Registry

log = logging.getLogger("naila.hub.end_of_turn")


class EndOfTurnModel(Protocol):
    """P(the speaker's turn is complete) for the utterance so far (16 kHz int16, ends in the pause)."""

    def complete_probability(self, audio: Int16Array) -> float: ...


class SmartTurn:
    """Smart Turn v3.2: Whisper-tiny encoder + classifier on the last 8 s, [1, 80, 800] log-mel in."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped]

        options = ort.SessionOptions()
        # One thread per inference: the hub's other work (aiortc, the VAD) needs the other cores,
        # and the 2-core target gets no faster from a second intra-op thread on a 70 ms model.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self.cpu_s = 0.0  # process CPU spent in features + inference, for the benchmark
        self.calls = 0

    def complete_probability(self, audio: Int16Array) -> float:
        started = time.thread_time()  # this thread's CPU: process_time would add the event loop's meanwhile
        features = log_mel(last_window(audio))[None]
        (out,) = self._session.run(None, {"input_features": features})
        self.cpu_s += time.thread_time() - started
        self.calls += 1
        return float(np.asarray(out).reshape(-1)[0])


@functools.cache
def load_smart_turn(folder: str = "") -> SmartTurn:
    """One loaded model per folder per process: ONNX Runtime sessions are safe to share across threads."""
    return SmartTurn(model_path(SMART_TURN, folder))


#: AUDIO_END_OF_TURN -> a factory of the model to ask, or None when silence alone decides.
END_OF_TURN_ENGINES: Registry[[HubSettings], EndOfTurnModel | None] = Registry("end-of-turn")


@END_OF_TURN_ENGINES.register("silence")
def _silence(settings: HubSettings) -> EndOfTurnModel | None:
    return None


@END_OF_TURN_ENGINES.register("smart_turn")
def _smart_turn(settings: HubSettings) -> EndOfTurnModel | None:
    return load_smart_turn(settings.hub_model_dir)


class TurnJudge:
    """Asks one end-of-turn model for every session of a hub, on a worker thread off the event loop.

    ``workers`` threads run at most that many inferences at once; a check whose pause is already
    over when its turn comes (the speaker went on, or the fallback ended the turn) is skipped, so a
    busy hub does not work through a backlog of questions nobody waits for.
    """

    def __init__(self, model: EndOfTurnModel, workers: int = 1) -> None:
        self.model = model
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="end-of-turn")

    def ask(self, audio: Int16Array, still_wanted: Callable[[], bool]) -> asyncio.Future[float | None]:
        """P(complete) for ``audio``, or None when it was no longer wanted by the time it ran."""

        def run() -> float | None:
            return self.model.complete_probability(audio) if still_wanted() else None

        return asyncio.get_running_loop().run_in_executor(self._pool, run)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def verdict_of(future: asyncio.Future[Any]) -> tuple[float | None, str]:
    """(probability or None, outcome label for the metrics) of a finished :meth:`TurnJudge.ask`."""
    if future.cancelled():
        return None, "cancelled"
    exc = future.exception()
    if exc is not None:
        log.warning("end-of-turn model failed, the silence fallback decides: %s", str(exc).splitlines()[0][:200])
        return None, "error"
    value = future.result()
    return (None, "stale") if value is None else (float(value), "asked")
