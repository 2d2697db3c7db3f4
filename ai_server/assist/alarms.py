"""Timers and reminders together, as the composition root installs them (ai_server/app.py).

They share one clock, one store connection and one :class:`~ai_server.assist.ringing.Ringer`
(one device rings for one thing at a time per key, and "stop" silences both).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ai_server.assist import reminders as reminders_mod
from ai_server.assist import timers as timers_mod
from ai_server.assist.core import AssistServices
from ai_server.assist.ringing import StreamPlayer

if TYPE_CHECKING:
    from ai_server.control.speech import Speaker
    from ai_server.pipeline import Pipeline
    from ai_server.session import ConversationSession


@dataclass
class Alarms:
    timers: timers_mod.Timers
    reminders: reminders_mod.Reminders

    def close(self) -> None:
        self.timers.close()
        self.reminders.close()
        if self.timers.store is not None:
            self.timers.store.close()


def install(services: AssistServices, *, pipeline: Pipeline,
            sessions: Callable[[], Iterable[ConversationSession]], speaker: Speaker | None = None) -> Alarms:
    """Register the timer and reminder intents and restore what the store holds (needs a running loop).

    ``speaker`` is the control plane's (rooms, who is online) when MQTT runs; without it a ring goes
    straight onto the hub stream that carries the device."""
    player = StreamPlayer(pipeline, sessions, speaker)
    timers = timers_mod.install(services, player=player, metrics=pipeline.metrics)
    reminders = reminders_mod.install(services, timers=timers, metrics=pipeline.metrics)
    return Alarms(timers, reminders)
