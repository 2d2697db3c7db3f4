"""The engine registry: names in, factories out, and a clear error for a name nobody registered."""

from __future__ import annotations

import pytest

from shared.registry import Registry, UnknownEngine

pytestmark = pytest.mark.unit


def test_registered_factories_are_built_by_name_with_their_arguments() -> None:
    reg: Registry[[int], str] = Registry("STT")

    @reg.register("double")
    def double(n: int) -> str:
        return str(2 * n)

    assert reg.build("double", 21) == "42"
    assert reg.names() == ("double",)
    assert "double" in reg and "other" not in reg


def test_unknown_name_lists_the_known_ones_and_duplicates_are_refused() -> None:
    reg: Registry[[], int] = Registry("VAD")
    reg.register("webrtc")(lambda: 1)
    with pytest.raises(UnknownEngine, match=r"unknown VAD engine 'silero' \(known: webrtc\)"):
        reg.build("silero")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("webrtc")(lambda: 2)
