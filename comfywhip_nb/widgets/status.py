"""The server status card and the live session table."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets

from ._common import Refresher, close_tree, esc
from .audio_meters import AudioMeters

__all__ = ["SessionTable", "status_card_html"]

FG = "var(--jp-ui-font-color1, #1f2328)"
MUTED = "var(--jp-ui-font-color2, #656d76)"
BORDER = "var(--jp-border-color2, #d0d7de)"
PANEL = "var(--jp-layout-color2, #f6f8fa)"
MONO = "var(--jp-code-font-family, monospace)"
STATE_COLOURS = {
    "connected": "#1a7f37",
    "connecting": "#9a6700",
    "new": "#9a6700",
    "disconnected": "#bc4c00",
    "failed": "#cf222e",
    "closed": "#6e7781",
}


def state_badge(state: str) -> str:
    colour = STATE_COLOURS.get(state, "#6e7781")
    return (
        f'<span style="display:inline-block;padding:0 6px;border-radius:8px;'
        f'background:{colour};color:#fff;font-size:11px;line-height:16px">{esc(state)}</span>'
    )


def status_card_html(server: Any) -> str:
    """A compact HTML card describing ``server``; never raises (used by ``_repr_html_``)."""
    try:
        running = bool(server.running)
        sessions = dict(server.sessions) if running else {}
    except Exception:  # a server stopping under our feet is shown as stopped
        running, sessions = False, {}
    config = getattr(server, "config", None)
    connected = sum(1 for s in sessions.values() if s.connection_state == "connected")
    if running:
        dot, state = "#1a7f37", f"running at <code>{esc(server.whip_url)}</code>"
    else:
        dot, state = "#6e7781", "stopped"
    rows = [
        (
            "sessions",
            f"{len(sessions)} ({connected} connected)"
            + (f", at most {config.max_sessions}" if config else ""),
        ),
    ]
    version = None
    with contextlib.suppress(Exception):
        version = server.prompt_entry(None).version if running else None
    if version is not None:
        rows.append(("default prompt", f"version {version}" if version else "passthrough"))
    if config is not None:
        rows.append(("token", "required (Bearer)" if config.token else "none"))
        if config.ice_servers:
            rows.append(("ICE servers", f"{len(config.ice_servers)} announced in Link headers"))
    if running:
        rows.append(
            (
                "publish",
                f"<code>comfywhip publish {esc(server.whip_url)}</code>"
                f' or open <a href="{esc(server.url)}/" target="_blank">'
                f"{esc(server.url)}/</a>",
            )
        )
    body = "".join(
        f'<tr><td style="color:{MUTED};padding:1px 12px 1px 0;vertical-align:top">{esc(k)}</td>'
        f'<td style="padding:1px 0">{v}</td></tr>'
        for k, v in rows
    )
    return (
        f'<div class="comfywhip-status" style="border:1px solid {BORDER};border-radius:6px;'
        f'padding:8px 12px;background:{PANEL};color:{FG};font-size:13px;max-width:760px">'
        f'<div style="font-weight:600;margin-bottom:4px">'
        f'<span style="display:inline-block;width:9px;height:9px;border-radius:50%;'
        f'background:{dot};margin-right:6px"></span>WhipServer {state}</div>'
        f'<table style="border-collapse:collapse">{body}</table></div>'
    )


# column title, width in px
COLUMNS: tuple[tuple[str, int], ...] = (
    ("session", 86),
    ("channel", 72),
    ("state", 92),
    ("media", 82),
    ("size", 72),
    ("fps in/out", 78),
    ("latency", 62),
    ("drops", 50),
    ("prompt", 66),
    ("last error", 190),
)


def _cells(values: list[str], header: bool = False) -> str:
    tag = "th" if header else "td"
    weight = "font-weight:600;" if header else ""
    cells = "".join(
        f'<{tag} style="{weight}width:{w}px;max-width:{w}px;overflow:hidden;'
        f'text-overflow:ellipsis;white-space:nowrap;padding:2px 4px;text-align:left">{v}</{tag}>'
        for v, (_, w) in zip(values, COLUMNS, strict=True)
    )
    return (
        f'<table style="table-layout:fixed;border-collapse:collapse;font-size:12px;color:{FG}">'
        f"<tr>{cells}</tr></table>"
    )


def _no_size(info: Any) -> str:
    """Before the first frame: say when the publisher's keyframe is what is missing."""
    wait = "waiting for keyframe"
    if info.video_state == wait:
        return f'<span title="{wait}" style="color:{MUTED}">{wait}</span>'
    return "-"


def session_row_html(info: Any) -> str:
    media = "+".join(k for k, on in (("video", info.has_video), ("audio", info.has_audio)) if on)
    error = info.last_error or ""
    values = [
        f'<code title="{esc(info.id)}" style="font-family:{MONO}">{esc(info.id[:8])}</code>',
        esc(info.channel_id),
        state_badge(info.connection_state),
        esc(media or "-") + ("" if info.kind == "whip" else f" ({esc(info.kind)})"),
        f"{info.width}x{info.height}" if info.width else _no_size(info),
        f"{info.fps_in:.1f} / {info.fps_out:.1f}",
        f"{info.latency_ms:.0f} ms",
        str(info.frames_dropped),
        f'v{info.prompt_version} <span style="color:{MUTED}">{esc(info.prompt_source)}</span>',
        f'<span title="{esc(error)}" style="color:#cf222e">{esc(error)}</span>',
    ]
    return _cells(values)


