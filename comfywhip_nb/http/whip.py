"""RFC 9725 WHIP endpoint: POST/PATCH/DELETE/OPTIONS/GET on ``/whip`` and ``/whip/{id}``.

Protocol summary (RFC 9725 §4): the publisher POSTs an SDP offer (``application/sdp``); the
endpoint answers ``201 Created`` with the SDP answer, the session URL in ``Location``, an
``ETag`` naming the ICE session, ``Link: rel="ice-server"`` headers and ``Accept-Patch``. Later
trickle candidates arrive as ``PATCH`` with ``application/trickle-ice-sdpfrag`` (204, no body);
a PATCH with a new ufrag/pwd is an ICE restart, which aiortc cannot do, so it gets 422 as
§4.3 requires of a trickle-only server. ``DELETE`` ends the session.

This module runs no torch work. ``middleware.py`` holds the one place where ``WhipError``s
become responses, plus bearer-token checks and CORS; ``bodies.py`` reads request bodies.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from yarl import URL

from ..errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    PreconditionRequired,
    UnprocessableOffer,
    UnsupportedMediaType,
)
from ..rtc.end_reason import EndReason, SessionEnd
from ..rtc.ice import format_link_header
from ..rtc.lifecycle import SessionKind
from ..rtc.sdp import parse_sdpfrag
from .bodies import read_body, validate_prompts
from .middleware import core_of, is_preflight, options_response

__all__ = [
    "SDP",
    "SDPFRAG",
    "extension_links",
    "normalize_public_url",
    "patch_session",
    "public_base",
    "setup_whip_routes",
]

logger = logging.getLogger(__name__)

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
ENDPOINT_METHODS = ("POST", "OPTIONS", "GET", "HEAD")
RESOURCE_METHODS = ("PATCH", "DELETE", "OPTIONS", "GET", "HEAD")


# -- helpers shared by every endpoint ------------------------------------------------------
def require_content_type(request: web.Request, expected: str) -> None:
    if request.content_type.lower() != expected:
        raise UnsupportedMediaType(request.headers.get("Content-Type"), expected)


def normalize_public_url(value: str | None) -> str | None:
    """Check a ``--public-url`` (``http(s)://host[:port][/prefix]``); no trailing slash."""
    if value is None or value == "":
        return None
    url = URL(value)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"public URL must be http(s)://host[:port][/prefix], got {value!r}")
    if url.query_string or url.fragment:
        raise ValueError(f"public URL takes no query or fragment, got {value!r}")
    return str(url).rstrip("/")


def public_base(request: web.Request) -> str:
    """The base URL clients reach this instance at: ``public_url`` or the request's origin."""
    configured = core_of(request).config.public_url
    return configured if configured else str(request.url.origin())


def resource_url(request: web.Request, path: str) -> str:
    """Absolute URL for ``Location`` (RFC 9725 §4.2 allows relative; absolute is clearest).

    Behind a balancer (RFC 9725 §4.5) the POST may arrive through a shared front door while
    the resource must pin to this instance: ``public_url`` names it.
    """
    return public_base(request) + path


async def parse_prompts_param(
    raw: str | None, warmup: bool = False, *, engine: Any = None, image_dir: str | None = None
) -> Any:
    """Validate a ``prompts=`` JSON value off the loop; PromptError -> 400 with node errors."""
    if raw is None or raw == "":
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # ValueError: also ints over 4300 digits
        raise BadRequest(f"prompts is not valid JSON: {exc}") from None
    return await validate_prompts(data, warmup, engine=engine, image_dir=image_dir)


# -- /whip ---------------------------------------------------------------------------------
async def whip_endpoint(request: web.Request) -> web.StreamResponse:
    method = request.method
    if method == "POST":
        return await post_offer(request)
    if method == "OPTIONS":
        return options_response(request, ENDPOINT_METHODS, **{"Accept-Post": SDP})
    if method in ("GET", "HEAD"):
        return web.Response(status=204)  # RFC 9725 §4.1: the endpoint exists
    raise MethodNotAllowed(method, ENDPOINT_METHODS)


async def post_offer(request: web.Request) -> web.Response:
    core = core_of(request)
    require_content_type(request, SDP)
    sdp = await read_body(request, core.config.max_sdp_bytes)
    channel = request.query.get("channelId") or None
    prompt = await parse_prompts_param(
        request.query.get("prompts"),
        core.config.warmup,
        engine=core.engine,
        image_dir=core.config.prompts_dir,
    )
    session, answer, _ = await core.create_session(sdp, channel_id=channel, session_prompt=prompt)
    response = web.Response(status=201, text=answer, content_type=SDP)
    response.headers["Location"] = resource_url(request, f"/whip/{session.id}")
    response.headers["ETag"] = session.etag
    response.headers["Accept-Patch"] = SDPFRAG
    for value in format_link_header(core.config.ice_servers):
        response.headers.add("Link", value)
    for value in extension_links(request, session.id):
        response.headers.add("Link", value)
    return response


