"""WhipInspector: the signalling trace of a session, explained (for learning WHIP).

Reads ``server.trace`` (a ``comfywhip_nb.http.trace.TraceRecorder``) and renders every HTTP
exchange: method, path, status, headers with what each WHIP header means, and bodies, with
SDP offers/answers and trickle fragments annotated line by line (``annotate_sdp``).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import ipywidgets as widgets

from ..http.trace import TraceEntry, TraceRecorder, annotate_sdp
from ._common import Refresher, close_tree, esc

__all__ = ["WhipInspector", "entry_html", "sdp_html", "trace_html"]

NEWEST = "newest"
UNASSIGNED = "(none)"
MONO = "font-family:var(--jp-code-font-family,monospace);font-size:11.5px"
MUTED = "color:var(--jp-ui-font-color2,#656d76)"

HEADER_NOTES = {
    "location": "the session URL: PATCH (trickle ICE) and DELETE go here (RFC 9725 §4.2)",
    "etag": "names the ICE session; a PATCH sends it back in If-Match (RFC 9725 §4.3.1)",
    "link": "STUN/TURN servers (rel=ice-server, RFC 9725 §4.6) or an extension (§4.9)",
    "accept-patch": "PATCH accepts trickle ICE fragments (RFC 9725 §4.3.1)",
    "accept-post": "this endpoint accepts SDP offers by POST",
    "if-match": "the ETag of the ICE session this PATCH is about; * matches any",
    "authorization": "bearer token (RFC 9725 §4.4); redacted in this trace",
    "www-authenticate": "the endpoint wants a bearer token",
    "retry-after": "seconds to wait before trying again",
    "allow": "methods this URL supports",
}
CONTENT_NOTES = {
    "application/sdp": "a complete SDP offer or answer",
    "application/trickle-ice-sdpfrag": "an SDP fragment with ICE candidates (RFC 8840)",
    "application/problem+json": "an error explained as JSON (RFC 9457)",
}
STATUS_NOTES = {
    201: "session created: the body is the SDP answer",
    204: "done, no body (trickled candidates were applied)",
    200: "OK",
    400: "malformed request",
    401: "a bearer token is required",
    404: "no such session",
    405: "method not allowed here",
    412: "If-Match does not name the current ICE session",
    413: "body too large",
    415: "wrong Content-Type",
    422: "understood but refused (e.g. recvonly offer, ICE restart)",
    428: "If-Match is required",
    503: "too many sessions; retry later",
}
METHOD_NOTES = {
    "POST": "the publisher offers its media (SDP offer)",
    "PATCH": "trickle ICE: candidates found after the offer (or an ICE restart)",
    "DELETE": "the publisher ends the session",
    "OPTIONS": "CORS preflight or ICE-server discovery",
    "GET": "does this resource exist?",
    "HEAD": "does this resource exist?",
}


TD = "text-align:left;vertical-align:top"  # outputs right-align cells unless told otherwise


def sdp_html(sdp: str) -> str:
    """An SDP as a two-column table: each line and what it means."""
    line_style = f"{TD};{MONO};white-space:pre-wrap;word-break:break-all;padding:0 8px 0 0"
    rows = "".join(
        f'<tr><td style="{line_style};max-width:420px">{esc(line)}</td>'
        f'<td style="{TD};{MUTED};font-size:11.5px">{esc(note)}</td></tr>'
        for line, note in annotate_sdp(sdp)
    )
    return (
        '<table class="comfywhip-sdp" style="border-collapse:collapse;line-height:1.35">'
        f"{rows}</table>"
    )


def _header_note(name: str, value: str) -> str:
    return HEADER_NOTES.get(name.lower(), CONTENT_NOTES.get(value.split(";")[0].strip(), ""))


def _headers_html(headers: tuple[tuple[str, str], ...]) -> str:
    rows = "".join(
        f'<tr><td style="{TD};{MONO};padding:0 6px 0 0"><b>{esc(k)}</b></td>'
        f'<td style="{TD};{MONO};word-break:break-all">{esc(v)}</td>'
        f'<td style="{TD};{MUTED};font-size:11.5px;padding-left:8px">'
        f"{esc(_header_note(k, v))}</td></tr>"
        for k, v in headers
    )
    return f'<table style="border-collapse:collapse;line-height:1.35">{rows}</table>'


def _body_html(body: str, content_type: str) -> str:
    if not body:
        return f'<div style="{MUTED};font-size:12px">(no body)</div>'
    if content_type in ("application/sdp", "application/trickle-ice-sdpfrag") or body.startswith(
        "v=0"
    ):
        return sdp_html(body)
    if "json" in content_type:
        with contextlib.suppress(ValueError):
            body = json.dumps(json.loads(body), indent=2)
    return f'<pre style="{MONO};margin:0;white-space:pre-wrap">{esc(body)}</pre>'


def _type_of(headers: tuple[tuple[str, str], ...]) -> str:
    value = next((v for k, v in headers if k.lower() == "content-type"), "")
    return value.split(";")[0].strip().lower()


def entry_html(entry: TraceEntry, start: float | None = None, open_: bool = True) -> str:
    """One exchange: a collapsible block with request and response."""
    try:
        phrase = HTTPStatus(entry.status).phrase
    except ValueError:
        phrase = ""
    colour = "#1a7f37" if entry.status < 300 else "#9a6700" if entry.status < 400 else "#cf222e"
    offset = f"+{entry.time - start:.2f} s · " if start is not None else ""
    note = STATUS_NOTES.get(entry.status, "")
    method_note = METHOD_NOTES.get(entry.method, "")
    summary = (
        f'<summary style="cursor:pointer"><code style="{MONO}"><b>{esc(entry.method)}</b> '
        f'{esc(entry.path)}</code> → <b style="color:{colour}">{entry.status} {esc(phrase)}</b> '
        f'<span style="{MUTED};font-size:12px">{offset}{entry.duration_ms:.0f} ms'
        f"{' · ' + esc(note) if note else ''}</span></summary>"
    )
    cut = f'<div style="{MUTED};font-size:11px">truncated: {", ".join(entry.truncated)}</div>'
    return (
        f'<details {"open" if open_ else ""} style="margin:4px 0;padding:4px 8px;'
        f'border-left:3px solid {colour}">{summary}'
        f'<div style="font-size:12px;margin-top:4px"><b>request</b> '
        f'<span style="{MUTED}">{esc(method_note)}</span></div>'
        f"{_headers_html(entry.request_headers)}"
        f"{_body_html(entry.request_body, _type_of(entry.request_headers))}"
        f'<div style="font-size:12px;margin-top:6px"><b>response</b></div>'
        f"{_headers_html(entry.response_headers)}"
        f"{_body_html(entry.response_body, _type_of(entry.response_headers))}"
        f"{cut if entry.truncated else ''}</details>"
    )


def trace_html(entries: list[TraceEntry]) -> str:
    """Every exchange of a trace, oldest first, with times relative to the first."""
    if not entries:
        return f'<div style="{MUTED};font-size:12px">no requests recorded yet</div>'
    start = entries[0].time
    blocks = "".join(entry_html(e, start, open_=len(entries) <= 4) for e in entries)
    return f'<div style="line-height:1.35">{blocks}</div>'


class WhipInspector(widgets.VBox):
    """The signalling trace of one session (default: the newest), refreshed as it grows."""

    def __init__(
        self,
        server: Any,
        recorder: TraceRecorder | None = None,
        *,
        autostart: bool = True,
    ) -> None:
        self.server = server
        self.recorder = recorder if recorder is not None else getattr(server, "trace", None)
        self._refresher: Refresher | None = None
        self.chooser = widgets.Dropdown(
            options=[("newest session", NEWEST)],
            value=NEWEST,
            description="trace of",
            layout=widgets.Layout(width="340px"),
            style={"description_width": "56px"},
        )
        self.body = widgets.HTML(layout=widgets.Layout(max_height="520px", overflow="hidden auto"))
        super().__init__([self.chooser, self.body])
        self.add_class("comfywhip-inspector")
        self.chooser.observe(lambda _c: self._wake(), names="value")
        self._rendered: tuple[Any, ...] | None = None
        if self.recorder is None:
            self.body.value = (
                f'<div style="{MUTED};font-size:12px">This server records no signalling '
                "trace (<code>server.trace</code> is missing).</div>"
            )
        if autostart:
            self._refresher = Refresher(server, [self]).start()

    def _wake(self) -> None:
        if self._refresher is not None:
            self._refresher.wake()

    def _options(self) -> list[tuple[str, str]]:
        assert self.recorder is not None
        options = [("newest session", NEWEST)]
        for sid in reversed(self.recorder.session_ids()):
            entries = self.recorder.entries(sid)
            when = time.strftime("%H:%M:%S", time.localtime(entries[0].time)) if entries else ""
            options.append((f"{sid[:8]} · {len(entries)} requests · {when}", sid))
        unassigned = self.recorder.unassigned()
        if unassigned:
            options.append((f"requests without a session ({len(unassigned)})", UNASSIGNED))
        return options

    def tick(self, now: float, sessions: Mapping[str, Any]) -> float:
        if self.recorder is None:
            return 5.0
        key = (self.recorder.version, self.chooser.value)
        if key == self._rendered:
            return 1.0
        options = self._options()
        if list(self.chooser.options) != options:
            current = self.chooser.value
            with self.chooser.hold_sync():
                self.chooser.options = options
                values = [v for _, v in options]
                self.chooser.value = current if current in values else NEWEST
        choice = self.chooser.value
        if choice == UNASSIGNED:
            entries = self.recorder.unassigned()
        else:
            entries = self.recorder.entries(None if choice == NEWEST else choice)
        self.body.value = trace_html(entries)
        self._rendered = (self.recorder.version, choice)
        return 1.0

    def on_server_stopped(self) -> None:
        pass

    def close(self) -> None:
        refresher = getattr(self, "_refresher", None)  # None also after a failed __init__
        if refresher is not None:
            refresher.stop()
        close_tree(self)
