"""One device's WebRTC session: mic audio -> VAD -> AI uplink, AI replies -> TTS track, camera -> hub.vision.

A session owns its RTCPeerConnection, its inbound-audio (and camera) task, its outbound TtsTrack, its
VAD state machine and its dead-peer watchdog; :meth:`DeviceSession.close` frees all of
them. It talks to the rest of the hub only through :class:`SessionHost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import numpy as np
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from hub.ai_link import Outbound
from hub.ai_pool import AiPool
from hub.arbitration import Arbiter, Claim, ClaimState
from hub.end_of_turn import TurnJudge, verdict_of
from hub.listening import ALWAYS, WAKE_WORD, GateConfig, ListeningGate, ListeningModes
from hub.media_in import AudioIngest, decode_audio_inline
from hub.metrics import HubMetrics
from hub.rooms import RoomDirectory
from hub.tts_track import GapTolerantOpusEncoder, TtsTrack
from hub.turns import TurnLog, TurnRecord, error_name, timing_to_dict
from hub.vad import (
    END_MAX_LENGTH,
    END_SILENCE,
    TurnCheck,
    VadConfig,
    VadEvent,
    VadEventKind,
    VadStateMachine,
    VoiceDetector,
)
from hub.vision import VisionService
from hub.web.auth import is_browser_id
from shared import control_channel
from shared.audio import FRAME_MS, HUB_RATE, Int16Array, rms_dbfs
from shared.config import HubSettings
from shared.contract import pb
from shared.rtc_tuning import tune_answer_opus, tune_jitter_buffer
from shared.wakeword import WAKE_WORDS, WakeWordDetector

log = logging.getLogger("naila.hub.session")

# Sessions closed for these reasons are dead peers.
DEAD_PEER_REASONS = ("ice_failed", "no_rtp")
SILENCE_DBFS = -120.0
ARBITRATION_PREROLL_FRAMES = 15  # levels before the onset a claim compares (room noise)
MAX_HELD_FRAMES = 500  # 10 s of one utterance held for a stood-down device that may be re-checked
LEVEL_RELEASE_DB = 1.5  # per 20 ms frame: the meter falls 75 dB/s, so peaks stay visible between polls


class SessionHost(Protocol):
    """What a session needs from the hub."""

    settings: HubSettings
    link: AiPool
    metrics: HubMetrics
    turns: TurnLog

    def next_sequence(self, device_id: str) -> int: ...

    def make_detector(self) -> VoiceDetector: ...

    def session_closed(self, session: DeviceSession) -> None: ...


def new_conversation_id(device_id: str) -> str:
    return f"{device_id}-{uuid.uuid4().hex[:8]}"


class DeviceSession:
    """Everything the hub holds for one connected device."""

    def __init__(
        self,
        device_id: str,
        pc: RTCPeerConnection,
        host: SessionHost,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        s = host.settings
        self.device_id = device_id
        self.conversation_id = new_conversation_id(device_id)
        self.pc = pc
        self.host = host
        self._clock = clock
        self.created_at = clock()
        self.last_media_at = self.created_at
        self.closed = False
        self.close_reason = ""
        # A browser's adaptive jitter buffer hears a reply sooner without the track's one-frame lead
        # (hub/tts_track.py); the device's fixed prebuffer sooner with it.
        self.tts = TtsTrack(on_playout=self._on_playout, clock=clock, lead_frames=0 if is_browser_id(device_id) else 1)
        # AUDIO_END_OF_TURN=smart_turn (hub/end_of_turn.py): the model is asked after a short pause and
        # the hangover becomes the fallback. A host without a judge (unit-test hosts, silence) waits
        # out HUB_VAD_HANGOVER_MS as before.
        self._judge: TurnJudge | None = getattr(host, "turn_judge", None)
        self._going_up = False  # the open VAD utterance's START passed the listening gate
        config = VadConfig.from_ms(
            onset_frames=s.hub_vad_onset_frames,
            hangover_ms=s.hub_vad_hangover_ms,
            check_ms=s.hub_end_of_turn_check_ms if self._judge else 0,
            fallback_ms=s.hub_end_of_turn_fallback_ms if self._judge else 0,
            end_threshold=s.hub_end_of_turn_threshold,
            hangover_threshold=s.hub_end_of_turn_hangover_threshold,
            preroll_ms=s.hub_vad_preroll_ms,
            barge_in_frames=s.hub_barge_in_frames,
            frame_ms=FRAME_MS,
            sample_rate=HUB_RATE,
            max_utterance_ms=s.hub_max_utterance_s * 1000,
        )
        self.vad = VadStateMachine(host.make_detector(), config)
        # Listening modes (hub/listening.py, issue 19): which utterances go upstream. A host without
        # a mode directory (unit-test hosts) listens always, as the hub did before modes existed.
        self._modes: ListeningModes | None = getattr(host, "listening_modes", None)
        frames_per_s = 1000 / FRAME_MS
        self.listening = ListeningGate(
            self._modes.mode_of(device_id) if self._modes is not None else ALWAYS,
            GateConfig(
                follow_up_frames=round(s.hub_follow_up_s * frames_per_s),
                armed_frames=round(s.hub_wake_timeout_s * frames_per_s),
                barge_in_plain_speech=s.hub_barge_in_plain_speech,
            ),
        )
        self._wake: WakeWordDetector | None = None  # made on first use: only wake_word streams pay for it
        self._awaiting_reply = False  # a woken turn's END went up and its is_final has not come back
        self.wake_heard_at: float | None = None  # capture time of the last wake word (for /health, the demo)
        self._ingest = AudioIngest(HUB_RATE)
        # Mic level as a meter shows it (instant attack, LEVEL_RELEASE_DB per frame release), for the dashboard.
        self.input_level_dbfs = SILENCE_DBFS
        # Arbitration (hub/arbitration.py): recent frame levels are a claim's pre-roll; while a
        # claim is undecided, or lost but possibly re-checked, the utterance's events are held.
        self._arbiter: Arbiter | None = getattr(host, "arbiter", None)
        self._rooms: RoomDirectory | None = getattr(host, "rooms", None)
        self._recent_levels: deque[tuple[float, float]] = deque(maxlen=ARBITRATION_PREROLL_FRAMES)
        self._claim: Claim | None = None
        self._held: list[tuple[VadEvent, float]] = []
        self._held_frames = 0
        # Capture times of recent frames, indexed by VAD frame index (for timestamp_ms).
        self._times: deque[float] = deque(
            maxlen=config.preroll_frames + config.barge_in_frames + config.onset_frames + 4
        )
        # Uplink utterance bookkeeping: the stream generation its START went out on.
        self._utterance_generation: int | None = None
        # Downlink turn bookkeeping.
        self._end_sent_at: float | None = None
        self._end_token: object | None = None  # which END the link's "written" callback is about
        self._turn: TurnRecord | None = None  # turn whose is_final has not arrived
        self._turn_first_audio = False
        self._awaiting_playout: tuple[TurnRecord, float] | None = None  # (turn, its END time)
        self._drop_until_final = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._mic_attached = False
        self._camera_attached = False
        # The hub's vision pipeline (hub/vision), None when HUB_VISION is off.
        self._vision: VisionService | None = getattr(host, "vision", None)
        self._watchdog: asyncio.Task[None] | None = None
        self._control: RTCDataChannel | None = None
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_connection_state)
        pc.on("datachannel", self._on_datachannel)

    # ----- signaling -----

    async def accept_offer(self, sdp: str) -> None:
        """Apply the device's offer (raises on an SDP aiortc cannot use)."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        kinds = [t.kind for t in self.pc.getTransceivers()]
        if "audio" not in kinds and "video" not in kinds:  # a camera-only device is fine (issue 22)
            raise ValueError("offer has no audio or video")
        for t in self.pc.getTransceivers():
            if t.kind == "audio":
                tune_jitter_buffer(t.receiver, self.host.settings.hub_jitter_prefetch)
                decode_audio_inline(t.receiver)  # no decoder thread per device (hub/media_in.py)

    async def answer(self) -> str:
        """Attach the TTS track (not for a camera-only device) and build the answer (waits for ICE gathering)."""
        audio = next((t for t in self.pc.getTransceivers() if t.kind == "audio"), None)
        if audio is not None:
            self.pc.addTrack(self.tts)
            webrtc = getattr(self.host, "webrtc", None)  # WEBRTC_AUDIO_BITRATE for the reply too
            if webrtc is not None:
                # An Opus reply lets the track send idle frames as one pre-encoded silence packet, and
                # encode reply frames itself with the sender's encoder (no executor hop per frame).
                encoder = GapTolerantOpusEncoder()
                if tune_answer_opus(audio, webrtc.webrtc_audio_bitrate, encoder):
                    self.tts.opus_silence = True
                    self.tts.encoder = encoder
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        return str(self.pc.localDescription.sdp)

    def start(self) -> None:
        """Start the dead-peer watchdog (the session is registered and answered)."""
        self.host.metrics.sessions_opened += 1
        self._watchdog = asyncio.create_task(self._watch(), name=f"watchdog-{self.device_id}")

    # ----- media in -----

    def _on_track(self, track: Any) -> None:
        if self.closed:
            return
        kind = getattr(track, "kind", "")
        # The first audio track is the microphone, the first video track the camera (when the hub
        # runs vision, HUB_VISION); anything else is read and discarded.
        coro: Coroutine[Any, Any, None]
        if kind == "audio" and not self._mic_attached:
            self._mic_attached = True
            coro = self._consume_audio(track)
        elif kind == "video" and not self._camera_attached and self._vision is not None:
            self._camera_attached = True
            coro = self._vision.consume(self.device_id, track, on_frame=self._touch)
        else:
            coro = self._drain(track)
        task = asyncio.create_task(coro, name=f"{kind}-in-{self.device_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _touch(self) -> None:
        self.last_media_at = self._clock()

    async def _drain(self, track: Any) -> None:
        """Read and discard a track the hub does not use, so aiortc's queue stays empty."""
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                self.last_media_at = self._clock()

    async def _consume_audio(self, track: Any) -> None:
        try:
            while True:
                frame = await track.recv()
                now = self._clock()
                self.last_media_at = now
                for f in self._ingest.push(frame):
                    self.process_frame(f, now)
        except MediaStreamError:
            log.info("%s: audio track ended", self.device_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: inbound audio failed", self.device_id)
            self._close_soon("error")

    def process_frame(self, frame: Int16Array, captured_at: float) -> None:
        """Run one 16 kHz 20 ms frame through the wake word, the VAD and the listening gate; send what
        passes upstream."""
        gate = self.listening
        index = self.vad.frames_seen  # this frame's index on the VAD's frame clock
        if gate.wants_wake_word:
            self._listen_for_wake_word(frame, index, captured_at)
        if gate.tick(index):
            self.host.metrics.wake_words["quiet"] += 1
            log.info("%s: woke but nobody spoke within HUB_WAKE_TIMEOUT_S", self.device_id)
            self.notify(control_channel.LISTENING, state="idle", mode=gate.mode)
        if self._awaiting_reply is False and not self.tts.playing:
            gate.reply_done(index)
        self._times.append(captured_at)
        level = rms_dbfs(frame)  # a few microseconds on 320 samples: cheap enough for every frame
        self.input_level_dbfs = max(level, self.input_level_dbfs - LEVEL_RELEASE_DB)
        self._recent_levels.append((captured_at, level))
        if self._claim is not None:
            self._claim.feed(captured_at, level)
        self._dispatch(self.vad.process(frame, is_playing=self.tts.playing), captured_at)
        check = self.vad.take_check()
        if check is not None and self._judge is not None:
            if self._going_up:
                self._ask_end_of_turn(self._judge, check)
            else:
                # Talk that never goes upstream (wake_word mode, nobody woke it) is not worth ~70 ms
                # of model CPU; it ends at the first short pause instead of holding the VAD open for
                # the fallback, so a question right after it still gets its own START.
                self._dispatch(self.vad.verdict(check, probability=1.0), captured_at)
        if self._arbiter is not None:
            self._arbiter.poll(captured_at)  # every live stream ticks every 20 ms: decisions are on time

    def _dispatch(self, events: list[VadEvent], captured_at: float) -> None:
        gate = self.listening
        playing = self.tts.playing
        for event in events:
            allowed = gate.allow(event, playing)
            if event.kind is VadEventKind.START:
                self._going_up = allowed
            elif event.kind is VadEventKind.END:
                self._going_up = False
            if allowed:
                self._gate(event, captured_at)
            elif event.kind is VadEventKind.START:
                self.host.metrics.utterances_ignored[gate.mode] += 1

    # ----- end of turn by a model -----

    def _ask_end_of_turn(self, judge: TurnJudge, check: TurnCheck) -> None:
        """Ask the model off the event loop; its verdict comes back to :meth:`_on_verdict` on the loop."""
        future = judge.ask(check.audio, still_wanted=lambda: self.vad.is_current(check))
        asked_at = self._clock()
        future.add_done_callback(lambda f: self._on_verdict(judge, check, f, asked_at))

    def _on_verdict(self, judge: TurnJudge, check: TurnCheck, future: asyncio.Future[float | None],
                    asked_at: float) -> None:
        m = self.host.metrics
        probability, outcome = verdict_of(future)
        if probability is None or self.closed:
            m.end_of_turn[outcome] += 1  # stale / error / cancelled: the silence fallback decides
            return
        m.end_of_turn_latency.observe(self._clock() - asked_at)
        current = self.vad.is_current(check)  # not "late": the speaker has not gone on meanwhile
        events = self.vad.verdict(check, probability)
        m.end_of_turn[self.vad.config.tier(probability) if current else "late"] += 1  # complete / likely / incomplete
        if events:
            log.debug("%s: end of turn by the model (P=%.2f)", self.device_id, probability)
            self._dispatch(events, self._times[-1] if self._times else self._clock())

    # ----- listening modes -----

    @property
    def listening_mode(self) -> str:
        """The effective listening mode (the dashboard and /health show it)."""
        return self.listening.mode

    def _listen_for_wake_word(self, frame: Int16Array, index: int, captured_at: float) -> None:
        if self._wake is None:
            self._wake = WAKE_WORDS.build(self.host.settings.hub_wake_word)
        if not self._wake.process(frame):
            return
        wake = self.listening.wake(index, self.tts.playing)
        if wake is None:
            return
        self.wake_heard_at = captured_at
        self.host.metrics.wake_words["heard"] += 1
        log.info("%s: wake word %r heard", self.device_id, self._wake.model)
        # The wake word was spoken into the VAD (its utterance was not sent): forget it and its
        # pre-roll, so the turn starts with what comes after it.
        self._end_claim()
        self.vad.reset()
        if wake.barge_in:
            self.host.metrics.interrupts += 1
            self._send(pb.INTERRUPT, b"", 0, captured_at, None)
            self._barge_in()
        elif wake.restart:
            # The open utterance began with the wake word: the AI server drops it (INTERRUPT
            # discards an open utterance) and the turn starts again with what follows.
            self._send(pb.INTERRUPT, b"", 0, captured_at, None)
        self._awaiting_reply = False
        self.tts.play_earcon()
        self.notify(control_channel.LISTENING, state="listening", mode=self.listening.mode)

    def set_listening_mode(self, mode: str) -> None:
        """The device's mode changed (its MQTT status, the page, config)."""
        if mode == self.listening.mode:
            return
        if self.listening.press(False):  # a held push-to-talk turn ends with the mode
            self._end_utterance_now()
        self.listening.set_mode(mode)
        log.info("%s: listening mode %s", self.device_id, mode)

    def _on_control_message(self, message: str | bytes) -> None:
        data = control_channel.decode(message)
        if data is None:
            self.host.metrics.control_rejected["not_json"] += 1
            return
        kind = data["type"]
        if kind == control_channel.LISTENING:
            mode = data.get("mode")
            try:
                if self._modes is None:
                    raise ValueError("this hub has no listening modes")
                self._modes.report(self.device_id, str(mode), "page")  # sessions follow via on_change
            except ValueError as exc:
                self.host.metrics.control_rejected["bad_mode"] += 1
                log.warning("%s: control message rejected: %s", self.device_id, exc)
        elif kind == control_channel.PTT:
            pressed = data.get("pressed")
            if not isinstance(pressed, bool):
                self.host.metrics.control_rejected["bad_ptt"] += 1
                log.warning("%s: ptt message without a boolean 'pressed'", self.device_id)
                return
            self.push_to_talk(pressed)
        else:
            self.host.metrics.control_rejected["unknown_type"] += 1

    def push_to_talk(self, pressed: bool) -> None:
        gate = self.listening
        if pressed and gate.mode == "push_to_talk" and not gate.pressed and not self.vad.in_utterance:
            self.vad.reset()  # speech already going when the button went down starts a fresh onset now
        if gate.press(pressed):
            self._end_utterance_now()

    def _end_utterance_now(self) -> None:
        """End the open utterance here (button released): END upstream, the VAD back to silence."""
        now = self._times[-1] if self._times else self._clock()
        self._gate(VadEvent(VadEventKind.END, np.zeros(0, dtype=np.int16), self.vad.frames_seen, END_SILENCE), now)
        self.vad.reset()

    # ----- arbitration -----

    def _gate(self, event: VadEvent, captured_at: float) -> None:
        """Send the VAD's event, unless the utterance is held while the arbiter decides."""
        arbiter = self._arbiter
        kind = event.kind
        if kind is VadEventKind.START and arbiter is not None and arbiter.enabled and not self.tts.playing:
            # A barge-in (the device is playing our reply) is never arbitrated: it is this device's user.
            onset = self.vad.config.onset_frames
            self._claim = arbiter.claim(
                self.device_id, captured_at - (onset - 1) * FRAME_MS / 1000, list(self._recent_levels), onset,
                on_resolved=self._on_claim_resolved,
                # In wake_word mode a START passes the gate only after this device heard the wake
                # word (or in the follow-up of such a turn): it never loses to a device that did not.
                woke=self.listening.mode == WAKE_WORD,
            )
            if self._claim.state is not ClaimState.WON:
                self._held = [(event, captured_at)]
                self._held_frames = 0
                return
        claim = self._claim
        if claim is not None and claim.state is not ClaimState.WON and kind in (VadEventKind.CONTINUE,
                                                                                  VadEventKind.END):
            if kind is VadEventKind.END:
                if claim.state is ClaimState.LOST:  # stood down to the end: nothing of it goes upstream
                    self._end_claim()
                    return
            elif self._held_frames >= MAX_HELD_FRAMES:
                self.host.metrics.frames_dropped["arbitration_held"] += 1
                return
            self._held.append((event, captured_at))
            self._held_frames += 1
            return
        self._on_vad_event(event, captured_at)
        if kind is VadEventKind.END and claim is not None:
            self._end_claim()

    def _on_claim_resolved(self, claim: Claim) -> None:
        if claim is not self._claim:
            return
        self.host.metrics.arbitration[claim.state.value] += 1
        log.info("%s: arbitration %s: %s", self.device_id, claim.state.value, claim.reason)
        if claim.state is ClaimState.LOST:
            self.notify(control_channel.STAND_DOWN, reason=claim.reason)
            return
        held, self._held = self._held, []
        ended = False
        for event, at in held:
            self._on_vad_event(event, at)
            ended = ended or event.kind is VadEventKind.END
        if ended:
            self._end_claim()

    def _end_claim(self) -> None:
        claim, self._claim = self._claim, None
        self._held = []
        if claim is not None and self._arbiter is not None:
            self._arbiter.withdraw(claim)

    def _capture_time(self, index: int) -> float:
        base = self.vad.frames_seen - len(self._times)
        i = index - base
        if 0 <= i < len(self._times):
            return self._times[i]
        return self._times[0] if self._times else self._clock()

    def _on_vad_event(self, event: VadEvent, captured_at: float) -> None:
        m = self.host.metrics
        link = self.host.link
        kind = event.kind
        if kind is VadEventKind.INTERRUPT:
            m.interrupts += 1
            self._send(pb.INTERRUPT, b"", 0, captured_at, None)
            self._barge_in()
            return
        if kind is VadEventKind.START:
            m.vad_onsets += 1
            frames = event.audio.size // self.vad.config.frame_samples
            ok = self._send(pb.START, event.audio.tobytes(), frames, captured_at, self._capture_time(event.frame_index))
            self._utterance_generation = link.generation_of(self.device_id) if ok else None
            return
        # CONTINUE / END belong to the utterance START opened: if that START never made it,
        # or the device's AI stream was re-established (or moved to another AI server) since, the AI
        # server has no such utterance.
        open_here = (self._utterance_generation is not None
                     and self._utterance_generation == link.generation_of(self.device_id))
        if kind is VadEventKind.CONTINUE:
            if open_here:
                self._send(pb.CONTINUE, event.audio.tobytes(), 1, captured_at, captured_at)
            else:
                m.frames_dropped["no_open_utterance"] += 1
            return
        # END
        m.vad_ends += 1
        if event.reason == END_MAX_LENGTH:
            m.utterances_capped += 1
            log.warning("%s: utterance ended at HUB_MAX_UTTERANCE_S=%gs without a pause (continuous sound near "
                        "the mic?)", self.device_id, self.host.settings.hub_max_utterance_s)
        if open_here:
            # Provisional: the link's write time replaces it. The reply is read on another thread
            # and can reach this loop before the link's "written" callback does.
            token = self._end_token = object()
            self._end_sent_at = self._clock()
            self._send(pb.END, b"", 0, captured_at, captured_at,
                       on_sent=lambda at: self._end_sent(at, token))
            self._awaiting_reply = self.listening.mode == WAKE_WORD
        self._utterance_generation = None

    def _send(
        self,
        event: int,
        pcm: bytes,
        frames: int,
        captured_at: float,
        first_capture: float | None,
        on_sent: Callable[[float], None] | None = None,
    ) -> bool:
        ts = first_capture if first_capture is not None else captured_at
        msg = pb.AudioInput(
            device_id=self.device_id,
            conversation_id=self.conversation_id,
            audio_pcm=pcm,
            codec=pb.PCM_S16LE,
            sample_rate=HUB_RATE,
            chunk_duration_ms=FRAME_MS,
            timestamp_ms=int(ts * 1000),
            sequence_num=self.host.next_sequence(self.device_id),
            event=event,  # type: ignore[arg-type]
            room=self._rooms.room_of(self.device_id) if self._rooms is not None else "",
        )
        return self.host.link.send(
            Outbound(msg, frames=frames, captured_at=captured_at if frames else None, on_sent=on_sent)
        )

    def _end_sent(self, at: float, token: object) -> None:
        # Only for the END it belongs to, and only while its turn is still waiting for a reply.
        if token is self._end_token and self._end_sent_at is not None:
            self._end_sent_at = at

    def _barge_in(self) -> None:
        """Silence the device now; drop the rest of the interrupted reply if it is still coming."""
        dropped = self.tts.flush()
        # The device has more of the reply queued than we do: tell it to drop that too.
        self.notify(control_channel.FLUSH, reason="barge_in")
        self._awaiting_playout = None
        if self._turn is not None:
            # The AI server is still sending this turn: ignore its audio until its is_final.
            self._turn.interrupted = True
            self._drop_until_final = True
        log.info("%s: barge-in, flushed %.2fs of reply audio", self.device_id, dropped / 48_000)

    # ----- control channel (shared.control_channel) -----

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != control_channel.LABEL:
            log.info("%s: ignoring data channel %r", self.device_id, channel.label)
            return
        self._control = channel
        channel.on("message", self._on_control_message)
        log.info("%s: control channel open", self.device_id)

    def notify(self, kind: str, **fields: Any) -> bool:
        """Send one control message if the device opened the channel; never raises."""
        channel = self._control
        if channel is None or channel.readyState != "open":
            return False
        try:
            channel.send(control_channel.encode(kind, **fields))
        except Exception as exc:  # a closing channel must not break reply routing
            log.debug("%s: control message %s not sent: %s", self.device_id, kind, exc)
            return False
        self.host.metrics.control_messages[kind] += 1
        return True

    # ----- media out -----

    def on_ai_output(self, out: pb.AudioOutput) -> None:
        """Route one AudioOutput for this device (called by the hub's demultiplexer)."""
        m = self.host.metrics
        now = self._clock()
        if out.conversation_id and out.conversation_id != self.conversation_id:
            m.tts_dropped["stale_conversation"] += 1
            return
        if self._drop_until_final:
            if out.is_final:
                self._drop_until_final = False
                self._finish_turn(out, interrupted=True)
                return
            if not out.final_stt:
                if out.audio_pcm:
                    m.tts_dropped["interrupted"] += 1
                return
            # A transcript opens a new turn: the interrupted one will not send more.
            self._drop_until_final = False
            if self._turn is not None:
                self._turn.interrupted = True
                self.host.turns.add(self._turn)
                self._turn = None
        if out.final_stt:
            if self._turn is not None:  # previous turn never finished: keep what we know
                self.host.turns.add(self._turn)
            self._turn = TurnRecord(self.device_id, self.conversation_id, transcript=out.final_stt)
            self._turn_first_audio = False
            self.notify(control_channel.TRANSCRIPT, text=out.final_stt)
            if self._end_sent_at is not None:
                self._turn.hub_end_monotonic = self._end_sent_at
                m.grpc_end_to_transcript.observe(now - self._end_sent_at)
                self._turn.timing["hub_end_to_transcript_ms"] = _ms(now - self._end_sent_at)
        if out.audio_pcm:
            if self._turn is None:
                self._turn = TurnRecord(self.device_id, self.conversation_id)
                self._turn_first_audio = False
            if out.sample_rate <= 0:
                m.tts_dropped["bad_sample_rate"] += 1
            elif self.tts.push(out.audio_pcm, int(out.sample_rate), received_at=now):
                m.tts_frames_routed += 1
                if out.reply_text:  # the first chunk of each clause carries its text
                    self.notify(control_channel.REPLY, text=out.reply_text)
                if not self._turn_first_audio:
                    self._turn_first_audio = True
                    if self._end_sent_at is not None:
                        self._awaiting_playout = (self._turn, self._end_sent_at)
                        m.grpc_end_to_first_audio.observe(now - self._end_sent_at)
                        self._turn.timing["hub_end_to_first_audio_ms"] = _ms(now - self._end_sent_at)
            else:
                m.tts_dropped["buffer_full"] += 1
        if out.is_final:
            self.tts.end_reply()
            if self._end_sent_at is not None:
                m.grpc_end_to_final.observe(now - self._end_sent_at)
            self._finish_turn(out, interrupted=False)

    def _finish_turn(self, out: pb.AudioOutput, *, interrupted: bool) -> None:
        turn = self._turn or TurnRecord(self.device_id, self.conversation_id, transcript=out.final_stt)
        turn.reply_text = out.reply_text
        turn.timing = {**timing_to_dict(out.timing), **turn.timing}
        turn.error_code = error_name(out.error_code)
        turn.error_message = out.error_message
        turn.interrupted = turn.interrupted or interrupted
        if out.conversation_id:
            turn.conversation_id = out.conversation_id
        self.host.turns.add(turn)
        self.notify(control_channel.TURN_END, timing=turn.timing, error=turn.error_code, interrupted=turn.interrupted)
        self._turn = None
        self._end_sent_at = None
        self._awaiting_reply = False  # the follow-up window opens once the reply has played out

    def _on_playout(self, received_at: float, latency_s: float) -> None:
        self.host.metrics.downlink_latency.observe(latency_s)
        if self._awaiting_playout is not None:
            turn, end_sent_at = self._awaiting_playout
            self._awaiting_playout = None
            turn.timing["hub_end_to_playout_ms"] = _ms(self._clock() - end_sent_at)

    def on_ai_connection(self, up: bool) -> None:
        """The AI stream came up or went down: a reply in flight will not finish."""
        if not up:
            if self._turn is not None:
                self._turn.error_code = "INTERNAL"
                self._turn.error_message = "AI stream lost"
                self.host.turns.add(self._turn)
                self._turn = None
            self.tts.end_reply()
            self._drop_until_final = False
            self._end_sent_at = None
            self._awaiting_reply = False

    # ----- dead peers and closing -----

    async def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        log.info("%s: connection %s", self.device_id, state)
        if state == "failed":
            await self.close("ice_failed")
        elif state == "closed":
            await self.close("closed")

    async def _watch(self) -> None:
        timeout = self.host.settings.hub_dead_peer_timeout_s
        period = min(1.0, timeout / 4)
        while not self.closed:
            await asyncio.sleep(period)
            idle = self._clock() - self.last_media_at
            if idle > timeout:
                log.warning("%s: no RTP for %.1fs, closing the session", self.device_id, idle)
                self._close_soon("no_rtp")
                return

    def _close_soon(self, reason: str) -> None:
        task = asyncio.create_task(self.close(reason), name=f"close-{self.device_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, reason: str) -> None:
        """Free everything: tracks, tasks, queues, the peer connection. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._end_claim()
        if self.host.link.connected and (self.vad.in_utterance or self._turn is not None or self.tts.playing):
            # Let the AI server drop work for a device that is gone (or replaced).
            self._send(pb.INTERRUPT, b"", 0, self._clock(), None)
        self.tts.flush()
        self.tts.stop()
        if self._wake is not None:
            self._wake.close()
        current = asyncio.current_task()
        tasks = [t for t in (*self._tasks, self._watchdog) if t is not None and t is not current]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        with contextlib.suppress(Exception):
            await self.pc.close()
        self.host.metrics.sessions_closed[reason] += 1
        self.host.session_closed(self)
        log.info("%s: session %s closed (%s)", self.device_id, self.conversation_id, reason)


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))
