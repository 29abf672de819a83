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

from .errors import BadRequest, TooManySessions, UnprocessableOffer, WhipError
from .prompts.store import PromptStore, VersionedPrompt
from .rtc.end_reason import EndReason, SessionEnd, end_from_peer
from .rtc.ended import EndedSessions
from .rtc.ice import IceServer
from .rtc.lifecycle import EventBus, SessionEvent, SessionEventType, SessionKind
from .rtc.offer_checks import OfferSummary, check_offer, check_viewer_offer
from .rtc.peer import ServerPeerConnection, is_loopback_host
from .rtc.sessions import AudioHook, FrameHook, Session, SessionRegistry

__all__ = ["PromptSwap", "ServerConfig", "WhipCore"]

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
    shared_encoding: bool = True
    """Encode a feed once for all its WHEP viewers (``pipeline/egress.py``); False makes
    aiortc encode per viewer (benchmarks compare both). Read when a viewer joins."""


class WhipCore:
    """Sessions and prompts of one server, driven from the event loop.

    The one create path (``create_session``) and the one close path (``close_session``) for
    every kind of session; both publish on ``events``. Which prompt a session runs is decided
    here and nowhere else (``_apply_prompt``: paused -> session -> channel -> default).
    """

    def __init__(self, config: ServerConfig, prompts: PromptStore, engine: Any = None) -> None:
        from .prompts.engines import BUILTIN

        self.config = config
        self.prompts = prompts
        #: turns prompts into runnable ones: built-in, or a real ComfyUI (prompts/engines.py)
        self.engine = engine if engine is not None else BUILTIN
        self.sessions = SessionRegistry()
        self.events = EventBus()
        #: sessions that ended in the last minute, so a late DELETE still gets 200 (small
        #: records: id, kind, end and a ``SessionInfo``; never frames)
        self.ended = EndedSessions()
        self.started_at = time.time()
        self._reaper: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Future[Any]] = set()
        #: called on each session's worker thread for every processed frame (the public
        #: ``WhipServer.add_frame_hook``); replaced as a whole, never mutated in place
        self.frame_hooks: tuple[FrameHook, ...] = ()
        #: called on each session's audio worker thread for every processed audio buffer
        #: (``WhipServer.add_audio_hook``); replaced as a whole, never mutated in place
        self.audio_hooks: tuple[AudioHook, ...] = ()

    # -- lifecycle ------------------------------------------------------------------------
    async def startup(self) -> None:
        self._reaper = asyncio.ensure_future(self._reap_forever())

    async def shutdown(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(BaseException):
                await self._reaper
            self._reaper = None
        stop = SessionEnd(EndReason.SERVER_STOP, "the server is stopping")
        await asyncio.gather(
            *(self.close_session(s.id, stop) for s in self.sessions.values()),
            return_exceptions=True,
        )
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)
        self.events.clear()

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
        kind: SessionKind | str = SessionKind.WHIP,
        on_track: Callable[[Session, MediaStreamTrack], None] | None = None,
        prepare: Callable[[Session], None] | None = None,
    ) -> tuple[Session, str, OfferSummary]:
        """Answer an offer; returns the session, the answer SDP and the offer summary.

        ``on_track(session, track)`` replaces ``session.attach_track`` as the ``track`` handler
        and must attach the track itself. It runs inside ``setRemoteDescription``, so a track
        it adds with ``session.send`` is in the answer (ComfyStream's ``/offer`` sends back).
        ``prepare(session)`` runs after the offer is set and before the answer is made (a
        WHEP viewer adds its track there); so do ``OFFERED`` subscribers (the echo).
        """
        kind = SessionKind(kind)
        summary = check_viewer_offer(sdp) if kind is SessionKind.WHEP else check_offer(sdp)
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
            worker_hooks=self._frame_hooks,
            audio_hooks=self._audio_hooks,
        )
        session.offer = summary
        if kind is SessionKind.WHEP:
            session.has_video = True
        if session_prompt is not None:
            session.session_prompt = self.prompts.new_session_version(session_prompt)
        self._apply_prompt(session)
        session_id = session.id  # the handlers below must not hold the session itself

        if on_track is None:
            pc.on("track", session.attach_track)
        else:
            pc.on("track", lambda track: on_track(session, track))

        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            live = self.sessions.get(session_id)
            if live is None:
                return
            state = live.pc.connectionState
            live.log(logging.INFO, "connection state is: %s", state)
            if state == "connected" and live.connected_at is None:
                live.connected_at = time.monotonic()
            self.publish(SessionEventType.STATE, live)
            if state in ("failed", "closed"):
                end = end_from_peer(live.pc, was_connected=live.connected_at is not None)
                await self.close_session(session_id, end)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            if prepare is not None:
                prepare(session)
            self.publish(SessionEventType.OFFERED, session)
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as exc:  # aiortc raises assorted types on hostile SDP
            detail = "no common codec" if isinstance(exc, OperationError) else "unusable offer"
            # also stops a worker a track started
            await self._end(session, SessionEnd(EndReason.REJECTED, detail))
            if isinstance(exc, OperationError):
                raise _no_codec_error(kind, summary, exc) from exc
            if isinstance(exc, WhipError):
                raise
            raise BadRequest(
                f"could not process the SDP offer: {type(exc).__name__}: {exc}"
            ) from exc

        self.sessions.add(session)
        session.log(
            logging.INFO,
            "created %s session for channel %s (video=%s audio=%s, %d offered candidates)",
            kind.value,
            session.channel_id,
            summary.has_video,
            summary.has_audio,
            summary.candidate_count,
        )
        self.publish(SessionEventType.CREATED, session)
        return session, pc.localDescription.sdp, summary

    async def close_session(self, session_id: str, end: SessionEnd | str) -> bool:
        """The one close path: DELETE, ICE/DTLS failure, peer close, timeouts, server stop.

        Records the end (the first end wins: a DELETE racing the peer's own close keeps
        whichever came first; a plain string is an end ``closed_by_server`` with that detail)
        and remembers it before the await, so a DELETE arriving while it closes gets 200.
        Returns False when no live session has that id.
        """
        if isinstance(end, str):
            end = SessionEnd(EndReason.CLOSED_BY_SERVER, end)
        session = self.sessions.pop(session_id)
        if session is None:
            return False
        session.record_end(end)
        self.ended.add(session.id, session.kind, session.end or end, session.info())
        # its own task, known to ``shutdown``: a close started by a peer's state change or a
        # DELETE is awaited there too (else a stopping server could leave the session's
        # worker threads running), and a cancelled caller does not abort it halfway
        closing = asyncio.ensure_future(self._end(session, end))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        await asyncio.shield(closing)
        return True

    def close_session_soon(self, session_id: str, end: SessionEnd) -> None:
        """``close_session`` from a synchronous callback (a track ending, a state change)."""
        if session_id not in self.sessions:
            return
        task = asyncio.ensure_future(self.close_session(session_id, end))
        self._closing.add(task)  # asyncio keeps only weak references to tasks
        task.add_done_callback(self._closing.discard)

    async def _end(self, session: Session, end: SessionEnd) -> None:
        await session.close(end)
        self.publish(SessionEventType.CLOSED, session, end)  # then its subscriptions end
        session.release()

    def publish(
        self, kind: SessionEventType, session: Session, end: SessionEnd | None = None
    ) -> None:
        """Tell subscribers (events, control, egress, widgets) about a session event."""
        self.events.publish(SessionEvent(kind, session, end))

    def _frame_hooks(self) -> tuple[FrameHook, ...]:
        return self.frame_hooks

    def _audio_hooks(self) -> tuple[AudioHook, ...]:
        return self.audio_hooks

    # -- prompts: the one place that decides what a session runs ---------------------------
    def prompt_entry(self, session: Session) -> VersionedPrompt:
        """The prompt ``session`` should run: its own, else its channel's, else the default."""
        return session.session_prompt or self.prompts.for_channel(session.channel_id)

    def _apply_prompt(self, session: Session) -> None:
        entry = self.prompt_entry(session)
        session.prompt_source = entry.source
        # paused: the version stays the recorded one, frames and audio pass through
        prompt = None if session.prompts_paused else entry.prompt
        # a prompt list splits by stream: graphs ending in SaveTensor run on video, those
        # ending in SaveAudioTensor on audio (a prompt object without the flags is video)
        video = prompt if getattr(prompt, "has_image", True) else None
        audio = prompt if getattr(prompt, "has_audio", False) else None
        session.processor.set_prompt(video, entry.version)
        session.audio_processor.set_prompt(audio, entry.version)

    def set_paused(self, session: Session, paused: bool) -> None:
        """Pause (passthrough) or resume a session's prompt (the ``control`` channel)."""
        session.prompts_paused = paused
        self._apply_prompt(session)
        self.publish(SessionEventType.PROMPT, session)

    def swap_prompts(
        self,
        prompt: Any,
        *,
        channel: str | None = None,
        session_id: str | None = None,
        paused: bool | None = None,
    ) -> PromptSwap:
        """Record a validated prompt and hand it to every session it concerns.

        A channel or default swap is followed by every session of that scope except those
        running a prompt of their own; those are listed in ``not_following``. ComfyStream's
        ``/offer`` sessions are not among them: for them ``POST /prompt`` and the control
        channel's ``update_prompts`` set the same prompt, so the last write wins.
        ``paused`` (a session swap only) pauses or resumes it in the same step.
        """
        if session_id is not None:
            session = self.sessions.get(session_id)
            if session is None:
                raise KeyError(session_id)
            session.session_prompt = (
                None if prompt is None else self.prompts.new_session_version(prompt)
            )
            if paused is not None:
                session.prompts_paused = paused
            self._apply_prompt(session)
            self.publish(SessionEventType.PROMPT, session)
            return PromptSwap(self.prompt_entry(session))
        if channel is None:
            entry = self.prompts.set_default(prompt)
        else:
            entry = self.prompts.set_channel(channel, prompt)
        not_following: list[str] = []
        for session in self.sessions.values():
            if channel is not None and session.channel_id != channel:
                continue
            if session.session_prompt is not None:
                if session.kind is not SessionKind.OFFER:
                    not_following.append(session.id)
                    continue
                session.session_prompt = None  # last write wins (ComfyStream semantics)
            self._apply_prompt(session)
            self.publish(SessionEventType.PROMPT, session)
        return PromptSwap(entry, tuple(not_following))

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
            if not session.kind.publishes:  # viewers receive: no media to time out on
                continue
            last = session.last_media_at or session.connected_at
            if now - last > self.config.media_timeout:
                end = SessionEnd(
                    EndReason.MEDIA_TIMEOUT, f"no media for {self.config.media_timeout:g} s"
                )
                await self.close_session(session.id, end)


@dataclass(frozen=True)
class PromptSwap:
    """What a prompt swap did: the recorded entry, and the sessions that do not follow it."""

    entry: VersionedPrompt
    not_following: tuple[str, ...] = ()

    @property
    def version(self) -> int:
        return self.entry.version


def _no_codec_error(kind: SessionKind, summary: OfferSummary, exc: Exception) -> UnprocessableOffer:
    """aiortc refuses an offer sharing no codec with it; say which codecs were offered."""
    if kind is SessionKind.WHEP:
        return UnprocessableOffer(f"no common video codec: this server sends VP8 or H264 ({exc})")
    offered = ", ".join(
        f"{m.kind}: {'/'.join(m.codecs) or 'none'}"
        for m in summary.media
        if m.kind != "application"
    )
    return UnprocessableOffer(
        f"no supported codec in the offer ({offered}); this server receives VP8 or H264 video "
        f"and Opus, PCMU or PCMA audio ({exc})"
    )
