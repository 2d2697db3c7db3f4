"""Web app authentication: the login cookie and the per-browser device tokens.

Everything is derived from ``HUB_WEB_TOKEN`` with HMAC-SHA256 and nothing is stored on disk,
so logins and browser device tokens survive a hub restart (a browser device reconnects on its
own), and changing the web token revokes all of them at once. Logging out also revokes that one
cookie on the server (a copy stolen earlier stops working): the hub remembers the revoked
cookies' nonces until they would have expired, in memory, so a hub restart forgets them.

* Login: a person posts the web token once (``POST /login``); the hub answers with a cookie
  ``naila_web = v1.<expires>.<nonce>.<mac>`` (HttpOnly, SameSite=Strict, Secure over HTTPS).
  Scripts may send ``Authorization: Bearer <web token>`` instead.
* Data endpoints (``/turns``, ``/health?detail=1``, ``/metrics``): the same login, or
  ``Authorization: Bearer <HUB_METRICS_TOKEN>`` for a scraper (:class:`ReadAccess`).
* Browser devices: a logged-in page asks ``POST /api/device-token`` for a token for its own
  device id (``web-`` + random). The token is ``<expires>.HMAC(key, "device:" + id + expires)``:
  it opens ``POST /connect`` for that one id only, like a ``HUB_DEVICE_TOKENS`` entry, until it
  expires with the login's lifetime (``HUB_WEB_SESSION_HOURS``); then the page, still logged in,
  asks for a new one. A browser that was logged in once does not keep the microphone's door open
  for ever. A ``web-`` id can only be used with such a token: a browser device is never
  unauthenticated, even when ``HUB_DEVICE_TOKENS`` is empty.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping

from aiohttp import web

from shared.ids import ID_CHARS, MAX_ID_LEN

COOKIE_NAME = "naila_web"
BROWSER_PREFIX = "web-"
# The same alphabet and length as /connect's device ids (shared.ids), so a browser id is one too.
BROWSER_ID_RE = re.compile(rf"{BROWSER_PREFIX}{ID_CHARS}{{1,{MAX_ID_LEN - len(BROWSER_PREFIX)}}}")
_COOKIE_VERSION = "v1"
# Revoked cookies remembered at once. Past this (thousands of logouts within one session
# lifetime) every cookie issued so far is revoked instead: safe, and the map stays small.
MAX_REVOKED = 4096


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_browser_id() -> str:
    return f"{BROWSER_PREFIX}{secrets.token_hex(6)}"


def is_browser_id(device_id: str) -> bool:
    """A browser's device id (the web app mints these, and its device tokens are only for these)."""
    return BROWSER_ID_RE.fullmatch(device_id) is not None


