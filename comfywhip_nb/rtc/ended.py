"""A short memory of ended sessions, so a DELETE racing the peer's own close answers 200.

medooze ``whip-whep``, binbat's client and sometimes OBS close their peer connection a few
milliseconds before they send DELETE. By then the server has removed the session; a 404 would
make OBS log a failure. RFC 9725 only asks that DELETE end the session, and it has ended, so
the server keeps who ended and why for ``ttl`` seconds (60 by default), at most
``max_entries`` of them, and answers such a DELETE 200. Only small data is kept: the id, the
kind, the end and the final counters -- never frames or peer connections.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .end_reason import SessionEnd

__all__ = ["EndedSession", "EndedSessions"]


@dataclass(frozen=True)
class EndedSession:
    """What is remembered of one ended session."""

    id: str
    kind: str
    end: SessionEnd
    ended_at: float
    """``time.monotonic()`` when it ended."""
    info: Any = None
    """The session's last ``SessionInfo`` (counters only)."""


class EndedSessions:
    """Ended sessions by id: bounded in count and age. Loop-thread only."""

    def __init__(
        self,
        ttl: float = 60.0,
        max_entries: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._items: OrderedDict[str, EndedSession] = OrderedDict()

    def add(self, session_id: str, kind: str, end: SessionEnd, info: Any = None) -> None:
        self._items.pop(session_id, None)
        self._items[session_id] = EndedSession(session_id, kind, end, self._clock(), info)
        self._prune()

    def get(self, session_id: str) -> EndedSession | None:
        self._prune()
        return self._items.get(session_id)

    def __len__(self) -> int:
        self._prune()
        return len(self._items)

    def _prune(self) -> None:
        oldest_allowed = self._clock() - self.ttl
        while self._items:
            first = next(iter(self._items.values()))
            if len(self._items) <= self.max_entries and first.ended_at >= oldest_allowed:
                break
            self._items.popitem(last=False)
