"""The server's state on its event loop: configuration, sessions, prompts, lifecycle.

The ``http/`` handlers turn HTTP into calls on ``WhipCore``; ``server.py`` runs it on its
own loop thread. Everything in here runs on that loop, except ``PromptStore`` (which is
thread-safe) and the per-session ``FrameProcessor`` worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import MediaStreamTrack, RTCConfiguration, RTCSessionDescription
from aiortc.exceptions import OperationError

from .errors import BadRequest, TooManySessions, UnprocessableOffer
from .prompts.store import PromptStore, VersionedPrompt
from .rtc.end_reason import EndReason, SessionEnd, end_from_peer
from .rtc.ended import EndedSessions
from .rtc.ice import IceServer
from .rtc.offer_checks import OfferSummary, check_offer
from .rtc.peer import ServerPeerConnection, is_loopback_host
from .rtc.sessions import Session, SessionRegistry

__all__ = ["ServerConfig", "WhipCore"]

logger = logging.getLogger(__name__)

DEFAULT_CHANNEL = "default"


@dataclass
class ServerConfig:
    """Settings of one server; the CLI and ``WhipServer.__init__`` fill it."""

    host: str = "127.0.0.1"
    port: int = 8889
    token: str | None = field(default=None, repr=False)
    """Bearer token; kept out of ``repr`` so logging the config does not leak it."""
    ice_servers: list[IceServer] = field(default_factory=list)
    max_sessions: int = 8
    strict_if_match: bool = False
    """RFC 9725 says 428 for a PATCH without If-Match; deployed clients omit it, so off."""
    max_sdp_bytes: int = 128 * 1024
    max_json_bytes: int = 1024 * 1024
    connect_timeout: float = 30.0
    """Seconds a session may take to reach ``connected`` before it is removed."""
    media_timeout: float = 15.0
    """Seconds without any media on a connected session before it is removed."""
    frame_timeout: float = 2.0
    """Per-frame budget for a prompt; a hung node is reported and skipped after this."""
    cors_origins: str = "*"
    rate_limit: float = 20.0
    """POST/PATCH/DELETE requests per second per client address, in bursts of up to twice
    that (RFC 9725 §4.8 SHOULD); 0 turns the limit off."""
    prompts_dir: str | None = None
    """Folder prompt files may be loaded from (``None``: current directory)."""
    comfyui: str | None = None
    """A ComfyUI folder whose executor and nodes run the prompts (None: the built-in engine)."""
    warmup: bool = False
    """Run every new prompt once on a blank frame before it goes live (``prompts/warmup.py``)."""
    ice_loopback: bool = False
    """Give the server's peers a 127.0.0.1 host candidate even when ``host`` is not a
    loopback address (it always does when it is; see ``rtc/peer.py``)."""
    public_url: str | None = None
    """Base URL clients reach this instance at (behind a proxy or balancer): ``Location``,
    WHEP and event links and the page use it instead of the request's own origin."""
    echo_processed: bool = False
    """Send a ``sendrecv`` WHIP publisher its processed video back on the same connection, as
    ComfyStream does. RFC 9725 §4.2 expects a recvonly answer, so this is off by default."""


