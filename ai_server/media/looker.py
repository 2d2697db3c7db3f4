"""The voice pipeline's ``Looker`` with spec §8.10's order: the event history before the live view.

Step 2 (historical intent) comes before steps 3-5 (live frame, snapshot, camera in the zone):
"what did the front door camera see at 3am" must be answered from the stored events, not from
what the door camera shows now. Anything else goes to the live looker unchanged.
"""

from __future__ import annotations

import logging

from ai_server.media.history import HistoryQuestions
from ai_server.pipeline import Looker, Seen

log = logging.getLogger(__name__)


class HistoryFirst:
    """Implements :class:`ai_server.pipeline.Looker`."""

    def __init__(self, history: HistoryQuestions, live: Looker | None) -> None:
        self.history = history
        self.live = live

    async def look(self, device_id: str, room: str, question: str) -> Seen:
        found = await self.history.look(question, device_id)
        if found is not None:
            log.info("question from %s: historical (%s): %d events, %d exchanges, places %s", device_id,
                     found.kind, len(found.events), len(found.exchanges), [p.name for p in found.places] or "any")
            return Seen(answer=found.text)  # facts from the store, said as they are (see Seen)
        return Seen() if self.live is None else await self.live.look(device_id, room, question)
