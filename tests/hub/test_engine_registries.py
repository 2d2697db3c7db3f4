"""Each hub engine setting's Literal lists exactly the names its registry builds (shared/registry.py)."""

from __future__ import annotations

import typing

import pytest

from hub.end_of_turn import END_OF_TURN_ENGINES
from hub.vad import VAD_ENGINES
from shared.config import AudioSettings, HubSettings
from shared.registry import Registry, UnknownEngine
from shared.wakeword import WAKE_WORDS

pytestmark = pytest.mark.unit


def literal_values(settings: type, field: str) -> set[str]:
    return set(typing.get_args(settings.model_fields[field].annotation))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("settings", "field", "registry"),
    [
        (AudioSettings, "audio_vad_mode", VAD_ENGINES),
        (AudioSettings, "audio_end_of_turn", END_OF_TURN_ENGINES),
        (HubSettings, "hub_wake_word", WAKE_WORDS),
    ],
)
def test_setting_literal_equals_registry_names(settings: type, field: str, registry: Registry) -> None:  # type: ignore[type-arg]
    assert literal_values(settings, field) == set(registry.names())


def test_engines_build_by_name_and_an_unknown_name_lists_the_known_ones() -> None:
    settings = HubSettings()
    assert END_OF_TURN_ENGINES.build("silence", settings) is None
    assert END_OF_TURN_ENGINES.build("smart_turn", settings) is not None  # the model file from setup
    detector = WAKE_WORDS.build("hey_jarvis")
    try:
        assert detector.model == "hey_jarvis"
    finally:
        detector.close()
    with pytest.raises(UnknownEngine, match=r"unknown end-of-turn engine 'livekit' \(known: silence, smart_turn\)"):
        END_OF_TURN_ENGINES.build("livekit", settings)
