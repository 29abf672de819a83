"""Signalling trace: every WHIP/WHEP HTTP exchange, kept per session, for teaching and debugging.

How it fits in: ``trace_middleware(recorder)`` is the outermost aiohttp middleware, so it sees
the final response (after error mapping and CORS). For the paths it traces (``/whip``,
``/whep``, ``/offer`` by default) it records method, path, status, headers and bodies into a
``TraceRecorder``; ``WhipInspector`` (widgets) and notebook 03 read it from the kernel thread.

Bounds (a trace must never grow with uptime): the last ``max_sessions`` sessions are kept,
each with at most ``max_entries`` exchanges; bodies are cut at ``max_body`` characters; a
request body is only captured when its ``Content-Length`` is at most ``max_capture`` bytes
(chunked or larger bodies are left unread for the handler, which enforces its own 413).
``Authorization`` values are redacted.

To read a request body without stealing it from the handler, the middleware reads it and puts
an identical, already-complete stream back in its place (aiohttp has no public tee).

``annotate_sdp`` explains an SDP line by line: media sections, codecs, ICE credentials and
candidates, DTLS fingerprint/setup role and direction. It is pure and needs no server.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import streams, web

__all__ = ["TraceEntry", "TraceRecorder", "annotate_sdp", "trace_middleware"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TRACED_PREFIXES = ("/whip", "/whep", "/offer")
REDACTED_HEADERS = ("authorization", "proxy-authorization", "cookie")
#: key for exchanges that belong to no session (e.g. a refused POST)
UNASSIGNED = ""


@dataclass(frozen=True)
class TraceEntry:
    """One HTTP request and its response, as the server saw them."""

    time: float
    """Wall-clock time the request arrived (``time.time()``)."""
    duration_ms: float
    method: str
    path: str
    """Path and query string as received."""
    status: int
    request_headers: tuple[tuple[str, str], ...]
    request_body: str
    response_headers: tuple[tuple[str, str], ...]
    response_body: str
    session_id: str | None
    """The WHIP/WHEP resource id this exchange belongs to (``None``: none, e.g. a 415)."""
    truncated: tuple[str, ...] = field(default=())
    """Which bodies were cut or not captured: ``"request"``, ``"response"``."""

    def header(self, name: str, response: bool = True) -> str | None:
        """First value of a header (case-insensitive), from the response by default."""
        headers = self.response_headers if response else self.request_headers
        lname = name.lower()
        return next((v for k, v in headers if k.lower() == lname), None)

    @property
    def content_type(self) -> str:
        """The request's media type without parameters (``""`` when absent)."""
        value = self.header("Content-Type", response=False) or ""
        return value.split(";")[0].strip().lower()


class TraceRecorder:
    """Bounded, thread-safe store of ``TraceEntry`` objects keyed by session id.

    Written on the server's event loop, read from any thread; readers get copies.
    ``version`` increases with every recorded exchange so pollers can skip unchanged traces.
    """

    def __init__(
        self,
        max_sessions: int = 20,
        max_entries: int = 50,
        max_body: int = 64 * 1024,
        max_capture: int = 256 * 1024,
        prefixes: tuple[str, ...] = TRACED_PREFIXES,
    ) -> None:
        if min(max_sessions, max_entries, max_body, max_capture) < 1:
            raise ValueError("trace bounds must be positive")
        self.max_sessions = max_sessions
        self.max_entries = max_entries
        self.max_body = max_body
        self.max_capture = max_capture
        self.prefixes = prefixes
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, deque[TraceEntry]] = OrderedDict()
        self.version = 0

    def wants(self, path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in self.prefixes)

    def record(self, entry: TraceEntry) -> None:
        key = entry.session_id or UNASSIGNED
        with self._lock:
            entries = self._sessions.get(key)
            if entries is None:
                entries = self._sessions[key] = deque(maxlen=self.max_entries)
            else:
                self._sessions.move_to_end(key)
            entries.append(entry)
            while len(self._sessions) > self.max_sessions + 1:  # +1: the unassigned bucket
                oldest = next(k for k in self._sessions if k != UNASSIGNED)
                del self._sessions[oldest]
            self.version += 1

    def session_ids(self) -> list[str]:
        """Traced session ids, least recently active first (without the unassigned bucket)."""
        with self._lock:
            return [k for k in self._sessions if k != UNASSIGNED]

    def entries(self, session_id: str | None = None) -> list[TraceEntry]:
        """Exchanges of one session, oldest first; ``None`` = the most recently active one."""
        with self._lock:
            if session_id is None:
                ids = [k for k in self._sessions if k != UNASSIGNED]
                session_id = ids[-1] if ids else None
            if session_id is None:
                return []
            return list(self._sessions.get(session_id, ()))

    def unassigned(self) -> list[TraceEntry]:
        """Exchanges that created no session (refused offers, unknown ids, OPTIONS)."""
        with self._lock:
            return list(self._sessions.get(UNASSIGNED, ()))

    def clear(self) -> None:
        with self._lock:
            self._sessions.clear()
            self.version += 1

    def __len__(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._sessions.values())

    # -- helpers used by the middleware ----------------------------------------------------
    def clip(self, text: str) -> tuple[str, bool]:
        if len(text) <= self.max_body:
            return text, False
        return text[: self.max_body] + f"\n… [{len(text) - self.max_body} more characters]", True


