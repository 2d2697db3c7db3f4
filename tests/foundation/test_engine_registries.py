"""Every engine setting's choices are exactly its registry's names (issue 23).

The setting stays a pydantic ``Literal`` (``naila config`` lists the choices, a typo fails at load
time); the registry is what builds the engine. This is the one place the two could drift apart.
"""

from __future__ import annotations

from typing import Any, get_args

import pytest

from ai_server.llm.engines import LLM_ENGINES
from ai_server.stt import STT_ENGINES
from ai_server.tts import TTS_ENGINES
from ai_server.vision.detector import DETECTORS
from shared.config import AIServerSettings
from shared.registry import Registry, UnknownEngine

pytestmark = pytest.mark.unit

ENGINE_SETTINGS: list[tuple[str, Registry[..., Any]]] = [
    ("stt_backend", STT_ENGINES),
    ("tts_backend", TTS_ENGINES),
    ("llm_backend", LLM_ENGINES),
    ("vision_detector", DETECTORS),
]


@pytest.mark.parametrize(("field", "registry"), ENGINE_SETTINGS, ids=[f for f, _ in ENGINE_SETTINGS])
def test_setting_choices_are_the_registry_names(field: str, registry: Registry[..., Any]) -> None:
    annotation = AIServerSettings.model_fields[field].annotation
    assert sorted(get_args(annotation)) == sorted(registry.names())
    assert AIServerSettings.model_fields[field].default in registry


def test_an_unknown_engine_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownEngine, match=r"unknown STT engine 'vosk' \(known: whisper\)"):
        STT_ENGINES.factory("vosk")
