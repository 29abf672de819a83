"""WHEP egress endpoint: watch a channel's processed video (draft-ietf-wish-whep).

The mirror image of ``whip.py``: a viewer POSTs a ``recvonly`` SDP offer (``application/sdp``)
to ``/whep/{channelId}``, or to ``/whep/{sessionId}`` to watch one publisher session
(``/whep`` alone is the default channel), and gets ``201 Created`` with a ``sendonly`` video
answer (plus ``sendonly`` audio when the offer has a receiving audio section: the same
source's audio, processed or passed through, encoded once per feed), an absolute
``Location: /whep/{channelId}/{id}``, an ``ETag``, ``Accept-Patch`` and ``Link:
rel="ice-server"`` headers. ``PATCH`` carries trickle candidates exactly as for WHIP
(same handler: 204, 412 on a stale ``If-Match``, 422 for an ICE restart), ``DELETE`` ends
the viewer (200, or 404).

Viewers are ``Session``s of kind ``whep`` in ``core.sessions``: they count against
``max_sessions``, show in ``/whip-stats``, and ``stop()`` closes them. The core's reaper
removes a viewer not connected within ``connect_timeout``. Closing a viewer stops its
track, which frees the shared encoder when it was the last viewer (see ``egress.py``: frames
are encoded once per frame per codec for all viewers of a channel).
"""

from __future__ import annotations

import logging

from aiohttp import web

from ..errors import MethodNotAllowed, NotFound
from ..pipeline.egress import Egress, ProcessedVideoTrack
from ..rtc.end_reason import EndReason, SessionEnd
from ..rtc.ice import format_link_header
from ..rtc.lifecycle import SessionKind
from ..rtc.offer_checks import check_viewer_offer, wants_audio
from ..rtc.sdp import section_codec, summarise
from ..rtc.sessions import Session
from ..server_state import DEFAULT_CHANNEL
from .bodies import read_body
from .middleware import EGRESS_KEY, core_of, options_response
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
    egress = request.app[EGRESS_KEY]
    require_content_type(request, SDP)
    sdp = await read_body(request, core.config.max_sdp_bytes)
    check_viewer_offer(sdp)  # 400/422 before a session is looked up (the core checks again)
    target = request.match_info.get("channel") or DEFAULT_CHANNEL
    source = core.sessions.get(target)
    if source is not None and not source.kind.publishes:
        source = None  # a viewer id is not something to watch; read it as a channel name
    channel = source.channel_id if source is not None else target

    def add_track(session: Session) -> None:
        if source is not None:
            track = egress.viewer_track(session.pc, session=source)
        else:
            track = egress.viewer_track(session.pc, channel_id=channel)
        session.send(track)  # takes the offered recvonly transceiver: the answer is sendonly
        _close_with_source(egress, session, track)
        if wants_audio(session.offer):  # the same source's audio, encoded once per feed
            if source is not None:
                session.send(egress.audio_track(session.pc, session=source))
            else:
                session.send(egress.audio_track(session.pc, channel_id=channel))
            session.has_audio = True

    session, answer, _ = await core.create_session(
        sdp, channel_id=channel, kind=SessionKind.WHEP, prepare=add_track
    )
    audio = [m.codecs[0].lower() for m in summarise(answer).media if m.kind == "audio" and m.codecs]
    session.log(
        logging.INFO,
        "WHEP viewer of %s %s (codec %s%s)",
        "session" if source is not None else "channel",
        source.id[:8] if source is not None else channel,
        section_codec(answer) or "?",
        f", audio {audio[0]}" if audio and session.has_audio else "",
    )
    response = web.Response(status=201, text=answer, content_type=SDP)
    response.headers["Location"] = resource_url(request, f"/whep/{channel}/{session.id}")
    response.headers["ETag"] = session.etag
    response.headers["Accept-Patch"] = SDPFRAG
    for value in format_link_header(core.config.ice_servers):
        response.headers.add("Link", value)
    return response


def _close_with_source(egress: Egress, session: Session, track: ProcessedVideoTrack) -> None:
    """Remove the viewer when the session it watches ends (ICE failure and close, and a
    viewer that never connects, are handled by the core like for every session)."""
    core, session_id = egress.core, session.id

    def on_ended() -> None:
        if track.source_ended:
            end = SessionEnd(EndReason.SOURCE_ENDED, "the watched session ended")
            core.close_session_soon(session_id, end)

    track.on("ended", on_ended)


async def whep_resource(request: web.Request) -> web.StreamResponse:
    core = core_of(request)
    method = request.method
    session_id = request.match_info["id"]
    session = core.sessions.get(session_id)
    known = session is not None and session.kind is SessionKind.WHEP
    if method == "OPTIONS":
        if not known and "Access-Control-Request-Method" not in request.headers:
            raise NotFound(f"no WHEP session {session_id[:64]!r}")
        return options_response(request, RESOURCE_METHODS, **{"Accept-Patch": SDPFRAG})
    if method not in RESOURCE_METHODS:
        raise MethodNotAllowed(method, RESOURCE_METHODS)
    if not known or session is None:
        if method == "DELETE" and answer_late_delete(core, session_id, SessionKind.WHEP):
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
