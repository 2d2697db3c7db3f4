"""One real stack per e2e module: mosquitto, the AI server and the hub as processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from naila.stack import Stack, new_workdir


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    s = Stack(workdir=new_workdir("naila-e2e-"), progress=lambda m: None)
    # Plain questions unless a module is about listening modes (STACK_LISTENING_MODE = "wake_word").
    s.listening_mode = getattr(request.module, "STACK_LISTENING_MODE", "always")
    s.extra_env.update(getattr(request.module, "STACK_ENV", {}))  # a module's own settings (e.g. ring length)
    # Vision only where a module tests it (STACK_VISION = True): loading YOLO in the background
    # takes the 2 cores for seconds, and the voice tests' echo and barge-in timing is what they test.
    if not getattr(request.module, "STACK_VISION", False):
        s.extra_env["VISION_ENABLED"] = "false"
    try:
        s.start_mosquitto()
        s.start_ai_server()
        s.start_hub()
        s.wait_grpc_connected()
        yield s
    except Exception:
        print(s.logs())
        raise
    finally:
        s.stop()


@pytest.fixture(scope="module")
def whisper() -> object:
    """faster-whisper with the shipped tiny.en, to transcribe what a device's speaker played."""
    from ai_server.stt import WhisperSTT

    return WhisperSTT()
