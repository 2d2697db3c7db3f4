"""POST /connect: WebRTC signaling (SDP offer in, answer out), with strict input checks.

Every refusal is one line of JSON ``{"error": reason}``, counted by reason, and leaves every
other session alone: the old session of a device is only replaced once the new offer has been
accepted. In order (issue 18, H1/H6):

1. 429 (with ``Retry-After``): the client address is over ``HUB_CONNECT_PER_MIN``, or has had
   ``HUB_AUTH_FAILURES_PER_MIN`` tokens refused (``hub.connect_limits``).
2. 408: the body did not arrive within ``HUB_REQUEST_TIMEOUT_S`` (a slow client).
3. 400: not JSON, a bad field, a device id outside the project's one rule
   (``shared.mqtt.is_safe_segment``), an SDP over :data:`MAX_SDP_BYTES`, with more than one
   audio, video or data section, or with several sections not in one BUNDLE group. All of it
   is checked before any peer connection is built.
4. 401: no valid token. Default-deny: a device needs its ``HUB_DEVICE_TOKENS`` entry (or
   ``"*"``); with no entry it is refused unless ``HUB_ALLOW_UNAUTHENTICATED=true``. An unknown
   id, a wrong token and a revoked device get the same body, in the same time.
5. 503: ``HUB_MAX_SESSIONS`` devices are connected, or ``HUB_MAX_NEGOTIATIONS`` offers are
   being negotiated (``hub.server.Hub.connect_device``, shared with MQTT offers).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

from aiohttp import web

from hub.connect_limits import AddressLimits
from hub.metrics import HubMetrics
from shared.config import HubSettings
from shared.errors import one_line
from shared.mqtt import is_safe_segment

log = logging.getLogger("naila.hub.signaling")

WILDCARD = "*"
#: Largest offer SDP. An aiortc offer with audio, video and data is about 4 KB, a browser's 6-12 KB;
#: the cap keeps the parse cheap (the m-line rule below is what bounds the transports).
MAX_SDP_BYTES: Final = 32_768
#: Sections one offer may have of each kind: the microphone, the camera, the control channel.
MAX_MEDIA: Final = {"audio": 1, "video": 1, "application": 1}
UNAUTHORIZED: Final = "missing, unknown or wrong device token"


class RequestRejected(Exception):
    """A /connect request that must be refused. ``reason`` is the metrics label."""

    status = 400

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Unauthorized(RequestRejected):
    status = 401


class Busy(RequestRejected):
    """The hub is at HUB_MAX_SESSIONS or HUB_MAX_NEGOTIATIONS: try again later."""

    status = 503


class TooSlow(RequestRejected):
    status = 408


class TooMany(RequestRejected):
    status = 429


@dataclass(frozen=True)
class ConnectRequest:
    device_id: str
    sdp: str


def parse_connect_body(body: bytes) -> ConnectRequest:
    """Validate the JSON body of /connect. Raises RequestRejected with a one-line reason."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RequestRejected("bad_json", "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise RequestRejected("bad_json", "body must be a JSON object")
    for name in ("device_id", "sdp"):
        if name not in data:
            raise RequestRejected("missing_field", f"missing field {name!r}")
        if not isinstance(data[name], str):
            raise RequestRejected("bad_type", f"field {name!r} must be a string")
    device_id, sdp = data["device_id"], data["sdp"]
    if not is_safe_segment(device_id):
        raise RequestRejected("bad_device_id", "device_id must be 1-64 of A-Z a-z 0-9 _ . - (not '.' or '..')")
    check_offer_sdp(sdp)
    return ConnectRequest(device_id, sdp)


def check_offer_sdp(sdp: str) -> None:
    """Reject an SDP the hub will not negotiate, before any peer connection exists.

    aiortc builds an ICE gatherer and a DTLS transport (sockets on every interface) per
    un-bundled section at ``setRemoteDescription``: one offer with hundreds of ``m=`` lines
    would exhaust the hub's file descriptors. So: at most one section per kind in
    :data:`MAX_MEDIA`, an audio or a video one among them, and several only inside one BUNDLE group.
    """
    from aiortc.sdp import SessionDescription

    if not sdp.strip():
        raise RequestRejected("bad_sdp", "sdp is empty")
    if len(sdp) > MAX_SDP_BYTES:
        raise RequestRejected("sdp_too_large", f"sdp over {MAX_SDP_BYTES} characters")
    sections = sum(1 for line in sdp.splitlines() if line.startswith("m="))
    if sections > sum(MAX_MEDIA.values()):
        raise RequestRejected("too_many_media", f"sdp has {sections} media sections (at most audio, video, data)")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as err:
        raise RequestRejected("bad_sdp", f"sdp cannot be parsed: {one_line(err, with_type=False)}") from None
    kinds = Counter(m.kind for m in parsed.media)
    # A microphone-only device has no video section, a camera-only one (issue 22) no audio section.
    if not (kinds["audio"] or kinds["video"]):
        raise RequestRejected("bad_sdp", "sdp offer has no audio or video section")
    for kind, count in kinds.items():
        if count > MAX_MEDIA.get(kind, 0):
            raise RequestRejected("too_many_media", f"sdp has {count} {kind[:20]!r} sections (at most "
                                  "one audio, one video, one data)")
    if len(parsed.media) > 1:
        mids = {m.rtp.muxId for m in parsed.media}
        if not any(g.semantic == "BUNDLE" and mids <= set(g.items) for g in parsed.group):
            raise RequestRejected("no_bundle", "an offer with several media sections must BUNDLE them all")


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


