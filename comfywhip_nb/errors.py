"""Typed WHIP errors that know their HTTP status.

Tree (each leaf sets ``status`` as a class attribute, like aiohttp's web_exceptions)::

    WhipError
     ├── BadRequest               400  malformed SDP / fragment / JSON, bad prompts
     ├── Unauthorized             401  + WWW-Authenticate: Bearer
     ├── NotFound                 404  unknown resource id
     ├── MethodNotAllowed         405  + Allow
     ├── PreconditionFailed       412  stale If-Match (RFC 9725 §4.3.1)
     ├── PayloadTooLarge          413  body over the configured limit
     ├── UnsupportedMediaType     415  wrong Content-Type
     ├── UnprocessableOffer       422  recvonly offer, two video tracks, ICE restart
     ├── PreconditionRequired     428  missing If-Match in strict mode
     ├── TooManyRequests          429  + Retry-After (per-client rate limit)
     └── TooManySessions          503  + Retry-After at max sessions

This module imports no aiohttp: ``http/middleware.py`` turns these into responses in one middleware.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

__all__ = [
    "BadRequest",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "PreconditionRequired",
    "TooManyRequests",
    "TooManySessions",
    "Unauthorized",
    "UnprocessableOffer",
    "UnsupportedMediaType",
    "WhipError",
]


class WhipError(Exception):
    """An error that maps to one HTTP status; ``message`` goes to the client verbatim."""

    status: int = 500

    def __init__(
        self,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})
        #: extra members for the problem+json body (e.g. ``node_errors``)
        self.extra: dict[str, Any] = dict(extra or {})

    @property
    def title(self) -> str:
        return HTTPStatus(self.status).phrase

    def to_problem(self) -> dict[str, Any]:
        """RFC 9457 problem details, which RFC 9725 §4.7 recommends for error bodies."""
        body: dict[str, Any] = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.message,
        }
        body.update(self.extra)
        return body

    def __str__(self) -> str:
        return f"{self.status} {self.title}: {self.message}"


class BadRequest(WhipError):
    status = 400


class Unauthorized(WhipError):
    status = 401

    def __init__(self, message: str = "missing or invalid bearer token") -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="comfywhip"'})


class NotFound(WhipError):
    status = 404


class MethodNotAllowed(WhipError):
    status = 405

    def __init__(self, method: str, allowed: list[str] | tuple[str, ...]) -> None:
        allow = ", ".join(sorted(set(allowed)))
        super().__init__(f"method {method} is not allowed here; allowed: {allow}")
        self.headers["Allow"] = allow


class PreconditionFailed(WhipError):
    status = 412


class PayloadTooLarge(WhipError):
    status = 413

    def __init__(self, size: int | None, max_size: int) -> None:
        got = "unknown size" if size is None else f"{size} bytes"
        super().__init__(f"request body too large ({got}); the limit is {max_size} bytes")
        self.max_size = max_size


class UnsupportedMediaType(WhipError):
    status = 415

    def __init__(self, got: str | None, expected: str) -> None:
        super().__init__(f"Content-Type must be {expected}, got {got or 'none'}")
        self.headers["Accept"] = expected


class UnprocessableOffer(WhipError):
    status = 422


class PreconditionRequired(WhipError):
    status = 428


class TooManyRequests(WhipError):
    status = 429

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(int(retry_after))})


class TooManySessions(WhipError):
    status = 503

    def __init__(self, max_sessions: int, retry_after: int = 5) -> None:
        super().__init__(
            f"the server is at its limit of {max_sessions} sessions; try again later",
            headers={"Retry-After": str(int(retry_after))},
        )