def _headers(items: Any) -> tuple[tuple[str, str], ...]:
    out = []
    for key, value in items:
        if key.lower() in REDACTED_HEADERS:
            scheme, _, secret = value.partition(" ")
            value = f"{scheme} ***" if secret else "***"
        out.append((key, value))
    return tuple(out)


async def _capture_request_body(request: web.Request, recorder: TraceRecorder) -> tuple[str, bool]:
    """Read a small body and hand the handler an identical stream; skip large/chunked ones."""
    if not request.body_exists:
        return "", False
    length = request.content_length
    if length is None or length > recorder.max_capture:
        return f"[body of {length if length is not None else 'unknown'} bytes not captured]", True
    data = await request.content.read()
    # a limit above the body size: feeding it must never ask the (finished) parser to pause
    limit = max(2**16, len(data) + 1)
    replay = streams.StreamReader(request.protocol, limit, loop=asyncio.get_running_loop())
    replay.feed_data(data)
    replay.feed_eof()
    # No public API puts a read body back (see the module docstring): swap the stream and
    # drop the cached ``content`` property; tests/test_widgets.py checks handlers still see it.
    request._payload = replay
    request._cache.pop("content", None)
    text, cut = recorder.clip(data.decode("utf-8", errors="replace"))
    return text, cut


def _response_body(response: web.StreamResponse, recorder: TraceRecorder) -> tuple[str, bool]:
    if not isinstance(response, web.Response):
        return "[streamed body not captured]", True
    body = response.body
    if body is None:
        return "", False
    if isinstance(body, (bytes, bytearray, memoryview)):
        return recorder.clip(bytes(body).decode("utf-8", errors="replace"))
    return f"[{type(body).__name__} body not captured]", True


