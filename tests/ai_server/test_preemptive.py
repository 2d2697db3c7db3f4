"""Preemptive replies: the reply starts during the hub's hangover, is held, and END releases it.

Driven message by message through ConversationSession.handle with scripted backends, so the
order of events (pause, speech again, END, INTERRUPT) is exact; nothing here measures time.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from ai_server.conversation import Conversations
from ai_server.fakes import FakeLLM, FakeSTT, FakeTTS
from ai_server.pipeline import Pipeline
from ai_server.session import ConversationSession
from shared.audio import HUB_RATE, Int16Array
from shared.contract import pb

pytestmark = pytest.mark.unit

FRAME = HUB_RATE // 50


def tone(ms: int) -> Int16Array:
    t = np.arange(HUB_RATE * ms // 1000) / HUB_RATE
    return (np.sin(2 * np.pi * 200 * t) * 8000).astype(np.int16)


def quiet(ms: int) -> Int16Array:
    return np.zeros(HUB_RATE * ms // 1000, dtype=np.int16)


def msg(event: int, pcm: Int16Array, device: str = "kitchen") -> pb.AudioInput:
    return pb.AudioInput(device_id=device, conversation_id="c1", audio_pcm=pcm.astype("<i2").tobytes(),
                         codec=pb.PCM_S16LE, sample_rate=HUB_RATE, event=event)  # type: ignore[arg-type]


def frames(session: ConversationSession, audio: Int16Array, device: str = "kitchen") -> None:
    for i in range(0, audio.size, FRAME):
        session.handle(msg(pb.CONTINUE, audio[i : i + FRAME], device))


def transcript_of(audio: Int16Array) -> str:
    # Says how much voiced audio it heard, so a stale transcript is visible in the reply.
    n = audio.size // FRAME
    voiced = sum(1 for i in range(n) if np.abs(audio[i * FRAME : (i + 1) * FRAME]).max() > 1000)
    return f"question of {voiced * 20} ms"


def make(
    preemptive: bool = True, *, speculate_ms: int = 100, preemptive_quiet_ms: int = 0
) -> tuple[ConversationSession, Pipeline, FakeLLM]:
    llm = FakeLLM("Sure. Here it is.")
    pipeline = Pipeline(FakeSTT(transcript_of), llm, FakeTTS(), Conversations("sys", 4), speculate_ms=speculate_ms,
                        preemptive=preemptive, preemptive_quiet_ms=preemptive_quiet_ms)
    return ConversationSession(pipeline), pipeline, llm


def queued(session: ConversationSession) -> list[pb.AudioOutput]:
    out = []
    while not session._out.empty():
        item = session._out.get_nowait()
        assert item is not None
        stamped = session._stamp(item)
        if stamped is not None:
            out.append(stamped)
    return out


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)


async def test_reply_is_made_during_the_hangover_and_released_by_end() -> None:
    session, pipeline, _ = make()
    session.handle(msg(pb.START, tone(400)))
    frames(session, quiet(200))  # > speculate_ms: transcription, then the reply, start
    await settle()
    dev = session.devices["kitchen"]
    assert dev.early is not None and dev.held, "reply audio should be ready before END"
    assert queued(session) == [], "nothing may reach the hub before END"
    assert pipeline.conversations.history("kitchen") == [], "no history before END"
    session.handle(msg(pb.END, quiet(20)))
    await settle()
    out = queued(session)
    assert out[0].final_stt == "question of 400 ms"
    assert any(m.audio_pcm for m in out) and out[-1].is_final
    assert out[-1].reply_text == "Sure. Here it is."
    assert out[-1].timing.stt_ms == 1  # reached before END
    assert [e.user for e in pipeline.conversations.history("kitchen")] == ["question of 400 ms"]
    assert pipeline.metrics.counters.get("preemptive_used") == 1
    assert pipeline.metrics.counters.get("stt_speculative_hits") == 1
    assert pipeline.metrics.counters.get("stt_speculative_runs") == 1


async def test_early_transcript_starts_the_reply_only_after_the_longer_quiet() -> None:
    # The defaults' shape: Whisper after 60 ms of quiet, the held reply after 100.
    session, pipeline, llm = make(speculate_ms=60, preemptive_quiet_ms=100)
    session.handle(msg(pb.START, tone(400)))
    frames(session, quiet(80))  # transcribed, but 80 ms may be a stop inside a word
    await settle()
    dev = session.devices["kitchen"]
    assert dev.utterance is not None and dev.utterance.speculation_ready
    assert dev.early is None and len(llm.requests) == 0, "no reply before LLM_PREEMPTIVE_QUIET_MS of quiet"
    frames(session, quiet(40))  # 120 ms: the ready transcript starts the reply at once
    await settle()
    assert dev.early is not None and dev.held and len(llm.requests) == 1
    session.handle(msg(pb.END, quiet(20)))
    await settle()
    out = queued(session)
    assert [m.final_stt for m in out if m.final_stt] == ["question of 400 ms"]
    assert out[-1].reply_text == "Sure. Here it is."
    assert pipeline.metrics.counters.get("preemptive_used") == 1


async def test_a_stop_inside_a_word_costs_a_transcription_but_no_reply() -> None:
    session, pipeline, llm = make(speculate_ms=60, preemptive_quiet_ms=100)
    session.handle(msg(pb.START, tone(400)))
    frames(session, quiet(80))  # the closure of a "t": transcribed ...
    await settle()
    frames(session, tone(300))  # ... and the word goes on
    frames(session, quiet(200))
    await settle()
    assert len(llm.requests) == 1, "one reply, to the whole question"
    session.handle(msg(pb.END, quiet(20)))
    await settle()
    out = queued(session)
    assert [m.final_stt for m in out if m.final_stt] == ["question of 700 ms"]
    assert pipeline.metrics.counters.get("preemptive_discarded") is None
    assert pipeline.metrics.counters.get("preemptive_used") == 1


async def test_speaking_again_discards_the_held_reply() -> None:
    session, pipeline, _ = make()
    session.handle(msg(pb.START, tone(400)))
    frames(session, quiet(200))
    await settle()
    assert session.devices["kitchen"].early is not None
    frames(session, tone(300))  # only a pause: the user goes on
    assert session.devices["kitchen"].early is None
    frames(session, quiet(40))  # END comes before a new speculation finishes
    session.handle(msg(pb.END, quiet(20)))
    await settle()
    out = queued(session)
    finals = [m for m in out if m.is_final]
    assert len(finals) == 1 and [m.final_stt for m in out if m.final_stt] == ["question of 700 ms"]
    assert [e.user for e in pipeline.conversations.history("kitchen")] == ["question of 700 ms"]
    assert pipeline.metrics.counters.get("preemptive_discarded") == 1
    # The STT counters are the answering turn's: one background run, not reused (the words went on
    # after it); the discarded reply's reuse of that run counts nowhere.
    assert pipeline.metrics.counters.get("stt_speculative_runs") == 1
    assert pipeline.metrics.counters.get("stt_speculative_hits") is None


async def test_interrupt_drops_a_held_reply_without_output() -> None:
    session, pipeline, _ = make()
    session.handle(msg(pb.START, tone(400)))
    frames(session, quiet(200))
    await settle()
    session.handle(msg(pb.INTERRUPT, quiet(0)))
    await settle()
    assert queued(session) == []
    assert pipeline.conversations.history("kitchen") == []


async def test_off_means_the_reply_starts_at_end() -> None:
    session, _, _ = make(preemptive=False)
    session.handle(msg(pb.START, tone(400)))
    frames(session, quiet(200))
    await settle()
    assert session.devices["kitchen"].early is None
    session.handle(msg(pb.END, quiet(20)))
    await settle()
    assert queued(session)[-1].is_final


class Router:
    """Routes every turn to an action that counts its runs; ``read_only`` picks the kind."""

    def __init__(self, read_only: bool) -> None:
        self.read_only = read_only
        self.runs = 0

    def route(self, turn: object) -> object:
        from ai_server.pipeline import ReadOnlyAction

        async def act() -> str:
            self.runs += 1
            return "It's noon."

        return ReadOnlyAction(act) if self.read_only else act


def make_routed(read_only: bool) -> tuple[ConversationSession, Pipeline, Router]:
    session, pipeline, _ = make()
    router = Router(read_only)
    pipeline.router = router  # type: ignore[assignment]
    return session, pipeline, router


async def test_a_read_only_answer_is_synthesised_during_the_hangover_and_released_by_end() -> None:
    """Issue 20: "what time is it" needs no END to be answered; its audio waits for END like an
    LLM reply's, instead of being synthesised after it."""
    session, pipeline, router = make_routed(read_only=True)
    session.handle(msg(pb.START, tone(400)))
    frames(session, quiet(200))
    await settle()
    dev = session.devices["kitchen"]
    assert router.runs == 1 and dev.early is not None and dev.held, "the answer's audio is ready before END"
    assert queued(session) == [] and pipeline.conversations.history("kitchen") == []
    session.handle(msg(pb.END, quiet(20)))
    await settle()
    out = queued(session)
    assert any(m.audio_pcm for m in out) and out[-1].is_final and out[-1].reply_text == "It's noon."
    assert router.runs == 1 and [e.assistant for e in pipeline.conversations.history("kitchen")] == ["It's noon."]


