"""RFC 9725 WHIP endpoint: POST/PATCH/DELETE/OPTIONS/GET on ``/whip`` and ``/whip/{id}``.

Protocol summary (RFC 9725 §4): the publisher POSTs an SDP offer (``application/sdp``); the
endpoint answers ``201 Created`` with the SDP answer, the session URL in ``Location``, an
``ETag`` naming the ICE session, ``Link: rel="ice-server"`` headers and ``Accept-Patch``. Later
trickle candidates arrive as ``PATCH`` with ``application/trickle-ice-sdpfrag`` (204, no body);
a PATCH with a new ufrag/pwd is an ICE restart, which aiortc cannot do, so it gets 422 as
§4.3 requires of a trickle-only server. ``DELETE`` ends the session.

This module runs no torch work. ``middlewares()`` holds the one place where ``WhipError``s
become responses, plus bearer-token checks and CORS.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .core import WhipCore
from .errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    PreconditionRequired,
    TooManyRequests,
    Unauthorized,
    UnprocessableOffer,
    UnsupportedMediaType,
    WhipError,
)
from .ice import format_link_header, parse_sdpfrag
from .ratelimit import RateLimiter

__all__ = ["CORE_KEY", "middlewares", "read_body", "setup_whip_routes"]

logger = logging.getLogger(__name__)

CORE_KEY: web.AppKey[WhipCore] = web.AppKey("whip_core", WhipCore)
SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
EXPOSE = "Location, ETag, Link, Accept-Patch, Accept-Post, Retry-After, WWW-Authenticate"
ALLOW_HEADERS = "Authorization, Content-Type, If-Match"
ENDPOINT_METHODS = ("POST", "OPTIONS", "GET", "HEAD")
RESOURCE_METHODS = ("PATCH", "DELETE", "OPTIONS", "GET", "HEAD")
GENERIC_METHODS = ("GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS")
#: paths a token does not cover: liveness, and the static page (a navigation cannot carry
#: a bearer header; the page holds no data and asks for the token itself)
PUBLIC_PATHS = ("/health", "/", "/index.html", "/favicon.ico")
PUBLIC_PREFIXES = ("/static/",)
#: methods under the per-client rate limit (RFC 9725 §4.8: SHOULD limit session changes)
LIMITED_METHODS = ("POST", "PATCH", "DELETE")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- helpers shared by every endpoint ------------------------------------------------------
def core_of(request: web.Request) -> WhipCore:
    return request.app[CORE_KEY]


def is_preflight(request: web.Request) -> bool:
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )


def require_content_type(request: web.Request, expected: str) -> None:
    if request.content_type.lower() != expected:
        raise UnsupportedMediaType(request.headers.get("Content-Type"), expected)


async def read_body(request: web.Request, limit: int) -> str:
    """Read a UTF-8 body of at most ``limit`` bytes, or raise 413/400."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(length, limit)
    # StreamReader.read(n) returns as soon as *some* bytes are there: a body that arrives in
    # several TCP segments would be cut short. Read until EOF (or one byte over the limit).
    data = bytearray()
    while len(data) <= limit:
        chunk = await request.content.read(limit + 1 - len(data))
        if not chunk:
            break
        data += chunk
    if len(data) > limit:
        raise PayloadTooLarge(None, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request body is not valid UTF-8 (byte {exc.start})") from None


def resource_url(request: web.Request, path: str) -> str:
    """Absolute URL for ``Location`` (RFC 9725 §4.2 allows relative; absolute is clearest)."""
    return str(request.url.origin().with_path(path))


def _error_response(error: WhipError) -> web.Response:
    response = web.json_response(
        error.to_problem(), status=error.status, content_type="application/problem+json"
    )
    response.headers.update(error.headers)
    return response


def add_cors(request: web.Request, response: web.StreamResponse, origins: str) -> None:
    origin = request.headers.get("Origin")
    if origins.strip() == "*":
        response.headers["Access-Control-Allow-Origin"] = "*"
    elif origin and origin in [o.strip() for o in origins.split(",")]:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    response.headers["Access-Control-Expose-Headers"] = EXPOSE


def _authorized(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    # compare_digest on bytes of equal-or-not length is constant-time in the secret
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode("utf-8", "surrogatepass"), token.encode("utf-8")
    )


def middlewares(core: WhipCore) -> list[Any]:
    """Errors -> problem+json, rate limit, bearer auth, CORS; around every handler."""
    limiter = RateLimiter(core.config.rate_limit)

    @web.middleware
    async def whip_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        cfg = core.config
        try:
            # before auth, so that guessing tokens is rate-limited too
            if request.method in LIMITED_METHODS:
                wait = limiter.check(request.remote or "?", time.monotonic())
                if wait is not None:
                    raise TooManyRequests(
                        f"too many {request.method} requests from this address; "
                        f"retry in {wait:.1f} s",
                        retry_after=max(1, math.ceil(wait)),
                    )
            needs_token = cfg.token and not is_preflight(request) and not _is_public(request.path)
            if needs_token and not _authorized(request, cfg.token):
                raise Unauthorized()
            if is_preflight(request) and not request.path.startswith("/whip"):
                response = options_response(request, GENERIC_METHODS)
            else:
                response = await handler(request)
        except WhipError as error:
            if error.status >= 500 or error.status in (401, 429):
                logger.warning("WHIP: %s %s -> %s", request.method, request.path, error)
            else:
                logger.info("WHIP: %s %s -> %s", request.method, request.path, error)
            response = _error_response(error)
        except web.HTTPMethodNotAllowed as exc:
            response = _error_response(
                MethodNotAllowed(request.method, sorted(exc.allowed_methods))
            )
        except web.HTTPRequestEntityTooLarge as exc:
            response = _error_response(PayloadTooLarge(exc.actual_size, exc.max_size))
        except web.HTTPNotFound:
            response = _error_response(NotFound(f"no such resource: {request.path[:200]}"))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise  # a redirect is not an error
            error = WhipError(f"{exc.reason}: {request.path[:200]}")
            error.status = exc.status  # aiohttp's status (e.g. 403 for a static folder)
            response = _error_response(error)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never let a bug take the server down; say what happened
            logger.exception("WHIP: unhandled error on %s %s", request.method, request.path)
            error = WhipError(f"internal error: {type(exc).__name__}")
            response = _error_response(error)
        if not response.prepared:
            add_cors(request, response, cfg.cors_origins)
        return response

    return [whip_middleware]


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def options_response(request: web.Request, methods: tuple[str, ...], **extra: str) -> web.Response:
    """OPTIONS answer; a CORS preflight gets no ice-server links (RFC 9725 §4.6)."""
    response = web.Response(status=200)
    response.headers["Allow"] = ", ".join(methods)
    response.headers.update(extra)
    if is_preflight(request):
        response.headers["Access-Control-Allow-Methods"] = ", ".join(methods)
        response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"
    else:
        for value in format_link_header(core_of(request).config.ice_servers):
            response.headers.add("Link", value)
    return response


async def parse_prompts_param(raw: str | None, warmup: bool = False, engine: Any = None) -> Any:
    """Validate a ``prompts=`` JSON value off the loop; PromptError -> 400 with node errors."""
    if raw is None or raw == "":
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # ValueError: also ints over 4300 digits
        raise BadRequest(f"prompts is not valid JSON: {exc}") from None
    return await validate_prompts(data, warmup, engine)


async def validate_prompts(raw: Any, warmup: bool = False, engine: Any = None) -> Any:
    """Validate decoded prompt JSON (dict or list) in the executor with the server's engine
    (``core.engine``; the built-in one when None); 400 on any problem."""
    from .prompts import PromptError
    from .prompts.engines import BUILTIN

    load = (engine or BUILTIN).load

    # over HTTP a prompt is JSON data, never a file path: a string would make load_prompt
    # read a file on the server
    if not isinstance(raw, (dict, list)):
        raise BadRequest(
            "prompts must be a JSON object (API format) or a list of them, "
            f"got {type(raw).__name__}"
        )
    loop = asyncio.get_running_loop()
    try:
        prompt = await loop.run_in_executor(None, load, raw)
        if warmup:
            from .warmup import warm_up

            await loop.run_in_executor(None, warm_up, prompt)
        return prompt
    except PromptError as exc:
        raise BadRequest(f"invalid prompts: {exc}", extra=exc.to_dict()) from None


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
        request.query.get("prompts"), core.config.warmup, core.engine
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
        links.append(
            f'<{url}>; rel="urn:ietf:params:whip:ext:core:server-sent-events"; '
            'events="state,prompt,error,stats"'
        )
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
    if session is None or session.kind != "whip":
        raise NotFound(f"no WHIP session {session_id[:64]!r}")
    if method == "DELETE":
        await core.close_session(session_id, "DELETE by client")
        return web.Response(status=200)
    if method in ("GET", "HEAD"):
        return web.Response(status=204)
    return await patch_session(request, session)


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
