"""Session kinds and the one typed event bus that tells the server's parts about sessions.

Every session (WHIP publisher, WHEP viewer, ComfyStream ``/offer``) is created and closed by
``WhipCore`` (``server_state.py``), which publishes a ``SessionEvent`` at each step:

=============  =============================================================================
``OFFERED``    the remote offer is set, the answer not made yet: a subscriber may add a track
               it sends back (the echo does), and it will be in the answer
``CREATED``    the session is answered and registered
``STATE``      the peer connection's state changed (``session.connection_state``)
``PROMPT``     the prompt the session runs changed
``CLOSED``     the session ended; ``end`` says why. Its last event: after it, every
               subscription scoped to that session is dropped
=============  =============================================================================

The bus is loop-thread only: handlers run synchronously on the server's event loop, in the
order they subscribed; a handler that raises is logged and the others still run.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .end_reason import SessionEnd
    from .sessions import Session

__all__ = ["EventBus", "SessionEvent", "SessionEventType", "SessionKind", "Subscription"]

logger = logging.getLogger(__name__)


class SessionKind(str, enum.Enum):
    """What a session does; the value is what ``/whip-stats`` and ``SessionInfo`` show."""

    WHIP = "whip"
    """A publisher (RFC 9725)."""
    WHEP = "whep"
    """A viewer of a channel's or a session's processed video."""
    OFFER = "offer"
    """ComfyStream's send-receive session (``POST /offer``)."""

    @property
    def publishes(self) -> bool:
        """Sends media in: something viewers can watch and the reaper times out."""
        return self is not SessionKind.WHEP

    def __str__(self) -> str:
        return self.value


class SessionEventType(str, enum.Enum):
    OFFERED = "offered"
    CREATED = "created"
    STATE = "state"
    PROMPT = "prompt"
    CLOSED = "closed"


@dataclass(frozen=True)
class SessionEvent:
    """One thing that happened to a session (loop thread)."""

    type: SessionEventType
    session: Session
    end: SessionEnd | None = None
    """Why a session closed (``CLOSED`` only): its recorded end."""


Handler = Callable[[SessionEvent], None]


class Subscription:
    """A handle on one subscription; ``cancel()`` ends it (idempotent)."""

    __slots__ = ("_bus", "handler", "session_id")

    def __init__(self, bus: EventBus, handler: Handler, session_id: str | None) -> None:
        self._bus: EventBus | None = bus
        self.handler: Handler | None = handler
        self.session_id = session_id

    @property
    def active(self) -> bool:
        return self._bus is not None

    def cancel(self) -> None:
        bus, self._bus, self.handler = self._bus, None, None
        if bus is not None:
            bus._remove(self)


class EventBus:
    """Subscribers to session events; a subscription may be scoped to one session."""

    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []

    def __len__(self) -> int:
        return len(self._subscriptions)

    def subscribe(self, handler: Handler, *, session: Session | None = None) -> Subscription:
        """Call ``handler`` for every event (or only ``session``'s, dropped when it closes)."""
        sub = Subscription(self, handler, session.id if session is not None else None)
        self._subscriptions.append(sub)
        return sub

    def subscribed(self, session_id: str) -> int:
        """How many subscriptions are scoped to ``session_id``."""
        return sum(1 for s in self._subscriptions if s.session_id == session_id)

    def _remove(self, sub: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscriptions.remove(sub)

    def publish(self, event: SessionEvent) -> None:
        session_id = event.session.id
        for sub in list(self._subscriptions):
            handler = sub.handler
            if handler is None or sub.session_id not in (None, session_id):
                continue
            try:
                handler(event)
            except Exception:  # a broken observer must not break the session or the others
                logger.exception("WHIP: %s %s event handler failed", session_id[:8], event.type)
        if event.type is SessionEventType.CLOSED:
            for sub in [s for s in self._subscriptions if s.session_id == session_id]:
                sub.cancel()

    def clear(self) -> None:
        for sub in list(self._subscriptions):
            sub.cancel()
