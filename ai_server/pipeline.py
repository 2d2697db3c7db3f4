"""One turn: transcript -> LLM -> clauses -> TTS -> AudioOutput messages, with timing.

``Pipeline`` holds the loaded backends and everything shared by all streams (history,
metrics). ``Pipeline.run_turn`` is the body of a turn's asyncio Task; it only *queues*
messages (``Turn.send``); the stream's writer stamps sequence numbers, first-frame and
total time, and drops anything a cancelled turn still produces.

The LLM producer and the TTS consumer run concurrently: the first clause is synthesised
and sent while the model is still generating the rest. All stage times are taken on
``time.monotonic()`` from the arrival of END.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import numpy as np

from ai_server.assist.core import AssistContext
from ai_server.assist.tools import ASSIST_CONTEXT
from ai_server.clauses import ClauseSplitter
from ai_server.conversation import Conversations
from ai_server.errors import LLMError, StageError, STTError, TTSError
from ai_server.llm import LLMBackend, Message
from ai_server.metrics import Metrics
from ai_server.stt import STTBackend
from ai_server.tts import TTSBackend
from ai_server.utterance import Utterance
from shared.aio import closing
from shared.audio import Int16Array
from shared.contract import pb
from shared.errors import one_line

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    Code: TypeAlias = pb.ErrorCode.ValueType

APOLOGY: dict[Code, str] = {
    pb.STT_FAILED: "Sorry, I didn't catch that.",
    pb.LLM_FAILED: "Sorry, I can't answer that right now.",
    pb.INTERNAL: "Sorry, something went wrong.",
}
CODE_OF_STAGE: dict[type[StageError], Code] = {STTError: pb.STT_FAILED, LLMError: pb.LLM_FAILED,
                                              TTSError: pb.TTS_FAILED}


def error_code_of(exc: BaseException) -> Code:
    for cls, code in CODE_OF_STAGE.items():
        if isinstance(exc, cls):
            return code
    return pb.INTERNAL


def _set(event: asyncio.Event) -> asyncio.Event:
    event.set()
    return event


@dataclass(eq=False)
class Turn:
    """A reply in progress for one device (from END to is_final)."""

    id: int
    device_id: str
    conversation_id: str
    end_t: float
    room: str = ""
    marks: dict[str, float] = field(default_factory=dict)
    transcript: str = ""
    raw_reply: str = ""  # the LLM's text as generated (kept in history: keeps its prompt cache valid)
    spoken: list[str] = field(default_factory=list)  # clauses whose audio was queued
    cancelled: bool = False
    final_sent: bool = False
    audio_sent: bool = False
    task: asyncio.Task[None] | None = None
    sink: Callable[[Turn, pb.AudioOutput], None] | None = None  # the stream's outbound queue
    # Set once the turn's reply is wanted. A preemptive turn (started before END, see
    # ai_server/session.py) runs with this clear and must not touch history until END confirms it.
    committed: asyncio.Event = field(default_factory=lambda: _set(asyncio.Event()))
    preemptive: bool = False
    began_t: float | None = None  # a preemptive turn: when it started, before END (end_t)
    _on_commit: list[Callable[[], None]] = field(default_factory=list)

    def when_committed(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` now if the reply is wanted, else once END confirms it (never if it is discarded)."""
        if self.committed.is_set():
            fn()
        else:
            self._on_commit.append(fn)

    def commit(self) -> None:
        """END confirmed a preemptive turn: its reply is wanted."""
        self.committed.set()
        pending, self._on_commit = self._on_commit, []
        for fn in pending:
            fn()

    def send(self, msg: pb.AudioOutput) -> None:
        if self.sink is not None:
            self.sink(self, msg)

    def mark(self, stage: str) -> None:
        self.marks.setdefault(stage, time.monotonic())

    def stage_ms(self) -> dict[str, float]:
        """Ms from END to each stage; 0 for a stage a preemptive turn reached before END."""
        return {stage: max(0.0, (t - self.end_t) * 1000.0) for stage, t in self.marks.items()}

    def timing(self) -> pb.TurnTiming:
        """TurnTiming in whole ms; a stage reached at or before END reads 1 (0 = not reached)."""
        ms = {k: max(1, round(v)) for k, v in self.stage_ms().items()}
        return pb.TurnTiming(
            stt_ms=ms.get("stt", 0),
            llm_first_token_ms=ms.get("llm_first_token", 0),
            first_sentence_ms=ms.get("first_sentence", 0),
            tts_first_audio_ms=ms.get("tts_first_audio", 0),
            first_frame_sent_ms=ms.get("first_frame_sent", 0),
            total_ms=ms.get("total", 0),
        )

    @property
    def done(self) -> bool:
        return self.final_sent or self.cancelled

    def output(self, **fields: Any) -> pb.AudioOutput:
        return pb.AudioOutput(device_id=self.device_id, conversation_id=self.conversation_id, **fields)


