"""``LoopHandoff``: the one way a worker thread's result reaches loop-side subscribers.

Both of a session's workers (video frames, audio buffers) use it: the worker calls
``deliver_soon`` and the loop runs every subscriber with one ``call_soon_threadsafe`` per
item, made only when someone subscribes. Subscribers are added and removed on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["LoopHandoff"]

T = TypeVar("T")

logger = logging.getLogger(__name__)


class LoopHandoff(Generic[T]):
    """Loop-side subscribers to items made on a worker thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, what: str) -> None:
        self.loop = loop
        self.what = what
        """Named in the log when a subscriber raises (``"<session> frame"``)."""
        self._subscribers: list[Callable[[T], None]] = []

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self, subscriber: Callable[[T], None]) -> Callable[[], None]:
        """Call ``subscriber(item)`` on the loop for each item; returns the canceller."""
        self._subscribers.append(subscriber)

        def cancel() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(subscriber)

        return cancel

    def deliver_soon(self, item: T) -> None:
        """Worker thread: hand ``item`` to the loop's subscribers (if there are any)."""
        if self._subscribers:
            with contextlib.suppress(RuntimeError):  # loop closed: the server is stopping
                self.loop.call_soon_threadsafe(self._deliver, item)

    def _deliver(self, item: T) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(item)
            except Exception:
                logger.exception("WHIP: %s subscriber failed", self.what)

    def clear(self) -> None:
        self._subscribers.clear()
