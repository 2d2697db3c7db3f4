"""Encoder bitrates aiortc does not let us configure (issue 22: WEBRTC_AUDIO_BITRATE, WEBRTC_VIDEO_BITRATE),
and the audio receiver's jitter-buffer prefetch (issue 20: HUB_JITTER_PREFETCH, DEVICE_JITTER_PREFETCH).

aiortc creates a sender's encoder lazily, on the first frame, with hard-coded settings (Opus at
96 kbit/s, VP8 starting at 500 kbit/s). Both the device (microphone, camera) and the hub (the
TTS reply) pre-create that encoder with the configured bitrate. It is a private attribute,
checked first: on an aiortc that renamed it the call logs one line and the library default stays.
Only valid where the transceiver is restricted to that one codec (``prefer_codec``).
"""

from __future__ import annotations

import logging
from typing import Any

from aiortc import RTCRtpSender
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder

log = logging.getLogger(__name__)

_ENCODER = "_RTCRtpSender__encoder"
_VP8_TARGET = "_Vp8Encoder__target_bitrate"  # what aiortc's VP8 encoder reads for its buffer size
#: The least a congestion report (REMB) may take VP8 down to; below it frames turn to mush.
VP8_FLOOR = 100_000


def prefer_codec(transceiver: Any, kind: str, mime: str) -> None:
    """Negotiate only ``mime`` (e.g. audio/opus, video/VP8) on this transceiver."""
    caps = RTCRtpSender.getCapabilities(kind).codecs
    preferred = [c for c in caps if c.mimeType.lower() == mime.lower()]
    if preferred:
        transceiver.setCodecPreferences(preferred)


def _can_preset(sender: RTCRtpSender) -> bool:
    if getattr(sender, _ENCODER, "missing") is not None:
        log.debug("cannot preset the encoder on this aiortc version (or it already runs)")
        return False
    return True


def tune_opus_bitrate(sender: RTCRtpSender, bitrate: int, encoder: OpusEncoder | None = None) -> bool:
    """Opus at ``bitrate`` bit/s instead of aiortc's 96 kbit/s (on ``encoder``, an OpusEncoder or a
    subclass, when given); False when it could not be set."""
    if not _can_preset(sender):
        return False
    encoder = OpusEncoder() if encoder is None else encoder
    encoder.codec.bit_rate = bitrate
    setattr(sender, _ENCODER, encoder)
    return True


class CappedVp8Encoder(Vp8Encoder):
    """aiortc's VP8 encoder starting at, and never above, ``ceiling`` bit/s.

    Receiver reports (REMB) still lower it on a congested link, down to :data:`VP8_FLOOR`;
    aiortc's own clamp (250 kbit/s - 1.5 Mbit/s) is replaced so that the setting means what it says.
    """

    def __init__(self, ceiling: int) -> None:
        super().__init__()
        self.ceiling = ceiling
        self._target = ceiling
        setattr(self, _VP8_TARGET, ceiling)

    @property
    def target_bitrate(self) -> int:
        return self._target

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        self._target = max(min(VP8_FLOOR, self.ceiling), min(int(bitrate), self.ceiling))
        setattr(self, _VP8_TARGET, self._target)


def tune_vp8_bitrate(sender: RTCRtpSender, bitrate: int) -> bool:
    """VP8 at ``bitrate`` bit/s (REMB may lower it, never raise it); False when it could not be set."""
    if not _can_preset(sender):
        return False
    setattr(sender, _ENCODER, CappedVp8Encoder(bitrate))
    return True


def negotiated_mime(transceiver: Any) -> str | None:
    """The codec a transceiver will send with after the offer was applied (None if unknown)."""
    codecs = getattr(transceiver, "_codecs", None)
    return str(codecs[0].mimeType).lower() if codecs else None


def tune_answer_opus(transceiver: Any, bitrate: int, encoder: OpusEncoder | None = None) -> bool:
    """The answering side (the hub): preset Opus only when the offer made Opus the codec.

    A browser may offer other audio codecs first; then aiortc's own encoder for it stays.
    """
    if negotiated_mime(transceiver) != "audio/opus":
        log.info("reply audio is not Opus (%s): WEBRTC_AUDIO_BITRATE not applied", negotiated_mime(transceiver))
        return False
    return tune_opus_bitrate(transceiver.sender, bitrate, encoder)


_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"
#: Prefetch 0: a lost packet is given up once this many later packets wait behind it (60 ms).
GAP_SKIP_PACKETS = 3


def _audio_jitter_buffer_class() -> Any:
    from aiortc.jitterbuffer import JitterBuffer, JitterFrame

    class AudioJitterBuffer(JitterBuffer):
        """aiortc's buffer, releasing each audio packet the moment it is next in order.

        aiortc completes a frame only when a packet with another timestamp arrives, because a
        video frame spans packets. An Opus RTP packet is a whole frame, so that wait is 20 ms of
        latency on every packet for nothing (issue 20). A missing packet (lost or late) holds the
        ones behind it until :data:`GAP_SKIP_PACKETS` wait, then is skipped (the decoder sees a
        gap); aiortc's own buffer waited for its capacity (16 packets) to overflow.
        """

        gaps_skipped = 0

        def _remove_frame(self, sequence_number: int) -> Any:
            cap, origin = self.capacity, self._origin
            assert origin is not None  # add() sets it before asking
            if self._packets[origin % cap] is None:
                behind = [i for i in range(1, cap) if self._packets[(origin + i) % cap] is not None]
                if len(behind) < GAP_SKIP_PACKETS:
                    return None
                self.remove(behind[0])
                self.gaps_skipped += 1
                origin = self._origin
                assert origin is not None
            packet: Any = self._packets[origin % cap]
            self.remove(1)
            return JitterFrame(data=packet._data, timestamp=packet.timestamp)

    return AudioJitterBuffer


def tune_jitter_buffer(receiver: Any, prefetch: int) -> bool:
    """Give an aiortc audio RTCRtpReceiver a jitter buffer with ``prefetch`` packets.

    aiortc 1.16 hard-codes ``JitterBuffer(capacity=16, prefetch=4)`` for audio in
    RTCRtpReceiver.__init__ and exposes no setting. Prefetch 4 holds ~4 Opus packets before
    releasing the first, ~80 ms of receive latency measured here (browser->hub 91 ms vs 42 ms
    with prefetch 1; aiortc releases a packet when the next one arrives, so prefetch 1 is one
    packet, 20 ms). Prefetch 0 releases each packet as it arrives in order (an Opus packet is a
    whole frame; see ``AudioJitterBuffer``). On a LAN reordering is rare, so the hub (uplink) and
    the device (the reply) swap in such a buffer. This must run before any RTP arrives (right
    after the transceiver exists / setRemoteDescription), while the buffer is still empty.
    Returns False (and logs) if aiortc's internals changed, leaving its default in place.
    """
    try:
        from aiortc.jitterbuffer import JitterBuffer
    except ImportError:  # pragma: no cover - aiortc layout changed
        log.warning("aiortc.jitterbuffer not found; jitter prefetch left at aiortc's default")
        return False
    current = getattr(receiver, _JITTER_BUFFER, None)
    if not isinstance(current, JitterBuffer):
        log.warning("aiortc receiver has no %s; jitter prefetch left at aiortc's default", _JITTER_BUFFER)
        return False
    if prefetch == 0:
        replacement = _audio_jitter_buffer_class()(capacity=current.capacity)
    else:
        replacement = JitterBuffer(capacity=current.capacity, prefetch=prefetch)
    setattr(receiver, _JITTER_BUFFER, replacement)
    return True
