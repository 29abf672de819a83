"""WHIP extension: server-sent events about a session (``GET /whip/{id}/events``).

RFC 9725 §4.9 lets a WHIP endpoint advertise extensions with ``Link`` headers on the 201;
``whip.py`` adds ``rel="urn:ietf:params:whip:ext:core:server-sent-events"`` pointing here
whenever this route (named ``whip-events``) exists. The stream is ``text/event-stream``:

* ``state``  ``{"session_id", "state"}``: the peer connection state; ``closed`` is the last
  event, with ``end_reason`` and ``end_detail`` (see ``end_reason.py``), after which the
  server ends the stream.
* ``prompt`` ``{"session_id", "version", "source"}``: the prompt the session runs changed.
* ``error``  ``{"session_id", "error", "prompt_version"}``: a new node error (``last_error``).
* ``stats``  the ``/whip-stats`` entry plus ``session_id`` and ``dropped_events``, every second.

A new client first gets the current ``state``, ``prompt`` and ``stats``. Buffering is bounded
per client: a pending ``stats`` event is replaced by the newer one (a slow reader sees fresh
numbers, not a backlog), and past ``MAX_PENDING`` other events the oldest is dropped and
counted in ``dropped_events``. One ticker task per server samples each watched session once a
second, however many clients watch it. WHEP viewers get the same stream at
``/whep/{channel}/{id}/events`` (route ``whep-events``) when ``whep.py`` is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from typing import Any

from aiohttp import web

from ..errors import NotFound
from ..rtc.sessions import Session
from ..server_state import WhipCore
from .middleware import CORE_KEY, add_cors, core_of, options_response

__all__ = ["EVENTS_KEY", "EventFeed", "EventHub", "format_event", "setup_routes"]

logger = logging.getLogger(__name__)

MAX_PENDING = 32
STATS_INTERVAL_S = 1.0
WHIP_KINDS = ("whip", "offer")


def format_event(event: str, data: dict[str, Any], event_id: int) -> bytes:
    """One SSE message; JSON has no raw newlines, so a single ``data:`` line suffices."""
    return f"event: {event}\nid: {event_id}\ndata: {json.dumps(data)}\n\n".encode()


class EventFeed:
    """One client's pending events: bounded, newest ``stats`` only, oldest others dropped."""

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self.pending: deque[tuple[str, dict[str, Any]]] = deque()
        self.max_pending = max_pending
        self.dropped = 0
        self.ended = False
        self.wake = asyncio.Event()
        self.last_state: str | None = None
        self.last_prompt: tuple[int, str] | None = None
        self.last_error: str | None = None

    def push(self, event: str, data: dict[str, Any]) -> None:
        if self.ended:
            return
        if event == "stats":  # a newer sample makes a queued one worthless
            stale = [item for item in self.pending if item[0] == "stats"]
            for item in stale:
                self.pending.remove(item)
        if len(self.pending) >= self.max_pending:
            self.pending.popleft()
            self.dropped += 1
        self.pending.append((event, data))
        self.wake.set()

    def end(self) -> None:
        self.ended = True
        self.wake.set()

    def take(self) -> list[tuple[str, dict[str, Any]]]:
        items = list(self.pending)
        self.pending.clear()
        self.wake.clear()
        return items