_NO_TOKEN = _digest("\0no token\0")  # compared against when the id has none: same work, same answer


@runtime_checkable
class DerivedTokens(Protocol):
    """A token table that also judges tokens it derives itself (expiring browser device tokens):
    True/False for an id it owns, None to fall back to the table's entries."""

    def verify(self, device_id: str, given: str) -> bool | None: ...


def check_token(
    tokens: Mapping[str, str], device_id: str, authorization: str | None, *, allow_unauthenticated: bool = False
) -> None:
    """Per-device bearer tokens: the device's own entry, else a ``"*"`` entry.

    An id with neither is refused (default-deny) unless ``allow_unauthenticated``
    (HUB_ALLOW_UNAUTHENTICATED). Unknown id, wrong token and revoked device (its entry removed)
    all raise the same :class:`Unauthorized`; the comparison is of SHA-256 digests with
    ``hmac.compare_digest``, so its time depends on neither the token's length nor its content,
    nor on whether the id has a token at all.
    """
    given = ""
    if authorization and authorization[:7].lower() == "bearer ":
        given = authorization[7:].strip()
    if isinstance(tokens, DerivedTokens):  # browser devices (hub.web.auth.DeviceTokenTable)
        verdict = tokens.verify(device_id, given)
        if verdict is not None:
            if not verdict:
                raise Unauthorized("unauthorized", UNAUTHORIZED)
            return
    expected = tokens.get(device_id, tokens.get(WILDCARD))
    if expected is None and allow_unauthenticated:
        return
    same = hmac.compare_digest(_digest(given), _digest(expected) if expected is not None else _NO_TOKEN)
    if not same or not given or expected is None:
        raise Unauthorized("unauthorized", UNAUTHORIZED)


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """Read at most ``max_bytes`` (by Content-Length and by actual bytes, for chunked bodies)."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise RequestRejected("too_large", f"body over {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            break
        size += len(chunk)
        if size > max_bytes:
            raise RequestRejected("too_large", f"body over {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class DeviceConnector(Protocol):
    """The hub side of signaling: open (or replace) a device's session, return the answer SDP."""

    async def connect_device(self, device_id: str, sdp: str) -> str: ...


def error_response(err: RequestRejected, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": err.message}, status=err.status, headers=headers)


class ConnectEndpoint:
    """The aiohttp handler for POST /connect (see the module doc for the order of checks)."""

    def __init__(
        self,
        connector: DeviceConnector,
        metrics: HubMetrics,
        tokens: Mapping[str, str],
        settings: HubSettings,
        *,
        client_address: Callable[[web.Request], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connector = connector
        self._metrics = metrics
        self._tokens = tokens
        self._max_body = settings.hub_max_body_bytes
        self._timeout_s = settings.hub_request_timeout_s
        self._open = settings.hub_allow_unauthenticated
        self._client = client_address or (lambda request: request.remote or "?")
        self.limits = AddressLimits(settings.hub_connect_per_min, settings.hub_auth_failures_per_min, clock=clock)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        client = self._client(request)
        refusal = self.limits.admit(client)
        if refusal is not None:
            self._metrics.connect_refused[refusal.reason] += 1
            log.debug("/connect from %s refused: %s", client, refusal.reason)
            err = TooMany(refusal.reason, "too many requests from this address; retry later")
            return error_response(err, {"Retry-After": refusal.retry_after_header})
        try:
            try:
                async with asyncio.timeout(self._timeout_s):
                    body = await read_body(request, self._max_body)
            except TimeoutError:
                raise TooSlow("timeout", f"body not received within {self._timeout_s:g}s") from None
            req = parse_connect_body(body)
            try:
                check_token(self._tokens, req.device_id, request.headers.get("Authorization"),
                            allow_unauthenticated=self._open)
            except Unauthorized:
                self.limits.failed(client)
                raise
            try:
                answer = await self._connector.connect_device(req.device_id, req.sdp)
            except RequestRejected:
                raise
            except Exception as err:
                raise RequestRejected("bad_sdp", f"offer rejected: {one_line(err, with_type=False)}") from None
        except RequestRejected as err:
            return self._refuse(client, err)
        return web.json_response({"sdp": answer})

    def _refuse(self, client: str, err: RequestRejected) -> web.Response:
        if err.status == 401:
            self._metrics.unauthorized += 1
        elif err.status == 400:
            self._metrics.bad_requests[err.reason] += 1
        else:
            self._metrics.connect_refused[err.reason] += 1
        log.warning("/connect from %s refused (%d): %s", client, err.status, err.message)
        response = error_response(err)
        if isinstance(err, TooSlow):
            response.force_close()  # the rest of a slow body is not worth reading
        return response