class WebAuth:
    """Mints and checks login cookies and browser device tokens for one web token."""

    def __init__(self, web_token: str, session_s: float, *, clock: Callable[[], float] = time.time) -> None:
        self._token = web_token.encode()
        # Separate keys per purpose, so a value minted for one use is never valid for another.
        self._cookie_key = hmac.new(self._token, b"naila-web-cookie-v1", hashlib.sha256).digest()
        self._device_key = hmac.new(self._token, b"naila-web-device-v1", hashlib.sha256).digest()
        self.session_s = session_s
        self._clock = clock
        self._revoked: dict[str, int] = {}  # nonce -> the cookie's expiry (then it is refused anyway)
        self._min_expires = 0  # cookies expiring at or before this were all revoked at once

    # ----- the web token itself (login form, Authorization header) -----

    def check_web_token(self, given: str) -> bool:
        return hmac.compare_digest(given.strip().encode(), self._token)

    # ----- login cookie -----

    def mint_cookie(self) -> str:
        expires = int(self._clock() + self.session_s)
        body = f"{_COOKIE_VERSION}.{expires}.{secrets.token_hex(8)}"
        return f"{body}.{self._cookie_mac(body)}"

    def check_cookie(self, value: str | None) -> bool:
        if not value or len(value) > 200:
            return False
        body, _, mac = value.rpartition(".")
        parts = body.split(".")
        if len(parts) != 3 or parts[0] != _COOKIE_VERSION or not parts[1].isdigit():
            return False
        if not hmac.compare_digest(mac, self._cookie_mac(body)):
            return False
        expires = int(parts[1])
        return expires > self._clock() and expires > self._min_expires and parts[2] not in self._revoked

    def revoke_cookie(self, value: str | None) -> bool:
        """Log one cookie out on the server side (POST /logout). True if it was valid until now."""
        if not self.check_cookie(value):
            return False
        assert value is not None
        _version, expires, nonce = value.rpartition(".")[0].split(".")
        if len(self._revoked) >= MAX_REVOKED:
            now = self._clock()
            self._revoked = {n: e for n, e in self._revoked.items() if e > now}
        if len(self._revoked) >= MAX_REVOKED:
            self._min_expires = int(self._clock() + self.session_s)
            self._revoked.clear()
        else:
            self._revoked[nonce] = int(expires)
        return True

    def _cookie_mac(self, body: str) -> str:
        return _b64(hmac.new(self._cookie_key, body.encode(), hashlib.sha256).digest())

    def authenticated(self, request: web.Request) -> bool:
        """A valid login cookie, or the web token as a bearer token (scripts, curl)."""
        if self.check_cookie(request.cookies.get(COOKIE_NAME)):
            return True
        bearer = bearer_token(request)
        return bearer is not None and self.check_web_token(bearer)

    # ----- browser device tokens -----

    def device_token(self, device_id: str) -> str:
        if not BROWSER_ID_RE.fullmatch(device_id):
            raise ValueError(f"not a browser device id: {device_id!r}")
        expires = int(self._clock() + self.session_s)
        return f"{expires}.{self._device_mac(device_id, expires)}"

    def check_device_token(self, device_id: str, given: str) -> bool:
        """True for an unexpired token minted for exactly this browser id. An expired token, one
        for another id or a forged one are all just False: /connect answers them alike."""
        expires, _, mac = given.partition(".")
        if not BROWSER_ID_RE.fullmatch(device_id) or not expires.isdigit() or len(expires) > 12:
            return False
        # compare_digest before the expiry test: the time taken says nothing about which failed.
        same = hmac.compare_digest(mac.encode(), self._device_mac(device_id, int(expires)).encode())
        return same and int(expires) > self._clock()

    def _device_mac(self, device_id: str, expires: int) -> str:
        msg = f"device:{device_id}:{expires}".encode()
        return _b64(hmac.new(self._device_key, msg, hashlib.sha256).digest())


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    return header[7:] if header.lower().startswith("bearer ") else None


class ReadAccess:
    """Who may read the hub's data endpoints: the web login (cookie or web token as a bearer), or
    ``HUB_METRICS_TOKEN`` as a bearer. With neither token set, nobody may (H2)."""

    def __init__(self, web_auth: WebAuth | None, metrics_token: str | None) -> None:
        self._web = web_auth
        # An empty or blank token means "not set", never "the empty bearer is accepted".
        self._metrics = metrics_token.strip().encode() if metrics_token and metrics_token.strip() else None

    @property
    def enabled(self) -> bool:
        return self._web is not None or self._metrics is not None

    def allowed(self, request: web.Request) -> bool:
        if self._web is not None and self._web.authenticated(request):
            return True
        bearer = bearer_token(request)
        # compare_digest: the time taken says nothing about how much of the token was right.
        if bearer is None or self._metrics is None:
            return False
        return hmac.compare_digest(bearer.strip().encode(), self._metrics)


class DeviceTokenTable(dict[str, str]):
    """``HUB_DEVICE_TOKENS`` plus the browser devices' derived tokens, for /connect's check.

    hub.signaling.check_token asks :meth:`verify` first: an exact ``HUB_DEVICE_TOKENS`` entry
    wins (None: check it as usual), then a ``web-`` id is judged by its derived, expiring token
    alone, so the ``*`` entry never opens a browser device; every other id falls through to the
    table (its own entry, then ``*``), exactly as without the web app.
    """

    def __init__(self, static: Mapping[str, str], auth: WebAuth) -> None:
        super().__init__(static)
        self._auth = auth

    def verify(self, device_id: str, given: str) -> bool | None:
        if device_id in self or not BROWSER_ID_RE.fullmatch(device_id):
            return None
        return self._auth.check_device_token(device_id, given)