async def test_an_action_that_acts_waits_for_end_and_a_discarded_read_only_answer_leaves_nothing() -> None:
    session, _, acting = make_routed(read_only=False)
    session.handle(msg(pb.START, tone(400)))
    frames(session, quiet(200))
    await settle()
    assert acting.runs == 0 and not any(m.audio_pcm for m in session.devices["kitchen"].held)  # waits for END
    session.handle(msg(pb.END, quiet(20)))
    await settle()
    assert acting.runs == 1 and queued(session)[-1].reply_text == "It's noon."

    session, pipeline, answering = make_routed(read_only=True)
    session.handle(msg(pb.START, tone(400)))
    frames(session, quiet(200))
    await settle()
    frames(session, tone(300))  # only a pause: the answer is dropped
    session.handle(msg(pb.INTERRUPT, quiet(0)))
    await settle()
    assert answering.runs == 1 and queued(session) == [] and pipeline.conversations.history("kitchen") == []


class PreviewRouter:
    """Routes every turn to an action that acts at END, with a preview of what it will say."""

    def __init__(self, says: str, preview: str) -> None:
        self.says, self.preview, self.runs = says, preview, 0

    def route(self, turn: object) -> object:
        from ai_server.pipeline import PreviewedAction

        async def act() -> str:
            self.runs += 1
            return self.says

        return PreviewedAction(act, self.preview)


