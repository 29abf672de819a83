"""What wraps every HTTP handler: errors as problem+json, rate limit, bearer auth, CORS.

``middlewares()`` holds the one place where ``WhipError``s become responses (RFC 9457
problem details), plus bearer-token checks (RFC 6750), the per-client rate limit on session
changes (RFC 9725 §4.8) and CORS headers. ``options_response`` answers OPTIONS for every
endpoint; ``CORE_KEY`` / ``core_of`` give handlers the server's state.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..errors import (
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
    WhipError,
)
from ..rtc.ice import format_link_header
from ..server_state import WhipCore
from .ratelimit import RateLimiter

__all__ = ["CORE_KEY", "add_cors", "core_of", "middlewares", "options_response"]

logger = logging.getLogger(__name__)

CORE_KEY: web.AppKey[WhipCore] = web.AppKey("whip_core", WhipCore)
EXPOSE = "Location, ETag, Link, Accept-Patch, Accept-Post, Retry-After, WWW-Authenticate"
ALLOW_HEADERS = "Authorization, Content-Type, If-Match"
GENERIC_METHODS = ("GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS")
#: paths a token does not cover: liveness, and the static page (a navigation cannot carry
#: a bearer header; the page holds no data and asks for the token itself)
PUBLIC_PATHS = ("/health", "/", "/index.html", "/favicon.ico")
PUBLIC_PREFIXES = ("/static/",)
#: methods under the per-client rate limit (RFC 9725 §4.8: SHOULD limit session changes)
LIMITED_METHODS = ("POST", "PATCH", "DELETE")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def core_of(request: web.Request) -> WhipCore:
    return request.app[CORE_KEY]


def is_preflight(request: web.Request) -> bool:
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )


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