def extension_links(request: web.Request, session_id: str) -> list[str]:
    """WHIP extension links (RFC 9725 §4.9) that this server supports for a session."""
    links: list[str] = []
    if request.app.router.get("whip-events") is not None:
        url = resource_url(request, f"/whip/{session_id}/events")
        # no events="a,b,c" parameter: clients that split Link on commas (OBS) choke on it
        links.append(f'<{url}>; rel="urn:ietf:params:whip:ext:core:server-sent-events"')
    return links


# -- /whip/{id} ----------------------------------------------------------------------------
async def whip_resource(request: web.Request) -> web.StreamResponse:
    core = core_of(request)
    method = request.method
    session_id = request.match_info["id"]
    if method == "OPTIONS":
        if not is_preflight(request) and session_id not in core.sessions:
            raise NotFound(f"no WHIP session {session_id[:64]!r}")
        return options_response(request, RESOURCE_METHODS, **{"Accept-Patch": SDPFRAG})
    if method not in RESOURCE_METHODS:
        raise MethodNotAllowed(method, RESOURCE_METHODS)
    session = core.sessions.get(session_id)
    if session is None or session.kind is not SessionKind.WHIP:
        if method == "DELETE" and answer_late_delete(core, session_id, SessionKind.WHIP):
            return web.Response(status=200)
        raise NotFound(f"no WHIP session {session_id[:64]!r}")
    if method == "DELETE":
        await core.close_session(session_id, SessionEnd(EndReason.DELETE, "DELETE from the client"))
        return web.Response(status=200)
    if method in ("GET", "HEAD"):
        return web.Response(status=204)
    return await patch_session(request, session)


def answer_late_delete(core: Any, session_id: str, kind: str) -> bool:
    """A DELETE for a session that ended moments ago (the peer closed first): 200, not 404."""
    ended = core.ended.get(session_id)
    if ended is None or ended.kind != kind:
        return False
    logger.info(
        "WHIP: %s DELETE after the session ended (%s): 200", session_id[:8], ended.end.reason.value
    )
    return True


async def patch_session(request: web.Request, session: Any) -> web.Response:
    """Trickle ICE (204) or ICE restart (422: aiortc cannot restart ICE)."""
    core = core_of(request)
    require_content_type(request, SDPFRAG)
    check_if_match(request, session.etag, core.config.strict_if_match)
    body = await read_body(request, core.config.max_sdp_bytes)
    if session.closed:  # DELETEd (or timed out) while the body was on its way
        raise NotFound(f"session {session.id[:8]} ended while its PATCH was being read")
    try:
        fragment = parse_sdpfrag(body)
    except ValueError as exc:
        raise BadRequest(f"malformed trickle-ice-sdpfrag: {exc}") from None
    restart = (fragment.ufrag is not None and fragment.ufrag != session.remote_ufrag) or (
        fragment.pwd is not None and fragment.pwd != session.remote_pwd
    )
    if restart:
        raise UnprocessableOffer(
            "ICE restart is not supported by this server (its ICE stack, aiortc, cannot "
            "restart); only trickle ICE is. Start a new session with a fresh POST."
        )
    await add_candidates(session, fragment)
    return web.Response(status=204)


def check_if_match(request: web.Request, etag: str, strict: bool) -> None:
    header = request.headers.get("If-Match")
    if header is None:
        if strict:
            raise PreconditionRequired("PATCH needs an If-Match header with the session's ETag")
        return
    tags = [t.strip() for t in header.split(",")]
    if "*" in tags:
        return
    if etag not in tags:
        raise PreconditionFailed(f"If-Match {header[:80]} does not match the current ETag {etag}")


async def add_candidates(session: Any, fragment: Any) -> None:
    """Add trickled candidates; unusable ones are dropped silently (RFC 9725 §4.3.1)."""
    pc = session.pc
    # with BUNDLE, aiortc only gathers on the first transport: send every candidate there
    mids = [
        t.mid
        for t in pc.getTransceivers()
        if t.mid is not None and not getattr(t, "_bundled", False)
    ]
    added, dropped = 0, fragment.invalid_candidates
    for entry in fragment.candidates:
        candidate = entry.to_rtc()
        if candidate is None:
            dropped += 1
            continue
        candidate.sdpMid = entry.mid if entry.mid in mids else (mids[0] if mids else "0")
        try:
            await pc.addIceCandidate(candidate)
            added += 1
        except Exception:  # an address aioice cannot use: drop it, keep going
            dropped += 1
    if fragment.end_of_candidates:
        await pc.addIceCandidate(None)
    session.log(
        logging.INFO,
        "trickle PATCH: %d candidates added, %d dropped%s",
        added,
        dropped,
        ", end-of-candidates" if fragment.end_of_candidates else "",
    )


def setup_whip_routes(app: web.Application) -> None:
    app.router.add_route("*", "/whip", whip_endpoint, name="whip")
    app.router.add_route("*", "/whip/{id}", whip_resource, name="whip-resource")