@pytest.mark.parametrize("says", ["Timer set for 5 minutes.", "You already have 10 timers; cancel one first."])
async def test_an_acting_command_runs_at_end_and_its_previewed_sentence_is_synthesised_before(says: str) -> None:
    """Issue 20: "set a timer" must not act before END, but what it will say can be synthesised during
    the hangover; spoken at once when the handler says it, synthesised as before when it does not."""
    session, pipeline, _ = make()
    tts = pipeline.voice.tts
    router = PreviewRouter(says, "Timer set for 5 minutes.")
    pipeline.router = router  # type: ignore[assignment]
    session.handle(msg(pb.START, tone(400)))
    frames(session, quiet(200))
    await settle()
    assert router.runs == 0 and tts.texts == ["Timer set for 5 minutes."]  # type: ignore[attr-defined]
    assert not any(m.audio_pcm for m in session.devices["kitchen"].held)
    session.handle(msg(pb.END, quiet(20)))
    await settle()
    out = queued(session)
    assert router.runs == 1 and out[-1].is_final and out[-1].reply_text == says
    assert [m.reply_text for m in out if m.audio_pcm and m.reply_text] == [says]
    matched = says == router.preview
    assert tts.texts == ["Timer set for 5 minutes."] + ([] if matched else [says])  # type: ignore[attr-defined]
    assert pipeline.metrics.counters.get("previews_spoken" if matched else "previews_missed") == 1


async def test_a_turn_cancelled_while_it_awaits_its_previewed_audio_stays_cancelled() -> None:
    """A barge-in while the preview is still being synthesised must end the turn, not fall back to
    synthesising the sentence again."""
    rendering = asyncio.ensure_future(asyncio.sleep(10))
    waiter = asyncio.ensure_future(Pipeline._rendered(rendering))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert rendering.cancelled()
