"""One StreamConversation: demultiplex devices, run their turns, write replies in order.

The read loop only does cheap work (append audio, start a task), so a device whose turn
is slow never holds up another's frames. Each turn is an asyncio Task that queues its
messages on the single outbound queue; ``outgoing()`` drains it onto the gRPC stream.

Barge-in: INTERRUPT cancels the device's turn task at once and queues its is_final
(``error_message="interrupted"``). Anything that turn still queues afterwards, or that
was queued but not yet written, is dropped by the writer's check on the turn; sequence
numbers are stamped at write time so the hub sees no gaps.

Bounded input (issue 18): every AudioInput is checked first (:mod:`ai_server.stream_input`). A bad
message for a device is refused with one is_final for that device (``error_code=INTERNAL``,
``error_message="refused (<reason>): ..."``, which the hub records as the turn's outcome) and the
rest of that utterance is ignored until its next START; a message whose device_id is unusable has
no one to answer and is dropped. Either way it is counted (``bad_inputs_<reason>``), logged within
a budget, and every other device on the stream is served as before. A stream speaks for at most
``max_devices_per_stream`` devices, an utterance keeps at most ``max_utterance_s`` of audio, and at
most ``MAX_OUT_BACKLOG`` replies wait for the hub to read them: a turn that would queue more is cut
off with ``error_message="reply backlog full"`` instead of growing the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from ai_server.pipeline import Pipeline, Turn
from ai_server.stream_input import BadInput, LogBudget, StreamLimits, check_audio_input, rate_of
from ai_server.utterance import Utterance
from shared.audio import HUB_RATE, StreamResampler, pcm_to_int16
from shared.contract import pb

log = logging.getLogger(__name__)

_turn_ids = itertools.count(1)

#: Outbound messages waiting for the hub to read them. A reply is ~25 messages per second of audio,
#: so this is minutes of speech: only a hub that stopped reading fills it.
MAX_OUT_BACKLOG = 1024


@dataclass
class Device:
    device_id: str
    conversation_id: str = ""
    room: str = ""
    utterance: Utterance | None = None
    resampler: StreamResampler | None = None
    turn: Turn | None = None
    early: Turn | None = None  # a preemptive reply to ``utterance``, held until END
    held: list[pb.AudioOutput] = field(default_factory=list)
    seq: int = 0
    refused: bool = False  # a message of this utterance was refused: ignore the rest until START
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def active(self) -> bool:
        return self.utterance is not None or (self.turn is not None and not self.turn.done)


@dataclass
class _Out:
    turn: Turn
    msg: pb.AudioOutput


class ConversationSession:
    def __init__(self, pipeline: Pipeline, limits: StreamLimits | None = None,
                 log_budget: LogBudget | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.pipeline = pipeline
        self._clock = clock  # stamps ``heard``
        self.limits = limits or StreamLimits()
        self._log_budget = log_budget or LogBudget(log)
        self.devices: dict[str, Device] = {}
        # When each device's last accepted AudioInput came in on this stream (``clock``): the stream
        # carrying a device's audio is where unprompted speech for it goes (ai_server/control/speech.py).
        # Its keys are a subset of ``devices``, so it is bounded the same way.
        self.heard: dict[str, float] = {}
        self._out: asyncio.Queue[_Out | None] = asyncio.Queue()
        self._closed = False
        # Turns no utterance started (start_unprompted_turn): not user turns in the metrics.
        self._unprompted: weakref.WeakSet[Turn] = weakref.WeakSet()
        self._refusals: weakref.WeakSet[Turn] = weakref.WeakSet()  # not turns: no timings, no turn metrics

    # ---- inbound -------------------------------------------------------------------------

    async def read(self, requests: AsyncIterable[pb.AudioInput]) -> None:
        """Consume the hub's stream; when it ends, let running turns finish, then end output."""
        try:
            async for msg in requests:
                try:
                    self.handle(msg)
                except Exception:  # one bad message must not end the stream for everyone
                    log.exception("dropping a bad AudioInput from %r", msg.device_id)
                    self.pipeline.metrics.count("bad_inputs")
            pending = [t for d in self.devices.values() for t in d.tasks]
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        finally:
            self._out.put_nowait(None)

    def handle(self, msg: pb.AudioInput) -> None:
        try:
            check_audio_input(msg)
        except BadInput as exc:
            self._refuse(self.devices.get(msg.device_id), msg, exc)
            return
        dev = self.devices.get(msg.device_id)
        if dev is None:
            if len(self.devices) >= self.limits.max_devices_per_stream:
                self._refuse(None, msg, BadInput(
                    "too_many_devices", f"this stream already speaks for {len(self.devices)} devices "
                    f"(AI_MAX_DEVICES_PER_STREAM={self.limits.max_devices_per_stream})"))
                return
            dev = self.devices[msg.device_id] = Device(msg.device_id)
        self.heard[msg.device_id] = self._clock()
        if dev.refused:
            if msg.event != pb.START:
                self.pipeline.metrics.count("bad_inputs_ignored")  # the rest of a refused utterance
                return
            dev.refused = False
        if msg.conversation_id:
            dev.conversation_id = msg.conversation_id
        if msg.room:
            dev.room = msg.room
        event = msg.event
        if event == pb.INTERRUPT:
            self._interrupt(dev, "interrupted")
            return
        if event == pb.START:
            self._drop_early(dev)
            if dev.utterance is not None:
                log.debug("%r: START without END; dropping the open utterance", dev.device_id)
                dev.utterance.discard()
            dev.utterance = self._new_utterance(dev)
            dev.resampler = None
            if dev.turn is None or dev.turn.done:
                self.pipeline.prefill(dev.device_id, dev.room)
        elif dev.utterance is None:
            if event == pb.CONTINUE and not msg.audio_pcm:
                return
            dev.utterance = self._new_utterance(dev)  # START lost or never sent
        self._add_audio(dev, msg)
        if event == pb.END:
            self._end(dev)
        else:
            self._preempt(dev)

    def _new_utterance(self, dev: Device) -> Utterance:
        utterance = self.pipeline.new_utterance()
        utterance.max_s = self.limits.max_utterance_s
        utterance.on_speculation_done = lambda: self._preempt(dev)
        return utterance

    def _refuse(self, dev: Device | None, msg: pb.AudioInput, exc: BadInput) -> None:
        """Count and log a refused message; tell a known device once per utterance."""
        self.pipeline.metrics.count(f"bad_inputs_{exc.reason}")
        self._log_budget.warn(exc.reason, "refused an AudioInput from %r: %s", msg.device_id[:64], exc)
        if exc.reason == "bad_device_id":
            return  # nobody to answer: the hub could not route a reply to it either
        if dev is not None:
            if dev.refused:
                return
            dev.refused = True
            self._drop_early(dev)
            if dev.utterance is not None:
                dev.utterance.discard()
                dev.utterance = None
        elif msg.event not in (pb.START, pb.END):
            return  # an unknown device over the cap: answered at its utterance's START and END only
        turn = Turn(next(_turn_ids), msg.device_id, msg.conversation_id, time.monotonic(), room=msg.room)
        turn.cancelled = True  # nothing else of this turn will be written
        self._refusals.add(turn)
        self._out.put_nowait(_Out(turn, turn.output(is_final=True, error_code=pb.INTERNAL,
                                                    error_message=f"refused ({exc.reason}): {exc.detail}")))

    def _add_audio(self, dev: Device, msg: pb.AudioInput) -> None:
        utterance = dev.utterance
        if not msg.audio_pcm or utterance is None:
            return
        rate = rate_of(msg)
        pcm = msg.audio_pcm
        if utterance.capped:
            utterance.add(b"")  # nothing is kept; lets a last background transcription start
            return
        if rate != HUB_RATE:
            if dev.resampler is None or dev.resampler.from_rate != rate:
                dev.resampler = StreamResampler(rate, HUB_RATE)
            pcm = dev.resampler.process(pcm_to_int16(pcm)).astype("<i2").tobytes()
        utterance.add(pcm)
        if utterance.capped:
            self.pipeline.metrics.count("utterances_capped")
            log.info("%r: utterance reached AI_MAX_UTTERANCE_S (%.0f s); the rest of it is dropped",
                     dev.device_id, self.limits.max_utterance_s)

    def _end(self, dev: Device) -> None:
        utterance = dev.utterance or self.pipeline.new_utterance()
        dev.utterance = None
        early = dev.early
        if early is not None and not utterance.spoke_after_speculation:
            self._adopt_early(dev, early)
            return
        self._drop_early(dev)
        if dev.turn is not None and not dev.turn.done:
            self._cancel_turn(dev, "superseded")  # a new question before the old reply finished
        self._start_turn(dev, Turn(next(_turn_ids), dev.device_id, dev.conversation_id, time.monotonic(),
                                   room=dev.room, sink=self._queue), utterance)

    def _start_turn(self, dev: Device, turn: Turn, utterance: Utterance) -> None:
        dev.turn = turn
        task = asyncio.get_running_loop().create_task(
            self.pipeline.run_turn(turn, utterance), name=f"turn-{dev.device_id}-{turn.id}"
        )
        turn.task = task
        dev.tasks.add(task)
        task.add_done_callback(dev.tasks.discard)

    # ---- preemptive replies ----------------------------------------------------------------
    # The hub sends END only after its VAD hangover (~300 ms of silence). By then the
    # utterance's background transcription has usually finished, so the reply can start
    # during the hangover: LLM tokens and the first TTS audio are produced but *held* here.
    # END releases them at once; voiced audio before END (the user only paused) throws the
    # reply away, and a new one starts at the next pause. History is written only after
    # END (Turn.committed), so a discarded reply leaves no trace.

    def _preempt(self, dev: Device) -> None:
        utterance = dev.utterance
        if not self.pipeline.preemptive or utterance is None:
            return
        early = dev.early
        if early is not None:
            if utterance.spoke_after_speculation:
                self._drop_early(dev)  # the user went on talking: that reply answers the wrong question
            return
        if not utterance.speculation_ready or (dev.turn is not None and not dev.turn.done):
            return
        if not utterance.quiet_for(self.pipeline.preemptive_quiet_ms):
            return  # maybe a stop inside a word: the next CONTINUE checks again
        turn = Turn(next(_turn_ids), dev.device_id, dev.conversation_id, time.monotonic(), room=dev.room,
                    sink=self._hold, preemptive=True)
        turn.committed.clear()
        dev.early = turn
        dev.held = []
        self.pipeline.metrics.count("preemptive_started")
        self._start_turn(dev, turn, utterance)

    def _hold(self, turn: Turn, msg: pb.AudioOutput) -> None:
        dev = self.devices.get(turn.device_id)
        if dev is not None and dev.early is turn and not turn.cancelled:
            dev.held.append(msg)

    def _adopt_early(self, dev: Device, turn: Turn) -> None:
        """END confirmed the preemptive reply: stages count from now, held output goes out."""
        dev.early = None
        turn.began_t, turn.end_t = turn.end_t, time.monotonic()
        turn.sink = self._queue
        turn.commit()
        held, dev.held = dev.held, []
        for msg in held:
            self._queue(turn, msg)
        self.pipeline.metrics.count("preemptive_used")

    def _drop_early(self, dev: Device) -> None:
        turn, dev.early = dev.early, None
        dev.held = []
        if turn is None:
            return
        turn.cancelled = True
        if turn.task is not None:
            turn.task.cancel()
        if dev.turn is turn:
            dev.turn = None
        self.pipeline.metrics.count("preemptive_discarded")

    def start_unprompted_turn(self, device_id: str, body: Callable[[Turn], Awaitable[None]]) -> asyncio.Task[None]:
        """Run ``body`` as a reply turn for ``device_id`` that no utterance started (a typed chat
        answer spoken on the device). It waits for the device's turn in flight, if any, and is
        then a turn like any other: its output is written in order with sequence numbers, an
        INTERRUPT or a new utterance from the device cancels it, closing the stream stops it.
        Its conversation_id is empty so the hub plays it whatever conversation the device is in.
        ``body`` queues its messages with ``turn.send`` and must end with an is_final. Raises
        RuntimeError when the stream is closing."""
        if self._closed:
            raise RuntimeError("the conversation stream is closing")
        dev = self.devices.get(device_id)
        if dev is None:
            dev = self.devices[device_id] = Device(device_id)
        turn = Turn(next(_turn_ids), device_id, "", time.monotonic(), room=dev.room, sink=self._queue)
        self._unprompted.add(turn)

        async def run() -> None:
            # Wait for the task, not for turn.done: a finished turn's is_final may still be queued,
            # and the queue keeps it ahead of this turn's output anyway.
            while (current := dev.turn) is not None and current.task is not None and not current.task.done():
                await asyncio.wait({current.task})
            dev.turn = turn
            await body(turn)

        task = asyncio.get_running_loop().create_task(run(), name=f"unprompted-{device_id}-{turn.id}")
        turn.task = task
        dev.tasks.add(task)
        task.add_done_callback(dev.tasks.discard)
        return task

    def _interrupt(self, dev: Device, reason: str) -> None:
        self._drop_early(dev)
        if dev.utterance is not None:
            dev.utterance.discard()
            dev.utterance = None
        if dev.turn is not None and not dev.turn.done:
            self._cancel_turn(dev, reason)

    def _cancel_turn(self, dev: Device, reason: str) -> None:
        turn = dev.turn
        assert turn is not None
        turn.cancelled = True
        if turn.task is not None:
            turn.task.cancel()
        self.pipeline.record_cut_off(turn)
        self.pipeline.metrics.count("interrupts" if reason == "interrupted" else reason)
        log.info("turn %r/%d %s", dev.device_id, turn.id, reason)
        # Straight onto the queue, past the turn's sink, which now drops everything.
        self._out.put_nowait(_Out(turn, turn.output(is_final=True, reply_text=" ".join(turn.spoken),
                                                    error_message=reason)))

    def _queue(self, turn: Turn, msg: pb.AudioOutput) -> None:
        if turn.cancelled or self._closed:
            return  # late output of a cancelled turn
        if self._out.qsize() >= MAX_OUT_BACKLOG and not msg.is_final:
            self._overflow(turn)
            return
        self._out.put_nowait(_Out(turn, msg))

    def _overflow(self, turn: Turn) -> None:
        """The hub is not reading: cut this turn off (one is_final) rather than queue without end."""
        self.pipeline.metrics.count("output_overflow")
        self._log_budget.warn("output_overflow", "turn %r/%d cut off: %d replies wait for the hub to read them",
                              turn.device_id, turn.id, self._out.qsize())
        turn.cancelled = True
        if turn.task is not None:
            turn.task.cancel()
        dev = self.devices.get(turn.device_id)
        if dev is not None and dev.early is turn:
            dev.early = None
            dev.held = []
        self._out.put_nowait(_Out(turn, turn.output(is_final=True, reply_text=" ".join(turn.spoken),
                                                    error_code=pb.INTERNAL, error_message="reply backlog full")))

    # ---- outbound ------------------------------------------------------------------------

    async def outgoing(self) -> AsyncIterator[pb.AudioOutput]:
        while True:
            item = await self._out.get()
            if item is None:
                return
            msg = self._stamp(item)
            if msg is not None:
                yield msg

    def _stamp(self, item: _Out) -> pb.AudioOutput | None:
        """Drop stale output; set sequence number and, on is_final, the turn's timing."""
        turn, msg = item.turn, item.msg
        if turn.final_sent or (turn.cancelled and not msg.is_final):
            return None
        dev = self.devices.get(turn.device_id)  # None: a refusal for a device over the cap
        if dev is not None:
            dev.seq += 1
            msg.sequence_num = dev.seq
        if msg.audio_pcm and not turn.audio_sent:
            turn.audio_sent = True
            turn.mark("first_frame_sent")
        if msg.is_final:
            turn.final_sent = True
            turn.mark("total")
            msg.timing.CopyFrom(turn.timing())
            if turn not in self._refusals:
                self._finished(turn, msg)
        return msg

    def _finished(self, turn: Turn, msg: pb.AudioOutput) -> None:
        metrics = self.pipeline.metrics
        if turn in self._unprompted:  # no utterance, no END: its stage times mean nothing
            metrics.count("unprompted_turns")
            log.info("unprompted turn %r/%d%s: code=%s", turn.device_id, turn.id,
                     " (cancelled)" if turn.cancelled else "", pb.ErrorCode.Name(msg.error_code))
            log.debug("unprompted turn %r/%d: reply=%r", turn.device_id, turn.id, msg.reply_text[:200])
            return
        stages = turn.stage_ms()
        if turn.cancelled:
            stages.pop("total", None)  # a cut-off turn says nothing about reply length
        else:
            metrics.count("turns")
        metrics.observe_turn(stages)
        if msg.error_code != pb.NONE:
            metrics.error(pb.ErrorCode.Name(msg.error_code))
        t = msg.timing
        # Timings at INFO; what was said only at DEBUG: transcripts must not outlive the history's
        # retention in the journal (L1).
        log.info(
            "turn %r/%d%s: stt=%dms llm=%dms clause=%dms tts=%dms sent=%dms total=%dms code=%s",
            turn.device_id, turn.id, " (cancelled)" if turn.cancelled else "", t.stt_ms, t.llm_first_token_ms,
            t.first_sentence_ms, t.tts_first_audio_ms, t.first_frame_sent_ms, t.total_ms,
            pb.ErrorCode.Name(msg.error_code),
        )
        if turn.began_t is not None:
            # Where the held reply stood when END came (negative: before END); what is left after
            # END is the latency a user hears, so this line shows which stage to shorten.
            early = {stage: round((at - turn.end_t) * 1000) for stage, at in turn.marks.items()}
            log.info("turn %r/%d: preemptive, started %d ms before END; stages from END: %s", turn.device_id,
                     turn.id, round((turn.end_t - turn.began_t) * 1000), early)
        log.debug("turn %r/%d: heard=%r reply=%r", turn.device_id, turn.id, turn.transcript, msg.reply_text[:200])

    # ---- teardown ------------------------------------------------------------------------

    @property
    def active_conversations(self) -> int:
        return sum(1 for d in self.devices.values() if d.active)

    async def close(self) -> None:
        """The stream is gone: stop every turn and background transcription."""
        self._closed = True
        tasks = []
        for dev in self.devices.values():
            if dev.utterance is not None:
                dev.utterance.discard()
                dev.utterance = None
            if dev.turn is not None and not dev.turn.done:
                dev.turn.cancelled = True
            for task in dev.tasks:
                task.cancel()
                tasks.append(task)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
