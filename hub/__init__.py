"""NAILA hub: terminates every device's WebRTC, detects speech, relays it on one gRPC stream.

Modules, in the order audio flows through them:

- ``signaling``     POST /connect: validate, authenticate, SDP offer -> answer
- ``session``       one device: peer connection, inbound audio task, VAD, TTS track, dead-peer watchdog
- ``media_in``      decoded WebRTC frames -> 16 kHz 20 ms frames; aiortc jitter-buffer prefetch
- ``vad``           pure Silence/MaybeSpeech/Speaking/MaybeSilence state machine, pluggable detector
- ``ai_link``       the one bidi StreamConversation: bounded uplink queue, reconnects, reply demux
- ``backoff``       exponential backoff with full jitter (pure)
- ``tts_track``     per-device outbound aiortc track: any-rate PCM -> paced 48 kHz frames, flush
- ``turns``         recent completed turns for GET /turns
- ``metrics``       counters and histograms behind /health and /metrics
- ``status_routes`` GET /health, /metrics, /turns
- ``server``        :class:`Hub` and :func:`run_hub`, wiring it all together
- ``app``           ``naila hub`` entry point (``main(argv)``)
"""