class Router(Protocol):
    """Spoken requests the server carries out itself instead of asking the LLM ("play it in the kitchen").

    ``route`` only *parses* the turn's transcript: None means the LLM answers. Otherwise it returns
    the action, which the pipeline runs once the turn is committed (a preemptive turn may still be
    thrown away, and must not have played anything anywhere; a :class:`ReadOnlyAction` runs at once)
    and whose result is the sentence spoken
    to the asker as the reply, or None when the request turns out not to be one after all (the
    LLM answers). Set as ``Pipeline.router`` by ai_server/app.py (ai_server/assist/router.py).
    """

    def route(self, turn: Turn) -> Callable[[], Awaitable[str | None]] | None: ...


class ReadOnlyAction:
    """A routed action that only answers and changes nothing (the time, a sum, a camera's record).

    Unlike an action that acts, it need not wait for END to commit a preemptive turn: it runs, and
    its answer is synthesised, during the hub's hangover, and the audio is held like a preemptive
    LLM reply's (issue 20: ~60 ms of TTS after END saved). A discarded turn drops the audio, and
    nothing happened anywhere.
    """

    def __init__(self, answer: Callable[[], Awaitable[str | None]]) -> None:
        self._answer = answer

    def __call__(self) -> Awaitable[str | None]:
        return self._answer()


class PreviewedAction:
    """A routed action that acts ("set a timer for 5 minutes"), so it runs only once END commits
    the turn, with the sentence it will most likely say (``preview``, computed without acting).
    The pipeline synthesises the preview during the hub's hangover and, when the action then says
    exactly that, speaks it at once (issue 20: ~75 ms of TTS after END saved); otherwise what it
    said is synthesised as before."""

    def __init__(self, act: Callable[[], Awaitable[str | None]], preview: str) -> None:
        self._act = act
        self.preview = preview

    def __call__(self) -> Awaitable[str | None]:
        return self._act()


@dataclass(frozen=True, slots=True)
class Seen:
    """What a :class:`Looker` found for one question; empty when the question is not for it."""

    prompt: str = ""  # put just before the user's words: what a camera sees (the LLM answers)
    # Said as the reply without the LLM: facts from the store ("at 03:12 the front door camera saw
    # a person") and "no camera can see that" must not be paraphrased into a guess by a small model.
    answer: str = ""


class Looker(Protocol):
    """Where the assistant looks (ai_server/media/selection.py, spec §8.10): a camera's view for
    the prompt, or an answer from the stored history. Set as ``Pipeline.looker`` by ai_server/app.py.
    """

    async def look(self, device_id: str, room: str, question: str) -> Seen: ...


class Speech(Protocol):
    """What speaks on a turn: :class:`Voice`, or a :class:`Pipeline` (which speaks through its voice)."""

    tts: TTSBackend
    chunk_ms: int

    async def speak_clause(self, turn: Turn, text: str) -> None: ...


# Piper starts every clause with 30-40 ms of near silence (measured on the shipped voice). Between
# clauses that is a natural pause; before a reply's first words it is only latency, so it is cut
# to LEAD_KEEP_MS before the first sample above LEAD_LEVEL (-50 dBFS).
LEAD_LEVEL = 104
LEAD_KEEP_MS = 5


