"""M9 primitives: the client address and scheme through trusted proxies only, the limiter's key,
and the server-side revocation of login cookies (bounded)."""

from __future__ import annotations

from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from hub.web import auth
from hub.web.auth import ReadAccess, WebAuth
from hub.web.proxy import ProxyView, limit_key

pytestmark = pytest.mark.unit


def request(peer: str, headers: dict[str, str] | None = None) -> web.Request:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (peer, 5555) if name == "peername" else default
    return make_mocked_request("GET", "/", headers=headers or {}, transport=transport)


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    view = ProxyView(["127.0.0.1", "10.0.0.0/24"])
    forged = {"X-Forwarded-For": "6.6.6.6, 192.0.2.7", "X-Forwarded-Proto": "https"}
    assert view.client(request("127.0.0.1", forged)) == "192.0.2.7", "the right-most hop is the proxy's"
    assert view.client(request("192.0.2.99", forged)) == "192.0.2.99", "an untrusted peer is the client"
    # Two trusted proxies in a row: skip both, the next hop to the left is the client.
    chain = {"X-Forwarded-For": "6.6.6.6, 198.51.100.4, 10.0.0.7"}
    assert view.client(request("127.0.0.1", chain)) == "198.51.100.4"
    assert view.client(request("127.0.0.1")) == "127.0.0.1", "no header: the proxy itself (a local client)"
    assert view.client(request("127.0.0.1", {"X-Forwarded-For": "[2001:db8::5]:443"})) == "2001:db8::5"
    assert view.secure(request("127.0.0.1", forged))
    assert not view.secure(request("192.0.2.99", forged)), "a client cannot claim https for itself"
    assert not view.secure(request("127.0.0.1", {"X-Forwarded-Proto": "https, http"})), "our proxy's value counts"
    assert ProxyView([]).client(request("127.0.0.1", forged)) == "127.0.0.1"


def test_limit_key_groups_an_ipv6_slash_64() -> None:
    assert limit_key("2001:db8:0:1::1") == limit_key("2001:db8:0:1:ffff::9") == "2001:db8:0:1::/64"
    assert limit_key("2001:db8:0:2::1") != limit_key("2001:db8:0:1::1")
    assert limit_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert limit_key("192.0.2.1") == "192.0.2.1"
    assert limit_key("not-an-address" * 10) == ("not-an-address" * 10)[:64]


def test_revoked_cookies_stay_revoked_and_the_set_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "MAX_REVOKED", 3)
    now = [1000.0]
    web = WebAuth("a" * 20, session_s=60, clock=lambda: now[0])
    keep = web.mint_cookie()
    cookies = [web.mint_cookie() for _ in range(3)]
    for c in cookies:
        assert web.revoke_cookie(c) and not web.check_cookie(c)
    assert not web.revoke_cookie(cookies[0]), "already revoked"
    assert web.check_cookie(keep), "only the revoked cookies are refused"
    # A fourth revocation with the set full: everything issued so far is revoked at once (safe).
    now[0] += 1
    assert web.revoke_cookie(keep)
    assert not any(web.check_cookie(c) for c in [keep, *cookies])
    now[0] += 1
    fresh = web.mint_cookie()
    assert web.check_cookie(fresh), "a login after the mass revocation works"


def test_read_access_never_accepts_an_empty_token() -> None:
    for blank in ("", "   "):
        access = ReadAccess(None, blank)
        assert not access.enabled
        assert not access.allowed(request("192.0.2.1", {"Authorization": "Bearer "}))
    access = ReadAccess(None, "metrics-token-1234")
    assert access.allowed(request("192.0.2.1", {"Authorization": "Bearer metrics-token-1234"}))
    assert not access.allowed(request("192.0.2.1", {"Authorization": "Bearer metrics-token-123"}))