def _session_of(request: web.Request, response: web.StreamResponse | None) -> str | None:
    """The resource id: from the URL (``/whip/{id}``) or a 201's ``Location``."""
    parts = [p for p in request.path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "whip":
        return parts[1]
    if len(parts) >= 3 and parts[0] == "whep":  # /whep/{channel}/{id}
        return parts[2]
    if response is not None and response.status == 201:
        location = response.headers.get("Location")
        if location:
            return location.rstrip("/").rsplit("/", 1)[-1]
    return None


def trace_middleware(recorder: TraceRecorder) -> Any:
    """An aiohttp middleware recording traced paths into ``recorder``; install it first."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not recorder.wants(request.path):
            return await handler(request)
        started_wall, started = time.time(), time.perf_counter()
        request_body, request_cut = await _capture_request_body(request, recorder)
        response: web.StreamResponse | None = None
        try:
            response = await handler(request)
            return response
        except web.HTTPException as exc:  # raised responses are responses too
            response = exc
            raise
        finally:
            if response is not None:
                body, response_cut = _response_body(response, recorder)
                recorder.record(
                    TraceEntry(
                        time=started_wall,
                        duration_ms=(time.perf_counter() - started) * 1e3,
                        method=request.method,
                        path=request.path_qs,
                        status=response.status,
                        request_headers=_headers(request.headers.items()),
                        request_body=request_body,
                        response_headers=_headers(response.headers.items()),
                        response_body=body,
                        session_id=_session_of(request, response),
                        truncated=tuple(
                            name
                            for name, cut in (("request", request_cut), ("response", response_cut))
                            if cut
                        ),
                    )
                )

    return middleware


# -- SDP annotation --------------------------------------------------------------------------
_DIRECTIONS = {
    "sendonly": "direction: this side only sends media (a WHIP offer is sendonly)",
    "recvonly": "direction: this side only receives (a WHIP answer is recvonly)",
    "sendrecv": "direction: media flows both ways",
    "inactive": "direction: no media flows in this section",
}
_SETUP = {
    "actpass": "DTLS role: either; the answerer chooses (offers must say actpass)",
    "active": "DTLS role: this side starts the DTLS handshake (client)",
    "passive": "DTLS role: this side waits for the DTLS handshake (server)",
    "holdconn": "DTLS role: hold the connection (not used by WebRTC)",
}
_SESSION_LINES = {
    "v": "protocol version (always 0)",
    "s": "session name (unused by WebRTC)",
    "t": "timing: 0 0 means a permanent session",
    "c": "connection address (placeholder in WebRTC; ICE candidates carry the real ones)",
}
_ATTRIBUTES = {
    "rtcp-mux": "RTP and RTCP share one port (required by WebRTC)",
    "rtcp-rsize": "reduced-size RTCP allowed (RFC 5506)",
    "end-of-candidates": "end of candidates: no more ICE candidates will follow",
    "ice-lite": "this side implements ICE lite (answers checks, never starts them)",
    "extmap-allow-mixed": "one- and two-byte RTP header extensions may be mixed",
    "msid-semantic": "media stream id semantics (WebRTC MediaStream)",
    "ssrc-group": "SSRCs that belong together (FID: a stream and its retransmissions)",
    "sctp-port": "SCTP port for data channels",
    "max-message-size": "largest data-channel message accepted",
}


def _candidate_note(value: str) -> str:
    parts = value.split()
    if len(parts) < 8:
        return "ICE candidate (malformed)"
    foundation, component, transport, priority, address, port = parts[:6]
    kind = parts[7] if parts[6] == "typ" else "?"
    kinds = {
        "host": "a local interface address",
        "srflx": "public address seen by a STUN server",
        "prflx": "address learned during connectivity checks",
        "relay": "a TURN relay address",
    }
    comp = {"1": "RTP", "2": "RTCP"}.get(component, f"component {component}")
    note = (
        f"ICE candidate: {transport.upper()} {address}:{port} ({kind}: "
        f"{kinds.get(kind, 'unknown type')}), {comp}, priority {priority}"
    )
    if ".local" in address:
        note += "; an mDNS name hiding the real IP"
    if "tcptype" in parts:
        note += f", TCP {parts[parts.index('tcptype') + 1]}"
    return note + f", foundation {foundation}"


def _media_note(value: str, codecs: dict[str, str]) -> str:
    parts = value.split()
    if len(parts) < 4:
        return "media section (malformed)"
    kind, port, proto, formats = parts[0], parts[1], parts[2], parts[3:]
    names = [codecs.get(pt, pt) for pt in formats]
    if port == "0":
        return f"{kind} section REJECTED (port 0): this media will not flow"
    listed = (
        ", ".join(f"{pt}={name}" for pt, name in zip(formats, names, strict=True)) if codecs else ""
    )
    what = f"new {kind} media section over {proto}"
    if proto.startswith("UDP/DTLS/SCTP"):
        return f"new data-channel section over {proto}"
    return what + (
        f"; payload types {listed}" if listed else f"; payload types {' '.join(formats)}"
    )


def _fmtp_note(value: str, codecs: dict[str, str]) -> str:
    pt, _, params = value.partition(" ")
    codec = codecs.get(pt, f"payload type {pt}")
    notes = []
    for item in params.split(";"):
        key, _, val = item.strip().partition("=")
        if key == "apt":
            notes.append(f"retransmits {codecs.get(val, 'payload type ' + val)}")
        elif key == "profile-level-id":
            notes.append(f"H.264 profile/level {val}")
        elif key == "packetization-mode":
            notes.append(f"packetization mode {val}")
        elif key == "useinbandfec" and val == "1":
            notes.append("in-band FEC")
        elif key == "minptime":
            notes.append(f"min packet time {val} ms")
    detail = ", ".join(notes)
    return f"format parameters of {codec}" + (f": {detail}" if detail else "")


def _attribute_note(name: str, value: str, codecs: dict[str, str]) -> str:
    if name in _DIRECTIONS:
        return _DIRECTIONS[name]
    if name in _ATTRIBUTES:
        return _ATTRIBUTES[name]
    if name == "rtpmap":
        pt, _, codec = value.partition(" ")
        return f"payload type {pt} is {codec}"
    if name == "fmtp":
        return _fmtp_note(value, codecs)
    if name == "rtcp-fb":
        pt, _, fb = value.partition(" ")
        feedback = {
            "nack": "retransmission requests",
            "nack pli": "picture loss indication (ask for a key frame)",
            "ccm fir": "full intra request (ask for a key frame)",
            "goog-remb": "receiver bandwidth estimate",
            "transport-cc": "transport-wide congestion control",
        }
        target = "all codecs" if pt == "*" else codecs.get(pt, f"payload type {pt}")
        return f"RTCP feedback for {target}: {feedback.get(fb, fb)}"
    if name == "ice-ufrag":
        return "ICE username fragment: identifies this side's ICE session (a new one = ICE restart)"
    if name == "ice-pwd":
        return "ICE password: authenticates connectivity checks (STUN message integrity)"
    if name == "ice-options":
        return "ICE options" + (
            ": trickle, candidates may arrive later" if "trickle" in value else ""
        )
    if name == "candidate":
        return _candidate_note(value)
    if name == "fingerprint":
        algo = value.split(" ", 1)[0]
        return f"DTLS certificate fingerprint ({algo}): the peer's certificate must match it"
    if name == "setup":
        return _SETUP.get(value, f"DTLS setup role {value}")
    if name == "mid":
        return f"media id {value}: names this section in BUNDLE and in trickle PATCHes"
    if name == "group":
        return f"{value.split(' ', 1)[0]} group: these media sections share one transport"
    if name == "msid":
        return "media stream and track ids of the sender"
    if name == "ssrc":
        ssrc, _, rest = value.partition(" ")
        return f"RTP stream {ssrc}: {rest or 'declared'}"
    if name == "extmap":
        ident, _, uri = value.partition(" ")
        return f"RTP header extension {ident}: {uri.rsplit('/', 1)[-1].split(':')[-1]}"
    if name == "rtcp":
        return "RTCP address (unused with rtcp-mux)"
    return ""


def annotate_sdp(sdp: str) -> list[tuple[str, str]]:
    """Explain each line of an SDP (offer, answer or trickle fragment): ``[(line, note)]``.

    Unknown lines get an empty note; nothing raises, so hostile input is safe to show.
    """
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line.strip()]
    # first pass: payload type -> codec name for each media section
    section_codecs: list[dict[str, str]] = [{}]
    for line in lines:
        if line.startswith("m="):
            section_codecs.append({})
        elif line.startswith("a=rtpmap:"):
            pt, _, codec = line[len("a=rtpmap:") :].partition(" ")
            section_codecs[-1][pt] = codec.split("/")[0]
    out: list[tuple[str, str]] = []
    section = 0
    for line in lines:
        key, _, value = line.partition("=")
        note = ""
        if key == "m":
            section += 1
            note = _media_note(value, section_codecs[section])
        elif key == "o":
            fields = value.split()
            note = "origin: session id and version" + (
                f" (version {fields[2]})" if len(fields) > 2 else ""
            )
        elif key in _SESSION_LINES:
            note = _SESSION_LINES[key]
        elif key == "a":
            name, _, attr = value.partition(":")
            note = _attribute_note(name, attr, section_codecs[section])
        out.append((line, note))
    return out
