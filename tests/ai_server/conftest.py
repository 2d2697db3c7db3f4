"""AI server fixtures: real models loaded once per session, servers started per test on port 0."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ai_server.app import AIServer, start_server
from ai_server.client import as_the_hub_sends
from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS
from shared.audio import Int16Array, espeak
from shared.config import AIServerSettings, load

HERE = Path(__file__).resolve().parent
UTTERANCES = [ln.strip() for ln in (HERE / "utterances.txt").read_text().splitlines() if ln.strip()]
HANGOVER_MS = 300  # the hub forwards this much silence before END

NUMBERS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
           "7": "seven", "8": "eight", "9": "nine", "10": "ten", "11": "eleven", "12": "twelve",
           "15": "fifteen", "20": "twenty", "30": "thirty"}


def words(text: str) -> list[str]:
    return [NUMBERS.get(w, w) for w in re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()]


def word_errors(ref: str, hyp: str) -> tuple[int, int]:
    """(edit distance in words, reference length) after lower-casing, dropping punctuation
    and spelling out small numbers ("10" == "ten")."""
    r, h = words(ref), words(hyp)
    row = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, row[0] = row[:], i
        for j in range(1, len(h) + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (r[i - 1] != h[j - 1]))
    return row[len(h)], len(r)


def speech(text: str) -> Int16Array:
    """espeak-ng speech at 16 kHz framed like a hub utterance (pre-roll, speech, hangover)."""
    return as_the_hub_sends(espeak(text), hangover_ms=HANGOVER_MS)


@pytest.fixture(scope="session")
def settings() -> AIServerSettings:
    # A random MQTT client id and a clean session per server: tests run many servers on one broker
    # (tests/security/test_mqtt_delivery_*.py set a fixed id where they test persistence).
    return load(AIServerSettings, ai_server_host="127.0.0.1", ai_server_port=50051, ai_mqtt_client_id="")


@pytest.fixture(scope="session")
def real_stt(settings: AIServerSettings) -> Iterator[Any]:
    from ai_server.stt import build_stt

    stt = build_stt(settings)
    asyncio.run(stt.warm())
    yield stt
    asyncio.run(stt.close())


@pytest.fixture(scope="session")
def real_llm(settings: AIServerSettings) -> Iterator[Any]:
    from ai_server.llm.engines import build_llm

    llm = build_llm(settings)
    asyncio.run(llm.warm())
    yield llm
    asyncio.run(llm.close())


@pytest.fixture(scope="session")
def real_tts(settings: AIServerSettings) -> Iterator[Any]:
    from ai_server.tts import PiperTTS

    tts = PiperTTS()
    asyncio.run(tts.warm())
    yield tts
    asyncio.run(tts.close())


ServerFactory = Callable[..., Awaitable[AIServer]]


@pytest.fixture
async def make_server(settings: AIServerSettings, tmp_path_factory: pytest.TempPathFactory
                      ) -> AsyncIterator[ServerFactory]:
    """Start an in-process server on a free port; fakes fill any backend not given. Each server has a
    data folder of its own (AI_MEDIA_DIR), never the user's."""
    started: list[AIServer] = []

    async def make(**kw: Any) -> AIServer:
        kw.setdefault("stt", FakeSTT())
        kw.setdefault("llm", FakeLLM())
        kw.setdefault("tts", FakeTTS())
        over = {"ai_media_dir": str(tmp_path_factory.mktemp("media")), **kw.pop("settings", {})}
        s = settings.model_copy(update=over)
        server = await start_server(s, port=0, host="127.0.0.1", warm=kw.pop("warm", False), **kw)
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop(grace=0)
