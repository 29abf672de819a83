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

from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import OperationError

from .errors import BadRequest, TooManySessions, UnprocessableOffer
from .prompts.store import PromptStore, VersionedPrompt
from .rtc.ice import IceServer
from .rtc.offer_checks import OfferSummary, check_offer
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
    warmup: bool = False
    """Run every new prompt once on a blank frame before it goes live (``prompts/warmup.py``)."""
    public_url: str | None = None
    """Base URL clients reach this instance at (behind a proxy or balancer): ``Location``,
    WHEP and event links and the page use it instead of the request's own origin."""
    echo_processed: bool = False
    """Send a ``sendrecv`` WHIP publisher its processed video back on the same connection, as
    ComfyStream does. RFC 9725 §4.2 expects a recvonly answer, so this is off by default."""


class WhipCore:
    """Sessions and prompts of one server, driven from the event loop."""

    def __init__(self, config: ServerConfig, prompts: PromptStore) -> None:
        self.config = config
        self.prompts = prompts
        self.sessions = SessionRegistry()
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
        await asyncio.gather(
            *(self.close_session(s.id, "server stopping") for s in self.sessions.values()),
            return_exceptions=True,
        )

    def rtc_configuration(self) -> RTCConfiguration:
        # an explicit list, even empty: aiortc would otherwise fall back to a public STUN
        return RTCConfiguration(iceServers=[s.to_rtc() for s in self.config.ice_servers])

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
        pc = RTCPeerConnection(self.rtc_configuration())
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
                await self.close_session(session.id, f"ICE {state}")

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            if kind == "whip" and self.config.echo_processed and summary.wants_media_back:
                from .pipeline.egress import attach_echo

                attach_echo(self, session)
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except OperationError as exc:
            await session.close("no common codec")  # also stops a worker a track started
            raise _no_codec_error(summary, exc) from exc
        except Exception as exc:  # aiortc raises assorted types on hostile SDP
            await session.close("unusable offer")
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

    async def close_session(self, session_id: str, reason: str) -> bool:
        session = self.sessions.pop(session_id)
        if session is None:
            return False
        await session.close(reason)
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
                    await self.close_session(session.id, "not connected in time")
                continue
            if session.kind == "whep":  # viewers receive, they send no media to time out on
                continue
            last = session.last_media_at or session.connected_at
            if now - last > self.config.media_timeout:
                await self.close_session(
                    session.id, f"no media for {self.config.media_timeout:g} s"
                )


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
