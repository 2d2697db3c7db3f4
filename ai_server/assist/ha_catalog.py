"""What Home Assistant has: its entities (names, domains, areas, last known states) and its areas.

Read with two requests (GET /api/states and one POST /api/template, since REST reaches areas
only through templates), kept in memory and re-read at most every ``refresh_s``: the slot
providers the recognizer calls on every sentence must be cheap, so they return the cache and at
most start a background refresh. A failed refresh keeps the last good lists.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ai_server.assist.core import SlotRows
from ai_server.assist.ha_client import HAError, HomeAssistantClient

log = logging.getLogger("naila.assist.ha")

#: Every area with its name and entities, as JSON, in one template (areas(), area_name() and
#: area_entities() are Home Assistant template functions; tojson is Jinja2's own filter).
AREAS_TEMPLATE = (
    "{% set ns = namespace(out=[]) %}{% for a in areas() %}"
    "{% set ns.out = ns.out + [{'id': a, 'name': area_name(a), 'entities': area_entities(a) | list}] %}"
    "{% endfor %}{{ ns.out | tojson }}"
)

#: Domains the shipped intents act on or ask about; the rest (automations, updates, zones, sun...)
#: would only make the name list long and the matching ambiguous.
SPOKEN_DOMAINS = frozenset({
    "light", "switch", "fan", "cover", "valve", "lock", "climate", "media_player", "scene", "script",
    "sensor", "binary_sensor", "input_boolean", "button", "input_button", "vacuum", "lawn_mower",
    "person", "weather", "humidifier",
})

# After a failed refresh, try again sooner than refresh_s: Home Assistant may just be restarting.
RETRY_AFTER_FAILURE_S = 30.0


def spoken_key(text: str) -> str:
    """How names are compared: case, underscores and extra spaces do not matter."""
    return " ".join(text.replace("_", " ").lower().split())


@dataclass(frozen=True)
class Entity:
    entity_id: str
    name: str
    area_id: str | None = None
    state: str = "unknown"
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def domain(self) -> str:
        return self.entity_id.split(".", 1)[0]

    @classmethod
    def from_state(cls, obj: Mapping[str, Any], area_id: str | None = None) -> Entity:
        raw = obj.get("attributes")
        attributes: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
        entity_id = str(obj["entity_id"])
        name = attributes.get("friendly_name")
        if not isinstance(name, str) or not name.strip():
            name = entity_id.split(".", 1)[-1].replace("_", " ")
        return cls(entity_id, name.strip(), area_id, str(obj.get("state", "unknown")), attributes)


@dataclass(frozen=True)
class Catalog:
    """One consistent snapshot of Home Assistant's entities and areas."""

    entities: Mapping[str, Entity] = field(default_factory=dict)
    areas: Mapping[str, str] = field(default_factory=dict)  # area id -> its name

    def entity(self, spoken: str) -> Entity | None:
        """By entity id or by friendly name (case-insensitive)."""
        if spoken in self.entities:
            return self.entities[spoken]
        key = spoken_key(spoken)
        for entity in self.entities.values():
            if spoken_key(entity.name) == key:
                return entity
        return None

    def area(self, spoken: str) -> str | None:
        """The area id for an area id or name (a device's room "living_room" finds "Living Room")."""
        key = spoken_key(spoken)
        for area_id, name in self.areas.items():
            if key in (spoken_key(area_id), spoken_key(name)):
                return area_id
        return None

    def in_area(self, area_id: str | None, domains: Iterable[str]) -> list[Entity]:
        """The entities of ``domains`` in an area (None: the whole home), sorted by name."""
        wanted = set(domains)
        found = [e for e in self.entities.values()
                 if e.domain in wanted and (area_id is None or e.area_id == area_id)]
        return sorted(found, key=lambda e: e.name.lower())

    def with_states(self, states: Iterable[Mapping[str, Any]]) -> Catalog:
        """This catalog with newer state objects (a service call's answer, a fresh GET)."""
        entities = dict(self.entities)
        for obj in states:
            entity_id = obj.get("entity_id")
            if isinstance(entity_id, str) and entity_id in entities:
                entities[entity_id] = Entity.from_state(obj, entities[entity_id].area_id)
        return Catalog(entities, self.areas)