class _Row:
    """One reusable table row: cells as one HTML widget plus a stop button, and below them
    the audio meters and stats line (shown only for sessions with audio)."""

    def __init__(self, on_stop: Any) -> None:
        self.session_id: str | None = None
        self.cells = widgets.HTML(layout=widgets.Layout(flex="0 0 auto"))
        self.stop = widgets.Button(
            description="Stop",
            icon="stop",
            tooltip="close this session (as a DELETE would)",
            layout=widgets.Layout(width="72px", height="24px"),
        )
        self.stop.on_click(lambda _button: on_stop(self))
        self.audio = AudioMeters()
        self.line = widgets.HBox(
            [self.cells, self.stop], layout=widgets.Layout(align_items="center")
        )
        self.box = widgets.VBox([self.line, self.audio.box], layout=widgets.Layout(display="none"))

    def show(self, info: Any) -> None:
        if self.session_id != info.id:
            self.session_id = info.id
            self.stop.disabled = False
            self.stop.description = "Stop"
        html_value = session_row_html(info)
        if self.cells.value != html_value:
            self.cells.value = html_value
        self.audio.show(info)
        if self.box.layout.display != "flex":
            self.box.layout.display = "flex"

    def hide(self) -> None:
        self.session_id = None
        self.audio.hide()
        if self.box.layout.display != "none":
            self.box.layout.display = "none"


class SessionTable(widgets.VBox):
    """One row per session with a stop button; rows are pooled and reused.

    Rows are never created per refresh: a pool (grown when more sessions appear) keeps the
    number of widget models bounded by the largest number of simultaneous sessions.
    """

    def __init__(self, server: Any, *, autostart: bool = True, prealloc: int = 4) -> None:
        self.server = server
        self.header = widgets.HTML(_cells([esc(c) for c, _ in COLUMNS], header=True))
        self.empty = widgets.HTML()
        self._rows: list[_Row] = [_Row(self._stop_session) for _ in range(prealloc)]
        self.status = widgets.HTML()
        super().__init__(
            [self.header, self.empty, *[r.box for r in self._rows], self.status],
            layout=widgets.Layout(overflow="auto hidden"),
        )
        self.add_class("comfywhip-sessions")
        self._refresher: Refresher | None = None
        self._set_empty({})
        if autostart:
            self._refresher = Refresher(server, [self]).start()

    def _set_empty(self, sessions: Mapping[str, Any]) -> None:
        if sessions:
            text = ""
        else:
            url = esc(self.server.whip_url) if self.server.running else "…"
            text = (
                f'<div style="color:{MUTED};font-size:12px;padding:4px">No sessions yet: '
                f"publish to <code>{url}</code></div>"
            )
        if self.empty.value != text:
            self.empty.value = text
        display = "none" if sessions else "flex"  # an empty HTML widget still takes a line
        if self.empty.layout.display != display:
            self.empty.layout.display = display

    def _stop_session(self, row: _Row) -> None:
        """Button handler (kernel thread): close the session the row shows right now."""
        session_id = row.session_id
        if session_id is None:
            return
        row.stop.disabled = True
        row.stop.description = "…"
        try:
            closed = self.server.close_session(session_id)
            self.status.value = (
                f'<span style="font-size:12px">session {esc(session_id[:8])} '
                f"{'closed' if closed else 'was already gone'}</span>"
            )
        except Exception as exc:
            self.status.value = f'<span style="color:#cf222e">{esc(exc)}</span>'
        if self._refresher is not None:
            self._refresher.wake()

    def tick(self, now: float, sessions: Mapping[str, Any]) -> float:
        ordered = sorted(sessions.values(), key=lambda s: s.created_at)
        while len(self._rows) < len(ordered):  # grow the pool (rare: more sessions than ever)
            row = _Row(self._stop_session)
            self._rows.append(row)
            self.children = (*self.children[:-1], row.box, self.children[-1])
        for row, info in zip(self._rows, ordered, strict=False):
            row.show(info)
        for row in self._rows[len(ordered) :]:
            row.hide()
        self._set_empty(sessions)
        return 0.5

    def on_server_stopped(self) -> None:
        for row in self._rows:
            row.hide()
        self.empty.value = (
            f'<div style="color:{MUTED};font-size:12px;padding:4px">server stopped</div>'
        )
        self.empty.layout.display = "flex"

    @property
    def rows(self) -> list[tuple[str, str]]:
        """(session id, row HTML) of the visible rows, for tests and notebooks."""
        return [(r.session_id, r.cells.value) for r in self._rows if r.session_id is not None]

    def meters(self, session_id: str) -> AudioMeters | None:
        """The audio meters of the row showing ``session_id`` (None when no row shows it)."""
        return next((r.audio for r in self._rows if r.session_id == session_id), None)

    def close(self) -> None:
        refresher = getattr(self, "_refresher", None)  # None also after a failed __init__
        if refresher is not None:
            refresher.stop()
        close_tree(self)
