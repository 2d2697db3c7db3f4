"""Engines selected by name: one small registry per engine kind (STT, TTS, LLM, VAD, ...).

Frigate finds detector plugins by subclass discovery; we take the idea without the magic: each
engine package owns one ``Registry`` and registers its engines explicitly, so reading that
package tells you every name a setting accepts. A setting stays a pydantic ``Literal`` (so
``naila config`` documents the choices and a typo fails at load time with the allowed values);
a foundation test checks that each Literal and its registry list the same names, which is the
one place the two could drift apart.

A factory is registered with the name the setting uses. Factories import their heavy library
lazily so that choosing one engine never loads another's dependencies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class UnknownEngine(ValueError):
    """A name no engine was registered under; the message lists the ones that exist."""


class Registry(Generic[P, T]):
    """Name → factory for one kind of engine (``kind`` names it in errors, e.g. "STT")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[P, T]] = {}

    def register(self, name: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """Decorator: ``@STT_ENGINES.register("whisper")`` on a factory function."""

        def add(factory: Callable[P, T]) -> Callable[P, T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} engine {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return add

    def names(self) -> tuple[str, ...]:
        return tuple(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def factory(self, name: str) -> Callable[P, T]:
        try:
            return self._factories[name]
        except KeyError:
            known = ", ".join(sorted(self._factories)) or "none"
            raise UnknownEngine(f"unknown {self.kind} engine {name!r} (known: {known})") from None

    def build(self, name: str, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.factory(name)(*args, **kwargs)