def trim_lead(pcm: Int16Array, rate: int) -> Int16Array:
    """``pcm`` from LEAD_KEEP_MS before its first sample above LEAD_LEVEL (all of it if none is)."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > LEAD_LEVEL)
    if loud.size == 0:
        return pcm
    return pcm[max(0, int(loud[0]) - rate * LEAD_KEEP_MS // 1000):]


async def _replay(chunks: list[Int16Array]) -> AsyncIterator[Int16Array]:
    for chunk in chunks:
        yield chunk


class Voice:
    """The TTS engine and the size of the pieces it is sent in. Built before the pipeline (by
    ai_server/assembly.py) so that what speaks without a user turn (control/speech.py, timers) needs
    the voice, not the pipeline whose router uses them."""

    def __init__(self, tts: TTSBackend, chunk_ms: int = 40) -> None:
        self.tts = tts
        self.chunk_ms = chunk_ms

    async def render(self, text: str) -> list[Int16Array]:
        """Synthesise ``text`` ahead of need (a PreviewedAction's sentence); speak_clause plays it."""
        out: list[Int16Array] = []
        async with closing(self.tts.synthesize(text)) as chunks:
            async for audio in chunks:
                out.append(audio)
        return out

    async def speak_clause(self, turn: Turn, text: str, rendered: list[Int16Array] | None = None) -> None:
        """Synthesise one clause and queue it in chunk_ms pieces; the first piece carries the text.
        ``rendered``: the clause already synthesised by :meth:`render`.

        The one TTS -> AudioOutput path: replies, apologies, and speech no utterance asked for
        (ai_server/control/speech.py) all go through it."""
        rate = self.tts.sample_rate
        step = max(1, rate * self.chunk_ms // 1000)
        first = True
        opening = not turn.spoken  # the reply's first words: nothing is playing yet
        async with closing(self.tts.synthesize(text) if rendered is None else _replay(rendered)) as chunks:
            async for audio in chunks:
                if audio.size == 0:
                    continue
                turn.mark("tts_first_audio")
                pcm = np.asarray(audio, dtype="<i2")
                if opening:
                    pcm = trim_lead(pcm, rate)
                    opening = False
                for start in range(0, pcm.size, step):
                    msg = turn.output(audio_pcm=pcm[start : start + step].tobytes(), sample_rate=rate)
                    if first:
                        msg.reply_text = text
                        turn.spoken.append(text)
                        first = False
                    turn.send(msg)


class Pipeline:
    """Backends and shared state; ``run_turn`` runs one turn."""

    def __init__(
        self,
        stt: STTBackend,
        llm: LLMBackend,
        tts: TTSBackend,
        conversations: Conversations,
        metrics: Metrics | None = None,
        *,
        speculate_ms: int = 0,
        chunk_ms: int = 40,
        degraded: bool = False,
        preemptive: bool = False,
        preemptive_quiet_ms: int = 0,
        voice: Voice | None = None,
        router: Router | None = None,
        looker: Looker | None = None,
    ) -> None:
        self.stt = stt
        self.llm = llm
        self.tts = tts
        self.voice = voice or Voice(tts, chunk_ms)
        self.conversations = conversations
        self.metrics = metrics or Metrics()
        self.speculate_ms = speculate_ms
        self.chunk_ms = chunk_ms
        self.degraded = degraded
        self.preemptive = preemptive
        self.preemptive_quiet_ms = preemptive_quiet_ms  # quiet before a held reply starts (session)
        self.started = time.monotonic()
        self._prefill: asyncio.Task[None] | None = None
        self.router = router  # consulted after STT, before the LLM (None: every turn is a question)
        self.looker = looker  # visual questions get a camera's view in the prompt

    def new_utterance(self) -> Utterance:
        return Utterance(self.stt, speculate_ms=self.speculate_ms)

    def record_cut_off(self, turn: Turn) -> None:
        """A barge-in cut the reply: remember the exchange as far as it was spoken. Called at
        INTERRUPT itself (not when the task unwinds) so the prefill for the utterance that
        follows at once already sees the history the next prompt will have."""
        if turn.transcript:
            self.conversations.record(turn.device_id, turn.transcript, " ".join(turn.spoken), room=turn.room)

    def prefill(self, device_id: str, room: str = "") -> None:
        """The user started speaking: let the LLM evaluate this device's prompt prefix now."""
        self.conversations.follow(device_id)  # the user may have come from another room
        self._prefill_prefix(device_id, room)

    def _prefill_prefix(self, device_id: str, room: str) -> None:
        if self._prefill is not None and not self._prefill.done():
            return  # one at a time; the LLM is busy with it anyway
        messages = self.conversations.messages(device_id, "", room)
        self._prefill = asyncio.get_running_loop().create_task(self._run_prefill(messages))

    async def _run_prefill(self, messages: list[Message]) -> None:
        try:
            await self.llm.prefill(messages)
        except Exception as exc:
            log.debug("LLM prefill failed: %s", exc)

    async def run_turn(self, turn: Turn, utterance: Utterance) -> None:
        code: Code = pb.NONE
        message = ""
        reply: list[str] = []
        try:
            try:
                turn.transcript = await utterance.transcript()
            except Exception as exc:
                code, message = pb.STT_FAILED, one_line(exc)
                log.warning("turn %s/%d: STT failed: %s", turn.device_id, turn.id, message)
            turn.mark("stt")
            # Counted for the turn that answers: a preemptive turn END throws away (the user went on)
            # shares its utterance with the one that answers, which would count them twice.
            runs, reused = utterance.speculative_runs, utterance.reused
            turn.when_committed(lambda: self._count_stt(runs, reused))
            turn.send(turn.output(final_stt=turn.transcript))
            if code == pb.NONE and not turn.transcript.strip():
                self.metrics.count("empty_transcripts")
                turn.send(turn.output(is_final=True))
                return
            if code == pb.NONE:
                action = self._routed(turn)
                code, message, reply = await (self._reply(turn) if action is None else self._carry_out(turn, action))
            if code in APOLOGY:
                reply = [*reply, await self._apologise(turn, code)]
        except Exception as exc:  # a bug in our own code: answer INTERNAL, keep the stream alive
            log.exception("turn %s/%d failed", turn.device_id, turn.id)
            code, message = pb.INTERNAL, one_line(exc)
            reply = [*reply, await self._apologise(turn, code)]
        if code in (pb.NONE, pb.TTS_FAILED):
            await turn.committed.wait()  # a preemptive reply counts only once END confirms it
            self.conversations.record(turn.device_id, turn.transcript, turn.raw_reply.strip(), room=turn.room)
        turn.send(turn.output(is_final=True, reply_text=" ".join(r for r in reply if r),
                               error_code=code, error_message=message))
        if code in (pb.NONE, pb.TTS_FAILED):
            # The next prompt's prefix now, while the reply plays, not at the next START: a history
            # trim (the whole prompt again: seconds on 2 cores) then costs the next question nothing.
            self._prefill_prefix(turn.device_id, turn.room)

    def _count_stt(self, runs: int, reused: bool) -> None:
        self.metrics.count("stt_speculative_runs", runs)
        if reused:
            self.metrics.count("stt_speculative_hits")

    async def _reply(self, turn: Turn) -> tuple[Code, str, list[str]]:
        """LLM -> clauses -> TTS, concurrently. Returns (error code, message, reply clauses)."""
        self.conversations.follow(turn.device_id)  # also when START was lost (no prefill)
        seen = await self._look(turn)
        if seen.answer:
            async def answer() -> str:
                return seen.answer

            return await self._carry_out(turn, ReadOnlyAction(answer), counter="looked_up_answers")
        messages = self.conversations.messages(turn.device_id, turn.transcript, turn.room, seen.prompt)
        clauses: asyncio.Queue[str | None] = asyncio.Queue()
        llm_error: list[BaseException] = []
        # The first clause gates what the user hears: while it is synthesised the LLM stops reading
        # (it pauses LOOKAHEAD tokens on), so TTS has every core; the next clause is needed only
        # once that audio has played, seconds later (issue 20: piper on 2 threads, 93 -> 59 ms for
        # a short clause alone; in the whole chain under other load p90 329-396 -> 303-398 ms).
        first_spoken = asyncio.Event()

        async def produce() -> None:
            # LLM tool calls act for this device (a timer rings where it was asked for); the var
            # is set inside this task only.
            ASSIST_CONTEXT.set(AssistContext(now=datetime.now().astimezone(), device_id=turn.device_id,
                                             room=turn.room or None))
            splitter = ClauseSplitter()
            try:
                async with closing(self.llm.stream(messages)) as pieces:
                    async for piece in pieces:
                        turn.mark("llm_first_token")
                        turn.raw_reply += piece
                        for clause in splitter.push(piece):
                            first = "first_sentence" not in turn.marks
                            if first:
                                self.llm.first_clause_out()  # TTS takes the cores from here on
                            turn.mark("first_sentence")
                            clauses.put_nowait(clause)
                            if first:
                                await first_spoken.wait()
                for clause in splitter.flush():
                    turn.mark("first_sentence")
                    clauses.put_nowait(clause)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                llm_error.append(exc)
            finally:
                clauses.put_nowait(None)

        reply: list[str] = []
        tts_error: list[BaseException] = []

        async def consume() -> None:
            while (clause := await clauses.get()) is not None:
                reply.append(clause)
                if tts_error:
                    continue  # keep collecting the text: the reply still goes out as text
                try:
                    await self.speak_clause(turn, clause)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    tts_error.append(exc)
                    log.warning("turn %s/%d: TTS failed: %s", turn.device_id, turn.id, one_line(exc))
                finally:
                    first_spoken.set()

        # Sibling tasks: cancelling the turn cancels both at once, so llama.cpp stops at the
        # next token even while piper is still finishing the clause it is synthesising.
        async with asyncio.TaskGroup() as group:
            group.create_task(produce(), name=f"llm-{turn.device_id}-{turn.id}")
            group.create_task(consume(), name=f"tts-{turn.device_id}-{turn.id}")
        if llm_error:
            err = llm_error[0]
            log.warning("turn %s/%d: LLM failed: %s", turn.device_id, turn.id, one_line(err))
            return pb.LLM_FAILED, one_line(err), reply
        if tts_error:
            return pb.TTS_FAILED, one_line(tts_error[0]), reply
        return pb.NONE, "", reply

    async def _look(self, turn: Turn) -> Seen:
        if self.looker is None:
            return Seen()
        try:
            seen = await self.looker.look(turn.device_id, turn.room, turn.transcript)
        except Exception:  # vision trouble must not cost the user the answer: answer without it
            log.exception("turn %s/%d: visual context failed; answering without it", turn.device_id, turn.id)
            self.metrics.count("visual_context_errors")
            return Seen()
        if seen.prompt or seen.answer:
            self.metrics.count("visual_questions")
        return seen

    def _routed(self, turn: Turn) -> Callable[[], Awaitable[str | None]] | None:
        if self.router is None:
            return None
        try:
            return self.router.route(turn)
        except Exception:  # a router bug must not cost the user the answer: the LLM gets the turn
            log.exception("turn %s/%d: router failed; asking the LLM", turn.device_id, turn.id)
            return None

    async def _carry_out(
        self, turn: Turn, action: Callable[[], Awaitable[str | None]], counter: str = "routed_turns"
    ) -> tuple[Code, str, list[str]]:
        """A routing request: act, then speak the confirmation as the reply (the LLM is not asked)."""
        preview = action.preview if isinstance(action, PreviewedAction) else ""
        rendering = asyncio.ensure_future(self.voice.render(preview)) if preview else None
        try:
            if not isinstance(action, ReadOnlyAction):
                await turn.committed.wait()  # a preemptive turn END may still discard must not play anything elsewhere
            return await self._act(turn, action, counter, preview, rendering)
        finally:
            if rendering is not None:
                rendering.cancel()

    async def _act(
        self, turn: Turn, action: Callable[[], Awaitable[str | None]], counter: str, preview: str,
        rendering: asyncio.Future[list[Int16Array]] | None,
    ) -> tuple[Code, str, list[str]]:
        self.conversations.follow(turn.device_id)  # the reply to replay may be the one given in another room
        said = await action()
        if said is None:  # declined once run (an intent handler's handled=False): the LLM answers
            return await self._reply(turn)
        text = said.strip()
        self.metrics.count(counter)
        turn.raw_reply = text
        turn.mark("first_sentence")
        rendered = await self._rendered(rendering) if rendering is not None and text == preview else None
        if rendering is not None:
            self.metrics.count("previews_spoken" if rendered is not None else "previews_missed")
        try:
            await self.speak_clause(turn, text, rendered)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("turn %s/%d: TTS failed: %s", turn.device_id, turn.id, one_line(exc))
            return pb.TTS_FAILED, one_line(exc), [text]
        return pb.NONE, "", [text]

    @staticmethod
    async def _rendered(rendering: asyncio.Future[list[Int16Array]]) -> list[Int16Array] | None:
        """The previewed sentence's audio, or None (its synthesis failed: speak_clause tries again).
        A cancelled turn stays cancelled (awaiting the rendering cancels it along with the turn)."""
        try:
            return await rendering
        except asyncio.CancelledError:
            raise
        except Exception:
            return None

    async def speak_clause(self, turn: Turn, text: str, rendered: list[Int16Array] | None = None) -> None:
        """See :meth:`Voice.speak_clause`."""
        await self.voice.speak_clause(turn, text, rendered)

    async def _apologise(self, turn: Turn, code: Code) -> str:
        """Speak a short apology if TTS works; the text goes in reply_text either way."""
        text = APOLOGY.get(code, APOLOGY[pb.INTERNAL])
        try:
            await self.speak_clause(turn, text)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("turn %s/%d: apology not spoken: %s", turn.device_id, turn.id, one_line(exc))
        return text
