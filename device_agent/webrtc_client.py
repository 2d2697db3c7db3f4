"""WebRTC link to the hub (aiortc): send the echo-cancelled mic (+ camera), play the hub's audio.

One session = one RTCPeerConnection: offer (all ICE candidates gathered, no trickle) ->
``POST {hub}/connect`` -> answer. The session lives until :class:`LinkMonitor` declares the link
dead (failed/closed, disconnected for a few seconds, no audio from the hub) or a restart is
requested; then the client redials after an exponential backoff with full jitter, forever.
With several hubs in ``DEVICE_HUB_URL`` a failed attempt moves to the next one
(:class:`~device_agent.hub_choice.HubChoice`, issue 21).
With ``DEVICE_SIGNALING=mqtt`` a :class:`SignalingTransport`
(``device_agent.mqtt_signaling.MqttSignaling``) carries the offer and answer instead of HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import random
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from device_agent.audio_pipeline import QUIET_DBFS, AudioPipeline
from device_agent.camera import Camera
from device_agent.hub_choice import HubChoice
from device_agent.link_monitor import LinkMonitor
from device_agent.tracks import MicTrack
from shared import control_channel
from shared.aio import wait_event
from shared.audio import StreamResampler, frame_to_mono, rms_dbfs
from shared.backoff import Backoff
from shared.config import DeviceSettings, WebRTCSettings
from shared.errors import one_line
from shared.rtc_tuning import prefer_codec, tune_jitter_buffer, tune_opus_bitrate, tune_vp8_bitrate

log = logging.getLogger(__name__)

CHECK_PERIOD_S = 0.2
# After a flush, in-flight reply audio louder than QUIET_DBFS is dropped for at most FLUSH_DRAIN_S.
FLUSH_DRAIN_S = 0.3


class ConnectError(Exception):
    """The offer/answer exchange with the hub failed (one-line reason)."""


class SignalingTransport(Protocol):
    """Another way to get the offer to the hub than HTTP: returns the answer SDP or raises ConnectError."""

    def describe(self) -> str: ...

    async def exchange(self, offer_sdp: str) -> str: ...


def hub_ssl_context(device: DeviceSettings) -> ssl.SSLContext | None:
    """How to check the hub's certificate (M3): for an https DEVICE_HUB_URL, DEVICE_HUB_CA (the
    household CA from ``naila init``) or else the system CAs; None for http.

    Warns when the device token would cross the network in clear. Raises ValueError (one line,
    naming the setting) for a CA file that cannot be read.
    """
    urls = [urlsplit(u) for u in device.hub_urls]
    for url in urls:
        if url.scheme != "https" and device.device_hub_token and not _is_loopback(url.hostname or ""):
            log.warning(
                "DEVICE_HUB_URL is plain http to %s: the device token and the WebRTC fingerprints cross the "
                "network in clear (anyone on the LAN can take this device's place); use https with DEVICE_HUB_CA",
                url.hostname,
            )
    if all(url.scheme != "https" for url in urls):
        if device.device_hub_ca:
            log.warning("DEVICE_HUB_CA is set but DEVICE_HUB_URL is not https: it is not used")
        return None
    if not device.device_hub_ca:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=device.device_hub_ca)
    except (OSError, ssl.SSLError) as err:
        raise ValueError(f"DEVICE_HUB_CA={device.device_hub_ca}: cannot load the CA certificate ({err})") from None


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class HubClient:
    """Keeps one WebRTC session to the hub up; see the module doc."""

    def __init__(
        self,
        device: DeviceSettings,
        webrtc: WebRTCSettings,
        pipeline: AudioPipeline,
        camera: Camera | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        http_timeout_s: float = 10.0,
        connect_timeout_s: float = 15.0,
        disconnected_grace_s: float = 3.0,
        signaling: SignalingTransport | None = None,
        audio: bool = True,
        listening_mode: str | None = None,
    ) -> None:
        self.device = device
        # What starts a turn, told to the hub when the control channel opens ("" = the hub decides).
        self.listening_mode = device.device_listening_mode if listening_mode is None else listening_mode
        self.audio = audio  # False: a camera-only device (DEVICE_AUDIO_BACKEND=none), no audio section
        self.webrtc = webrtc
        self.pipeline = pipeline
        self.camera = camera
        self.hubs = HubChoice([url.rstrip("/") + "/connect" for url in device.hub_urls])
        self._ssl = hub_ssl_context(device) if signaling is None else None
        self.signaling = signaling  # None: POST self.url
        self._clock = clock
        self.backoff = Backoff(device.device_reconnect_initial_s, device.device_reconnect_max_s, rand=rng)
        self._http_timeout = http_timeout_s
        self._connect_timeout = connect_timeout_s
        self._grace = disconnected_grace_s
        self.state = "idle"
        self.attempts = 0
        self.connects = 0
        self.last_error: str | None = None
        self.on_state_change: Callable[[str], None] | None = None
        self.pc: RTCPeerConnection | None = None
        self.monitor: LinkMonitor | None = None
        self._connected = asyncio.Event()
        self._restart = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._flushed_at: float | None = None
        self.flushes = 0
        self.flushed_frames = 0
        # Device -> hub control (issue 19): the push-to-talk button's state, None = no button.
        # Never queued: a press while the channel is closed is sent as the current state when it opens.
        self.ptt_pressed: bool | None = None
        self._control: Any = None

    # -- public ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The /connect URL of the hub in use (DEVICE_HUB_URL may list several)."""
        return self.hubs.current

    @property
    def target(self) -> str:
        return self.signaling.describe() if self.signaling is not None else self.url

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("hub client already started")
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._http_timeout),
            # The hub's certificate is checked against DEVICE_HUB_CA (hub_ssl_context); True = aiohttp's default.
            connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True),
        )
        self._task = asyncio.create_task(self._run(), name="hub-client")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            await self._http.close()
            self._http = None
        self._set_state("stopped")

    def restart(self, reason: str = "restart requested") -> None:
        """Tear the current session down and redial at once (the ``restart_stream`` command)."""
        log.info("stream restart: %s", reason)
        self._restart.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, within_s: float) -> bool:
        return await wait_event(self._connected, within_s)

    # -- internals ------------------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            if self.on_state_change is not None:
                try:
                    self.on_state_change(state)
                except Exception:
                    log.exception("stream state callback failed")

    async def _run(self) -> None:
        while True:
            self.attempts += 1
            self._restart.clear()
            next_hub_now = False
            try:
                reason = await self._session()
                log.warning("hub link down: %s", reason)
                self.last_error = reason
            except ConnectError as exc:
                self.last_error = str(exc)
                log.warning("connect to %s failed: %s", self.target, exc)
                if self.signaling is None and len(self.hubs.urls) > 1:
                    next_hub_now = self.hubs.failed()
                    log.info("next hub: %s", self.url)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("hub session error")
            if self._restart.is_set():
                self._restart.clear()
                self.backoff.reset()
                delay = 0.0
            elif next_hub_now:  # another hub that has not failed yet: no reason to wait
                delay = 0.0
            else:
                delay = self.backoff.next_delay()
            self._set_state("backoff")
            log.info("reconnecting to the hub in %.2f s (attempt %d)", delay, self.backoff.attempt)
            await wait_event(self._restart, delay)

    def _new_peer_connection(self) -> RTCPeerConnection:
        servers = [RTCIceServer(urls=url) for url in self.webrtc.webrtc_ice_servers]
        return RTCPeerConnection(RTCConfiguration(iceServers=servers))

    async def _session(self) -> str:
        """One session; returns why it ended, raises ConnectError if it never started."""
        self._set_state("connecting")
        t0 = self._clock()
        pc = self._new_peer_connection()
        monitor = LinkMonitor(
            clock=self._clock,
            connect_timeout_s=self._connect_timeout,
            disconnected_grace_s=self._grace,
            # A camera-only device hears nothing from the hub: only the connection state judges its link.
            rtp_timeout_s=self.device.device_rtp_timeout_s if self.audio else math.inf,
        )
        self.pc, self.monitor = pc, monitor
        playback: list[asyncio.Task[None]] = []
        try:
            if self.audio:
                audio = pc.addTransceiver(MicTrack(self.pipeline.mic_out), direction="sendrecv")
                prefer_codec(audio, "audio", "audio/opus")
                tune_opus_bitrate(audio.sender, self.webrtc.webrtc_audio_bitrate)
                tune_jitter_buffer(audio.receiver, self.device.device_jitter_prefetch)
            if self.camera is not None:
                video = pc.addTransceiver(self.camera.track(), direction="sendonly")
                # VP8 only (what the hub decodes), so WEBRTC_VIDEO_BITRATE lands on the right encoder.
                prefer_codec(video, "video", "video/VP8")
                tune_vp8_bitrate(video.sender, self.webrtc.webrtc_video_bitrate)
            control = pc.createDataChannel(control_channel.LABEL)
            control.on("message", self._on_control)
            control.on("open", lambda: self._on_control_open(control))
            self._control = control

            @pc.on("track")
            def on_track(track: MediaStreamTrack) -> None:
                if track.kind == "audio":
                    playback.append(asyncio.create_task(self._play(track, monitor), name="hub-audio"))

            @pc.on("connectionstatechange")
            def on_state() -> None:
                log.info("peer connection %s", pc.connectionState)
                monitor.on_state(pc.connectionState)

            await pc.setLocalDescription(await pc.createOffer())
            await self._gathering_complete(pc)
            sdp = pc.localDescription.sdp
            answer = await (self._post_offer(sdp) if self.signaling is None else self.signaling.exchange(sdp))
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            log.info("answer from %s applied; waiting for ICE/DTLS", self.target)
            return await self._watch(monitor, t0)
        finally:
            self._connected.clear()
            for task in playback:
                task.cancel()
            for task in playback:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._close_pc(pc)
            self.pipeline.playback.clear()
            self.pc = None
            self._control = None

    async def _close_pc(self, pc: RTCPeerConnection, within_s: float = 5.0) -> None:
        """Close a peer connection without letting a stuck aiortc teardown block the redial."""
        close = asyncio.ensure_future(pc.close())
        done, _pending = await asyncio.wait({close}, timeout=within_s)
        if not done:
            log.warning("closing the old peer connection took over %.0f s; going on without it", within_s)
        elif not close.cancelled() and close.exception() is not None:
            log.debug("peer connection close failed: %s", close.exception())

    async def _gathering_complete(self, pc: RTCPeerConnection, within_s: float = 10.0) -> None:
        if pc.iceGatheringState == "complete":
            return
        done = asyncio.Event()

        @pc.on("icegatheringstatechange")
        def on_gathering() -> None:
            if pc.iceGatheringState == "complete":
                done.set()

        if pc.iceGatheringState != "complete" and not await wait_event(done, within_s):
            raise ConnectError("ICE gathering did not complete")

    async def _post_offer(self, sdp: str) -> str:
        assert self._http is not None
        token = self.device.device_hub_token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = {"device_id": self.device.device_id, "sdp": sdp}
        log.info("POST %s as %s", self.url, self.device.device_id)
        try:
            async with self._http.post(self.url, json=body, headers=headers) as resp:
                try:
                    data: Any = await resp.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    data = None
                if resp.status != 200:
                    detail = data.get("error") if isinstance(data, dict) else None
                    raise ConnectError(f"HTTP {resp.status}: {detail or resp.reason}")
        except aiohttp.ClientConnectorCertificateError as exc:
            reason = one_line(exc.certificate_error, with_type=False)
            raise ConnectError(
                f"the hub's certificate is not trusted ({reason}); set DEVICE_HUB_CA to the household CA"
            ) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ConnectError(f"hub unreachable ({type(exc).__name__}: {exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("sdp"), str):
            raise ConnectError("hub answered 200 without an 'sdp' string")
        return str(data["sdp"])

    async def _watch(self, monitor: LinkMonitor, t0: float) -> str:
        while True:
            if self._restart.is_set():
                return "restart requested"
            reason = monitor.dead_reason()
            if reason is not None:
                return reason
            if monitor.state == "connected" and not self._connected.is_set():
                self.connects += 1
                self.hubs.succeeded()
                self._connected.set()
                self._set_state("connected")
                elapsed_ms = 1e3 * (self._clock() - t0)
                log.info("connected to the hub in %.0f ms (session %d)", elapsed_ms, self.connects)
            if monitor.healthy and self.backoff.attempt:
                self.backoff.reset()
            await wait_event(self._restart, CHECK_PERIOD_S)

    async def _play(self, track: MediaStreamTrack, monitor: LinkMonitor) -> None:
        """Hub audio -> playback buffer (resampled to the speaker rate if needed)."""
        resampler: StreamResampler | None = None
        first = True
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            monitor.on_rtp()
            samples, rate = frame_to_mono(frame), frame.sample_rate  # type: ignore[arg-type,union-attr]
            if first:
                log.info("receiving hub audio (%d Hz)", rate)
                first = False
            if self._flushed_at is not None:
                # Reply audio already in flight when the hub flushed: drop it until the hub's
                # silence arrives (bounded, so a lost flush can never mute the speaker for long).
                if rms_dbfs(samples) > QUIET_DBFS and self._clock() - self._flushed_at < FLUSH_DRAIN_S:
                    self.flushed_frames += 1
                    continue
                self._flushed_at = None
            if rate != self.pipeline.rate:
                if resampler is None or resampler.from_rate != rate:
                    resampler = StreamResampler(rate, self.pipeline.rate)
                samples = resampler.process(samples)
            self.pipeline.playback.push(samples)

    def set_listening_mode(self, mode: str) -> None:
        """A new listening mode (the ``listening_mode`` command): the hub hears it now if the channel is open."""
        self.listening_mode = mode
        if mode:
            self._send_control(control_channel.LISTENING, mode=mode)

    def set_ptt(self, pressed: bool) -> None:
        """The push-to-talk button went down or up: tell the hub now if the channel is open."""
        self.ptt_pressed = pressed
        self._send_control(control_channel.PTT, pressed=pressed)

    def _on_control_open(self, channel: Any) -> None:
        """Tell the hub this device's listening mode and, with a button, whether it is held now."""
        if channel is not self._control:
            return
        mode = self.listening_mode
        if mode:
            self._send_control(control_channel.LISTENING, mode=mode)
        if self.ptt_pressed is not None:
            self._send_control(control_channel.PTT, pressed=self.ptt_pressed)

    def _send_control(self, kind: str, **fields: Any) -> bool:
        channel = self._control
        if channel is None or channel.readyState != "open":
            return False
        try:
            channel.send(control_channel.encode(kind, **fields))
        except Exception as exc:  # a closing channel: the next session sends the state again
            log.debug("control message %s not sent: %s", kind, exc)
            return False
        return True

    def _on_control(self, message: str | bytes) -> None:
        """Hub → device control (shared.control_channel); only ``flush`` changes what we do."""
        data = control_channel.decode(message)
        if data is None:
            return
        kind = data["type"]
        if kind == control_channel.FLUSH:
            self.flushes += 1
            self._flushed_at = self._clock()
            self.pipeline.playback.clear()
            log.info("hub flushed the reply (%s)", data.get("reason", "?"))
        elif kind in (control_channel.TRANSCRIPT, control_channel.REPLY):
            log.info("%s: %s", kind, str(data.get("text", ""))[:200])