class EventHub:
    """Feeds per session id, fed by ``core.listeners`` and a once-a-second ticker."""

    def __init__(self, core: WhipCore) -> None:
        self.core = core
        self.feeds: dict[str, set[EventFeed]] = {}
        self._watched: set[str] = set()
        self._ticker: asyncio.Task[None] | None = None

    def subscribe(self, session: Session) -> EventFeed:
        feed = EventFeed()
        self.feeds.setdefault(session.id, set()).add(feed)
        if session.id not in self._watched:  # WHEP sessions do not report states to the core
            self._watched.add(session.id)
            session.pc.on("connectionstatechange", lambda: self._push_state(session))
        self._push_state(session, {feed})
        self._sample(session, {feed}, initial=True)
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.ensure_future(self._tick_forever())
        return feed

    def unsubscribe(self, session_id: str, feed: EventFeed) -> None:
        feeds = self.feeds.get(session_id)
        if feeds is not None:
            feeds.discard(feed)
            if not feeds:
                del self.feeds[session_id]

    def on_session_event(self, event: str, session: Session) -> None:
        """``core.listeners`` callback (loop thread)."""
        if event == "closed":
            self._watched.discard(session.id)
            for feed in self.feeds.pop(session.id, set()):
                self._push_state(session, {feed}, "closed")
                feed.end()
        elif event == "prompt" and self.feeds.get(session.id):
            self._sample(session, self.feeds[session.id], stats=False)

    def _push_state(
        self, session: Session, feeds: set[EventFeed] | None = None, state: str | None = None
    ) -> None:
        state = state or session.connection_state
        data: dict[str, Any] = {"session_id": session.id, "state": state}
        if state == "closed":
            if session.end is None:  # the core's "closed" event follows, with the reason
                return
            data.update(end_reason=session.end.reason.value, end_detail=session.end.detail)
        for feed in feeds if feeds is not None else self.feeds.get(session.id, set()):
            if state != feed.last_state:
                feed.last_state = state
                feed.push("state", dict(data))

    def _sample(
        self, session: Session, feeds: set[EventFeed], *, stats: bool = True, initial: bool = False
    ) -> None:
        info = session.info()
        prompt = (info.prompt_version, info.prompt_source)
        for feed in feeds:
            if prompt != feed.last_prompt:
                feed.last_prompt = prompt
                feed.push(
                    "prompt",
                    {"session_id": session.id, "version": prompt[0], "source": prompt[1]},
                )
            if info.last_error != feed.last_error:
                feed.last_error = info.last_error
                if info.last_error is not None and not initial:
                    feed.push(
                        "error",
                        {
                            "session_id": session.id,
                            "error": info.last_error,
                            "prompt_version": info.prompt_version,
                        },
                    )
            if stats:
                data = info.to_dict()
                data.update(session_id=session.id, dropped_events=feed.dropped)
                feed.push("stats", data)

    async def _tick_forever(self) -> None:
        while self.feeds:
            await asyncio.sleep(STATS_INTERVAL_S)
            for session_id, feeds in list(self.feeds.items()):
                session = self.core.sessions.get(session_id)
                if session is not None and feeds:
                    try:
                        self._sample(session, set(feeds))
                    except Exception:
                        logger.exception("WHIP: %s event sampling failed", session_id[:8])

    async def close(self) -> None:
        for feeds in self.feeds.values():
            for feed in feeds:
                feed.end()
        self.feeds.clear()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(BaseException):
                await self._ticker


EVENTS_KEY: web.AppKey[EventHub] = web.AppKey("event_hub", EventHub)


async def events_endpoint(request: web.Request) -> web.StreamResponse:
    core = core_of(request)
    session_id = request.match_info["id"]
    if request.method == "OPTIONS":
        return options_response(request, ("GET", "OPTIONS"))
    whep = "channel" in request.match_info
    session = core.sessions.get(session_id)
    if (
        session is None
        or session.closed
        or (session.kind == "whep") != whep
        or (not whep and session.kind not in WHIP_KINDS)
    ):
        raise NotFound(f"no {'WHEP' if whep else 'WHIP'} session {session_id[:64]!r}")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # proxies must not hold events back
        }
    )
    add_cors(request, response, core.config.cors_origins)  # the middleware cannot: prepared
    hub = request.app[EVENTS_KEY]
    feed = hub.subscribe(session)
    await response.prepare(request)
    event_id = 0
    try:
        while True:
            await feed.wake.wait()
            chunks = []
            for event, data in feed.take():
                event_id += 1
                chunks.append(format_event(event, data, event_id))
            if chunks:
                await response.write(b"".join(chunks))
            if feed.ended and not feed.pending:
                break
        await response.write_eof()
    except ConnectionResetError:  # the client went away; nothing left to tell it
        session.log(logging.DEBUG, "event stream client disconnected")
    finally:
        hub.unsubscribe(session_id, feed)
    return response


def setup_routes(app: web.Application) -> None:
    """Serve ``/whip/{id}/events``; its name makes ``whip.py`` advertise it on the 201."""
    core = app[CORE_KEY]
    hub = EventHub(core)
    app[EVENTS_KEY] = hub
    core.listeners.append(hub.on_session_event)

    async def _close(_app: web.Application) -> None:
        await hub.close()

    app.on_shutdown.append(_close)
    paths = {"whip-events": "/whip/{id}/events"}
    if app.router.get("whep-resource") is not None:  # whep.py is installed before us
        paths["whep-events"] = "/whep/{channel}/{id}/events"
    for name, path in paths.items():
        resource = app.router.add_resource(path, name=name)
        resource.add_route("GET", events_endpoint)
        resource.add_route("OPTIONS", events_endpoint)
