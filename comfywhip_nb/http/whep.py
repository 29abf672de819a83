"""WHEP egress endpoint: watch a channel's processed video (draft-ietf-wish-whep).

The mirror image of ``whip.py``: a viewer POSTs a ``recvonly`` SDP offer (``application/sdp``)
to ``/whep/{channelId}``, or to ``/whep/{sessionId}`` to watch one publisher session
(``/whep`` alone is the default channel), and gets ``201 Created`` with a ``sendonly`` video
answer, an absolute ``Location: /whep/{channelId}/{id}``, an ``ETag``, ``Accept-Patch`` and
``Link: rel="ice-server"`` headers. ``PATCH`` carries trickle candidates exactly as for WHIP
(same handler: 204, 412 on a stale ``If-Match``, 422 for an ICE restart), ``DELETE`` ends
the viewer (200, or 404).

Viewers are ``Session``s of kind ``whep`` in ``core.sessions``: they count against
``max_sessions``, show in ``/whip-stats``, and ``stop()`` closes them. The core's reaper
removes a viewer not connected within ``connect_timeout``. Closing a viewer stops its
track, which frees the shared encoder when it was the last viewer (see ``egress.py``: frames
are encoded once per frame per codec for all viewers of a channel).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import OperationError
from aiortc.sdp import SessionDescription

from ..errors import BadRequest, MethodNotAllowed, NotFound, TooManySessions, UnprocessableOffer
from ..pipeline.egress import PUBLISHER_KINDS, ProcessedVideoTrack, viewer_track
from ..rtc.end_reason import EndReason, SessionEnd, end_from_peer
from ..rtc.ice import format_link_header
from ..rtc.sessions import Session
from ..server_state import DEFAULT_CHANNEL, WhipCore
from .bodies import read_body
from .middleware import core_of, options_response
from .whip import (
    SDP,
    SDPFRAG,
    answer_late_delete,
    patch_session,
    require_content_type,
    resource_url,
)

__all__ = ["check_viewer_offer", "setup_routes"]

logger = logging.getLogger(__name__)

ENDPOINT_METHODS = ("POST", "OPTIONS", "GET", "HEAD")
RESOURCE_METHODS = ("PATCH", "DELETE", "OPTIONS", "GET", "HEAD")
_CLOSING: set[asyncio.Future[bool]] = set()


def check_viewer_offer(sdp: str) -> tuple[str | None, str | None]:
    """ICE ufrag/pwd of a usable viewer offer, or 400 (not SDP) / 422 (nothing to receive)."""
    if not sdp.strip() or not sdp.lstrip().startswith("v="):
        raise BadRequest("empty or malformed SDP offer: it must start with 'v=0'")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser asserts on hostile input
        raise BadRequest(f"malformed SDP offer: {type(exc).__name__}: {exc}") from None
    mids = {m.rtp.muxId for m in parsed.media}
    for group in parsed.group:  # e.g. an m= line lost in transit: aiortc would trip on it
        missing = [item for item in group.items if item not in mids]
        if missing:
            raise BadRequest(
                f"malformed SDP offer: {group.semantic} names mid {missing[0]!r}, "
                "which no media section has"
            )
    video = [m for m in parsed.media if m.kind == "video"]
    if len(video) != 1:
        raise UnprocessableOffer(
            f"a WHEP offer needs exactly one video section, got {len(video)}; this server "
            "sends processed video only"
        )
    if video[0].direction not in ("recvonly", "sendrecv", None):
        raise UnprocessableOffer(
            f"the video section is {video[0].direction}; a WHEP viewer offers recvonly"
        )
    ice = video[0].ice
    return (ice.usernameFragment, ice.password) if ice is not None else (None, None)


async def whep_endpoint(request: web.Request) -> web.StreamResponse:
    method = request.method
    if method == "POST":
        return await post_viewer(request)
    if method == "OPTIONS":
        return options_response(request, ENDPOINT_METHODS, **{"Accept-Post": SDP})
    if method in ("GET", "HEAD"):
        return web.Response(status=204)
    raise MethodNotAllowed(method, ENDPOINT_METHODS)


async def post_viewer(request: web.Request) -> web.Response:
    core = core_of(request)
    require_content_type(request, SDP)
    sdp = await read_body(request, core.config.max_sdp_bytes)
    ufrag, pwd = check_viewer_offer(sdp)
    if len(core.sessions) >= core.config.max_sessions:
        raise TooManySessions(core.config.max_sessions)
    target = request.match_info.get("channel") or DEFAULT_CHANNEL
    source = core.sessions.get(target)
    if source is not None and source.kind not in PUBLISHER_KINDS:
        source = None  # a viewer id is not something to watch; read it as a channel name
    channel = source.channel_id if source is not None else target

    pc = core.new_peer()
    session = Session(
        pc,
        channel_id=channel,
        kind="whep",
        remote_ufrag=ufrag,
        remote_pwd=pwd,
        frame_timeout=core.config.frame_timeout,
    )
    session.has_video = True
    track: ProcessedVideoTrack | None = None
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        if source is not None:
            track = viewer_track(core, pc, session=source)
        else:
            track = viewer_track(core, pc, channel_id=channel)
        pc.addTrack(track)  # takes the offered recvonly transceiver: the answer is sendonly
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:
        if track is not None:
            track.stop()
        with contextlib.suppress(Exception):  # aiortc's close() can trip on a half-set-up pc
            await pc.close()
        if isinstance(exc, OperationError):
            raise UnprocessableOffer(
                f"no common video codec: this server sends VP8 or H264 ({exc})"
            ) from exc
        raise BadRequest(f"could not process the SDP offer: {type(exc).__name__}: {exc}") from exc

    core.sessions.add(session)
    _watch(core, session, track)
    session.log(
        logging.INFO,
        "WHEP viewer of %s %s (codec %s)",
        "session" if source is not None else "channel",
        source.id[:8] if source is not None else channel,
        _answer_codec(pc),
    )
    response = web.Response(status=201, text=pc.localDescription.sdp, content_type=SDP)
    response.headers["Location"] = resource_url(request, f"/whep/{channel}/{session.id}")
    response.headers["ETag"] = session.etag
    response.headers["Accept-Patch"] = SDPFRAG
    for value in format_link_header(core.config.ice_servers):
        response.headers.add("Link", value)
    return response


def _answer_codec(pc: RTCPeerConnection) -> str:
    for line in pc.localDescription.sdp.splitlines():
        if line.startswith("a=rtpmap:"):
            return line.split()[1].split("/")[0]
    return "?"


def _watch(core: WhipCore, session: Session, track: ProcessedVideoTrack) -> None:
    """Remove the viewer when ICE fails or closes, or when the session it watches ends (one
    that never connects is removed by the core's reaper after ``connect_timeout``)."""
    pc = session.pc

    def close(end: SessionEnd) -> None:
        if not session.closed:
            task = asyncio.ensure_future(core.close_session(session.id, end))
            _CLOSING.add(task)  # keep a reference until done (asyncio holds only weak ones)
            task.add_done_callback(_CLOSING.discard)

    @pc.on("connectionstatechange")
    def _on_state() -> None:
        state = pc.connectionState
        session.log(logging.INFO, "connection state is: %s", state)
        if state == "connected" and session.connected_at is None:
            session.connected_at = time.monotonic()
        if state in ("failed", "closed"):
            close(end_from_peer(pc, was_connected=session.connected_at is not None))

    session.add_close_callback(lambda _s: track.stop())
    source_ended = SessionEnd(EndReason.SOURCE_ENDED, "the watched session ended")
    track.on("ended", lambda: close(source_ended) if track.source_ended else None)


async def whep_resource(request: web.Request) -> web.StreamResponse:
    core = core_of(request)
    method = request.method
    session_id = request.match_info["id"]
    session = core.sessions.get(session_id)
    known = session is not None and session.kind == "whep"
    if method == "OPTIONS":
        if not known and "Access-Control-Request-Method" not in request.headers:
            raise NotFound(f"no WHEP session {session_id[:64]!r}")
        return options_response(request, RESOURCE_METHODS, **{"Accept-Patch": SDPFRAG})
    if method not in RESOURCE_METHODS:
        raise MethodNotAllowed(method, RESOURCE_METHODS)
    if not known or session is None:
        if method == "DELETE" and answer_late_delete(core, session_id, "whep"):
            return web.Response(status=200)
        raise NotFound(f"no WHEP session {session_id[:64]!r}")
    if method == "DELETE":
        await core.close_session(session_id, SessionEnd(EndReason.DELETE, "DELETE from the viewer"))
        return web.Response(status=200)
    if method in ("GET", "HEAD"):
        return web.Response(status=204)
    return await patch_session(request, session)


def setup_routes(app: web.Application) -> None:
    """Called by ``WhipServer`` (``server._install_extensions``)."""
    app.router.add_route("*", "/whep", whep_endpoint, name="whep")
    app.router.add_route("*", "/whep/{channel}", whep_endpoint, name="whep-channel")
    app.router.add_route("*", "/whep/{channel}/{id}", whep_resource, name="whep-resource")
