"""POST /connect: WebRTC signaling (SDP offer in, answer out), with strict input checks.

Every refusal is one line of JSON ``{"error": reason}`` (400, or 401 for a bad token),
counted by reason, and leaves every other session alone: the old session of a device is
only replaced once the new offer has been accepted.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from hub.metrics import HubMetrics

log = logging.getLogger("naila.hub.signaling")

DEVICE_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
WILDCARD = "*"


class RequestRejected(Exception):
    """A /connect request that must be refused. ``reason`` is the metrics label."""

    status = 400

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Unauthorized(RequestRejected):
    status = 401


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
    if not DEVICE_ID_RE.fullmatch(device_id):
        raise RequestRejected("bad_device_id", "device_id must be 1-64 of A-Z a-z 0-9 _ . -")
    check_offer_sdp(sdp)
    return ConnectRequest(device_id, sdp)


def check_offer_sdp(sdp: str) -> None:
    """Reject an SDP aiortc cannot parse, or one without an audio section, before any state changes."""
    from aiortc.sdp import SessionDescription

    if not sdp.strip():
        raise RequestRejected("bad_sdp", "sdp is empty")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as err:
        raise RequestRejected("bad_sdp", f"sdp cannot be parsed: {_one_line(err)}") from None
    if not any(m.kind == "audio" for m in parsed.media):
        raise RequestRejected("bad_sdp", "sdp offer has no audio section")


def check_token(tokens: dict[str, str], device_id: str, authorization: str | None) -> None:
    """Per-device bearer tokens: the device's own entry, else a "*" entry, else no auth."""
    expected = tokens.get(device_id, tokens.get(WILDCARD))
    if expected is None:
        return
    given = ""
    if authorization and authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("unauthorized", "missing or wrong bearer token")


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


def error_response(err: RequestRejected) -> web.Response:
    return web.json_response({"error": err.message}, status=err.status)


def _one_line(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return " ".join(text.split())[:200]


def connect_handler(
    connector: DeviceConnector, metrics: HubMetrics, tokens: dict[str, str], max_body_bytes: int
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler for POST /connect."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            body = await read_body(request, max_body_bytes)
            req = parse_connect_body(body)
            check_token(tokens, req.device_id, request.headers.get("Authorization"))
            try:
                answer = await connector.connect_device(req.device_id, req.sdp)
            except RequestRejected:
                raise
            except Exception as err:
                raise RequestRejected("bad_sdp", f"offer rejected: {_one_line(err)}") from None
        except Unauthorized as err:
            metrics.unauthorized += 1
            log.warning("/connect from %s refused: %s", request.remote, err.message)
            return error_response(err)
        except RequestRejected as err:
            metrics.bad_requests[err.reason] += 1
            log.warning("/connect from %s refused: %s", request.remote, err.message)
            return error_response(err)
        return web.json_response({"sdp": answer})

    return handle