def parse_areas(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """AREAS_TEMPLATE's output -> (area id -> name, entity id -> area id)."""
    rows = json.loads(text)
    if not isinstance(rows, list):
        raise ValueError("areas template: not a list")
    areas: dict[str, str] = {}
    where: dict[str, str] = {}
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("id"), str):
            continue
        area_id = row["id"]
        areas[area_id] = str(row.get("name") or area_id)
        for entity_id in row.get("entities") or []:
            if isinstance(entity_id, str):
                where.setdefault(entity_id, area_id)
    return areas, where


class HomeCatalog:
    """The cached catalog, refreshed in the background when older than ``refresh_s``."""

    def __init__(
        self,
        client: HomeAssistantClient,
        now: Callable[[], dt.datetime],
        *,
        refresh_s: float = 300.0,
        count: Callable[[str], None] = lambda event: None,
    ) -> None:
        self.client = client
        self.current = Catalog()
        self.refreshed_at: dt.datetime | None = None  # the last good refresh
        self.last_error: HAError | None = None  # why the last refresh failed
        self._now = now
        self._refresh_s = refresh_s
        self._count = count
        self._next_try: dt.datetime | None = None  # None: due now
        self._task: asyncio.Task[bool] | None = None

    async def refresh(self) -> bool:
        """Re-read entities and areas; on failure keep the last good catalog (logged, counted)."""
        started = self._now()
        try:
            states = await self.client.states()
            areas, where = parse_areas(await self.client.render(AREAS_TEMPLATE))
        except (HAError, ValueError) as exc:
            self.last_error = exc if isinstance(exc, HAError) else HAError(f"areas template: {exc}")
            self._next_try = started + dt.timedelta(seconds=min(self._refresh_s, RETRY_AFTER_FAILURE_S))
            self._count("ha_refresh_failed")
            log.warning("Home Assistant: names not refreshed, keeping the last %d entities and %d areas: %s",
                        len(self.current.entities), len(self.current.areas), exc)
            return False
        entities = {}
        for obj in states:
            entity = Entity.from_state(obj, where.get(str(obj["entity_id"])))
            if entity.domain in SPOKEN_DOMAINS:
                entities[entity.entity_id] = entity
        self.current = Catalog(entities, areas)
        self.refreshed_at = started
        self._next_try = started + dt.timedelta(seconds=self._refresh_s)
        self._count("ha_refresh")
        log.info("Home Assistant: %d entities in %d areas", len(entities), len(areas))
        return True

    def due(self) -> bool:
        return self._next_try is None or self._now() >= self._next_try

    def maybe_refresh(self) -> asyncio.Task[bool] | None:
        """Start a background refresh when one is due and none runs (needs a running loop)."""
        if not self.due() or (self._task is not None and not self._task.done()):
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called from a worker thread: the next call on the loop refreshes
            return None
        self._task = loop.create_task(self.refresh(), name="ha-refresh")
        return self._task

    def update(self, states: Sequence[Mapping[str, Any]]) -> None:
        self.current = self.current.with_states(states)

    def name_rows(self) -> SlotRows:
        """The "name" slot list: (friendly name, entity id, {"domain": ...}) for every entity."""
        self.maybe_refresh()
        return [(e.name, e.entity_id, {"domain": e.domain}) for e in self.current.entities.values()]

    def area_rows(self) -> SlotRows:
        """The "area" slot list: (area name, area id, {})."""
        self.maybe_refresh()
        return [(name, area_id, {}) for area_id, name in self.current.areas.items()]

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        await self.client.close()
