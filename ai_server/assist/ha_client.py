"""A small client for Home Assistant's REST API (https://developers.home-assistant.io/docs/api/rest/).

Plain aiohttp with a long-lived access token: states, templates (areas are only reachable
through templates on REST), services and the conversation agent. Every failure becomes one
:class:`HAError` with a ``kind`` to count and a sentence that can be spoken as it is.
"""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp

# Domain and service names are path segments: anything else could walk to another endpoint.
_NAME = re.compile(r"[a-z0-9_]{1,64}")
_ENTITY = re.compile(r"[a-z0-9_]{1,64}\.[a-z0-9_]{1,255}")


class HAError(Exception):
    """A Home Assistant request that failed. ``kind`` is a metric label; ``spoken`` is the answer."""

    kind = "ha_error"

    def __init__(self, message: str, spoken: str = "Home Assistant gave an error, so nothing was changed.") -> None:
        super().__init__(message)
        self.spoken = spoken


class HAUnreachable(HAError):
    kind = "ha_unreachable"


class HATimeout(HAError):
    kind = "ha_timeout"


class HAUnauthorized(HAError):
    kind = "ha_unauthorized"


class HomeAssistantClient:
    """One aiohttp session to one Home Assistant; ``close()`` it when done."""

    def __init__(self, url: str, token: str, *, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, body: Any = None, *, allow_404: bool = False) -> Any:
        if self._session is None or self._session.closed:  # made on the loop that uses it
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        where = f"{method} {path}"
        try:
            async with self._session.request(method, self.url + path, json=body) as resp:
                text = await resp.text()
                if resp.status in (401, 403):
                    raise HAUnauthorized(
                        f"{where}: HTTP {resp.status} (check HA_TOKEN)",
                        "Home Assistant refused my access token, so I can't control devices. Check HA_TOKEN.",
                    )
                if resp.status == 404 and allow_404:
                    return None
                if resp.status >= 400:
                    raise HAError(f"{where}: HTTP {resp.status}: {text[:200]}")
                if "json" not in resp.content_type:
                    return text
                return json.loads(text) if text else None
        except HAError:
            raise
        except TimeoutError:
            raise HATimeout(f"{where}: no answer within {self._timeout_s:g} s",
                            "Home Assistant didn't answer in time, so I don't know if anything changed.") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise HAUnreachable(f"{where}: {exc or type(exc).__name__}",
                                "I can't reach Home Assistant right now, so nothing was changed.") from None
        except ValueError as exc:  # a body that says JSON and is not
            raise HAError(f"{where}: bad JSON: {exc}") from None

    async def states(self) -> list[dict[str, Any]]:
        """GET /api/states: every entity's state object."""
        data = await self._request("GET", "/api/states")
        if not isinstance(data, list):
            raise HAError("GET /api/states: not a list")
        return [s for s in data if isinstance(s, dict) and isinstance(s.get("entity_id"), str)]

    async def state(self, entity_id: str) -> dict[str, Any] | None:
        """GET /api/states/<entity_id>, or None when Home Assistant does not know it."""
        if not _ENTITY.fullmatch(entity_id):
            return None
        data = await self._request("GET", f"/api/states/{entity_id}", allow_404=True)
        return data if isinstance(data, dict) else None

    async def render(self, template: str) -> str:
        """POST /api/template: the rendered text."""
        data = await self._request("POST", "/api/template", {"template": template})
        return data if isinstance(data, str) else json.dumps(data)

    async def call_service(self, domain: str, service: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        """POST /api/services/<domain>/<service>: the states that changed during the call."""
        if not (_NAME.fullmatch(domain) and _NAME.fullmatch(service)):
            raise HAError(f"bad service name {domain}.{service}")
        out = await self._request("POST", f"/api/services/{domain}/{service}", data)
        if isinstance(out, dict):  # ?return_response style answers carry the states under changed_states
            out = out.get("changed_states", [])
        return [s for s in out if isinstance(s, dict)] if isinstance(out, list) else []

    async def conversation(self, text: str, language: str, agent_id: str = "") -> dict[str, Any]:
        """POST /api/conversation/process. No conversation_id: Home Assistant refuses a null one."""
        body: dict[str, Any] = {"text": text, "language": language}
        if agent_id:
            body["agent_id"] = agent_id
        data = await self._request("POST", "/api/conversation/process", body)
        if not isinstance(data, dict):
            raise HAError("POST /api/conversation/process: not an object")
        return data