class WhipCore:
    """Sessions and prompts of one server, driven from the event loop."""

    def __init__(self, config: ServerConfig, prompts: PromptStore, engine: Any = None) -> None:
        from .prompts.engines import BUILTIN

        self.config = config
        self.prompts = prompts
        #: turns prompts into runnable ones: built-in, or a real ComfyUI (prompts/engines.py)
        self.engine = engine if engine is not None else BUILTIN
        self.sessions = SessionRegistry()
        #: sessions that ended in the last minute, so a late DELETE still gets 200
        self.ended = EndedSessions()
        self.started_at = time.time()
        self._reaper: asyncio.Task[None] | None = None
        self.listeners: list[Callable[[str, Session], None]] = []

    # -- lifecycle ------------------------------------------------------------------------
    async def startup(self) -> None:
        self._reaper = asyncio.ensure_future(self._reap_forever())

    async def shutdown(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(BaseException):
                await self._reaper
        stop = SessionEnd(EndReason.SERVER_STOP, "the server is stopping")
        await asyncio.gather(
            *(self.close_session(s.id, stop) for s in self.sessions.values()),
            return_exceptions=True,
        )

    def rtc_configuration(self) -> RTCConfiguration:
        # an explicit list, even empty: aiortc would otherwise fall back to a public STUN
        return RTCConfiguration(iceServers=[s.to_rtc() for s in self.config.ice_servers])

    def new_peer(self) -> ServerPeerConnection:
        """A peer connection for the server's side of a session (WHIP, WHEP, ``/offer``)."""
        loopback = self.config.ice_loopback or is_loopback_host(self.config.host)
        return ServerPeerConnection(self.rtc_configuration(), loopback=loopback)

    # -- sessions -------------------------------------------------------------------------
    async def create_session(
        self,
        sdp: str,
        *,
        channel_id: str | None,
        session_prompt: Any = None,
        kind: str = "whip",
        on_track: Callable[[Session, MediaStreamTrack], None] | None = None,
    ) -> tuple[Session, str, OfferSummary]:
        """Answer an offer; returns the session, the answer SDP and the offer summary.

        ``on_track(session, track)`` replaces ``session.attach_track`` as the ``track`` handler
        and must attach the track itself. It runs inside ``setRemoteDescription``, so a track
        it adds with ``pc.addTrack`` is in the answer (ComfyStream's ``/offer`` sends back).
        """
        summary = check_offer(sdp)
        if len(self.sessions) >= self.config.max_sessions:
            raise TooManySessions(self.config.max_sessions)
        pc = self.new_peer()
        session = Session(
            pc,
            channel_id=channel_id or DEFAULT_CHANNEL,
            kind=kind,
            remote_ufrag=summary.ice_ufrag,
            remote_pwd=summary.ice_pwd,
            frame_timeout=self.config.frame_timeout,
        )
        if session_prompt is not None:
            session.session_prompt = self.prompts.new_session_version(session_prompt)
        self._apply_prompt(session)

        if on_track is None:
            pc.on("track", session.attach_track)
        else:
            pc.on("track", lambda track: on_track(session, track))

        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            state = pc.connectionState
            session.log(logging.INFO, "connection state is: %s", state)
            if state == "connected" and session.connected_at is None:
                session.connected_at = time.monotonic()
            self.notify("state", session)
            if state in ("failed", "closed"):
                end = end_from_peer(pc, was_connected=session.connected_at is not None)
                await self.close_session(session.id, end)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            if kind == "whip" and self.config.echo_processed and summary.wants_media_back:
                from .pipeline.egress import attach_echo

                attach_echo(self, session)
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except OperationError as exc:
            # also stops a worker a track started
            await session.close(SessionEnd(EndReason.REJECTED, "no common codec"))
            raise _no_codec_error(summary, exc) from exc
        except Exception as exc:  # aiortc raises assorted types on hostile SDP
            await session.close(SessionEnd(EndReason.REJECTED, "unusable offer"))
            raise BadRequest(
                f"could not process the SDP offer: {type(exc).__name__}: {exc}"
            ) from exc

        self.sessions.add(session)
        session.log(
            logging.INFO,
            "created session for channel %s (video=%s audio=%s, %d offered candidates)",
            session.channel_id,
            summary.has_video,
            summary.has_audio,
            summary.candidate_count,
        )
        self.notify("created", session)
        return session, pc.localDescription.sdp, summary

    async def close_session(self, session_id: str, end: SessionEnd | str) -> bool:
        """End a live session: the one place a session's end is recorded and remembered.

        The first end wins (a DELETE racing the peer's own close keeps whichever came
        first); a plain string is an end ``closed_by_server`` with that detail. Returns
        False when no live session has that id.
        """
        if isinstance(end, str):
            end = SessionEnd(EndReason.CLOSED_BY_SERVER, end)
        session = self.sessions.pop(session_id)
        if session is None:
            return False
        session.record_end(end)
        # remembered before the await: a DELETE arriving while it closes gets 200
        self.ended.add(session.id, session.kind, session.end or end, session.info())
        await session.close()
        self.notify("closed", session)
        return True

    def notify(self, event: str, session: Session) -> None:
        """Tell listeners (events, control, widgets) about a session event."""
        for listener in list(self.listeners):
            try:
                listener(event, session)
            except Exception:
                logger.exception("WHIP: session listener failed")

    # -- prompts --------------------------------------------------------------------------
    def _apply_prompt(self, session: Session) -> None:
        entry: VersionedPrompt = session.session_prompt or self.prompts.for_channel(
            session.channel_id
        )
        session.prompt_source = entry.source
        session.processor.set_prompt(entry.prompt, entry.version)

    def swap_prompts(
        self, prompt: Any, *, channel: str | None = None, session_id: str | None = None
    ) -> VersionedPrompt:
        """Record a validated prompt and hand it to every session it concerns."""
        if session_id is not None:
            session = self.sessions.get(session_id)
            if session is None:
                raise KeyError(session_id)
            session.session_prompt = (
                None if prompt is None else self.prompts.new_session_version(prompt)
            )
            self._apply_prompt(session)
            self.notify("prompt", session)
            return session.session_prompt or self.prompts.for_channel(session.channel_id)
        if channel is None:
            entry = self.prompts.set_default(prompt)
        else:
            entry = self.prompts.set_channel(channel, prompt)
        for session in self.sessions.values():
            if session.session_prompt is None and (
                channel is None or session.channel_id == channel
            ):
                self._apply_prompt(session)
                self.notify("prompt", session)
        return entry

    # -- expiry ---------------------------------------------------------------------------
    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.reap_once()
            except Exception:
                logger.exception("WHIP: session reaper failed")

    async def reap_once(self) -> None:
        now = time.monotonic()
        for session in self.sessions.values():
            if session.connected_at is None:
                if now - session.created_mono > self.config.connect_timeout:
                    timeout = self.config.connect_timeout
                    end = SessionEnd(EndReason.CONNECT_TIMEOUT, f"not connected in {timeout:g} s")
                    await self.close_session(session.id, end)
                continue
            if session.kind == "whep":  # viewers receive, they send no media to time out on
                continue
            last = session.last_media_at or session.connected_at
            if now - last > self.config.media_timeout:
                end = SessionEnd(
                    EndReason.MEDIA_TIMEOUT, f"no media for {self.config.media_timeout:g} s"
                )
                await self.close_session(session.id, end)


def _no_codec_error(summary: OfferSummary, exc: Exception) -> UnprocessableOffer:
    """aiortc refuses an offer sharing no codec with it; say which codecs were offered."""
    offered = ", ".join(
        f"{m.kind}: {'/'.join(m.codecs) or 'none'}"
        for m in summary.media
        if m.kind != "application"
    )
    return UnprocessableOffer(
        f"no supported codec in the offer ({offered}); this server receives VP8 or H264 video "
        f"and Opus, PCMU or PCMA audio ({exc})"
    )
