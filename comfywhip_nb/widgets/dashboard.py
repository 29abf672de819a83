"""Dashboard: status card, session table (with audio meters), live video, stats plot, prompt
editor, audio player, inspector.

The live video is a ``LiveView``: the browser plays the processed video over WHEP
(``PlayerWidget``), with the kernel's JPEG preview as the fallback where the browser cannot
reach the server. One ``Refresher`` thread gathers data for every part and hands the widget
changes to the kernel's own thread. It stops on ``close()`` or when the server stops.
A server keeps at most one live dashboard by default: re-running ``server.dashboard()``
closes the previous one, whose refresher would otherwise keep running for an output that
is gone (ipywidgets never tells the kernel that an output was cleared).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets

from ._common import Refresher, close_tree, esc
from .audio_player import AudioPlayer
from .inspector import WhipInspector
from .player import LiveView
from .plot import StatsPlot
from .prompt_editor import PromptEditor
from .status import SessionTable, status_card_html

__all__ = ["Dashboard"]

_LIVE: weakref.WeakKeyDictionary[Any, weakref.WeakSet[Dashboard]] = weakref.WeakKeyDictionary()
_LIVE_LOCK = threading.Lock()


class _StatusCard:
    """The card at the top, refreshed about once a second."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.html = widgets.HTML(status_card_html(server))

    def tick(self, now: float, sessions: Mapping[str, Any]) -> float:
        value = status_card_html(self.server)
        if self.html.value != value:
            self.html.value = value
        return 1.0

    def on_server_stopped(self) -> None:
        self.html.value = status_card_html(self.server)


class Dashboard(widgets.VBox):
    """Everything about a running ``WhipServer`` in one widget: ``server.dashboard()``.

    Sessions with audio show input/output level meters and audio stats under their row; the
    "Audio player" section plays the last seconds of processed audio.

    ``mode``: ``"auto"`` (WHEP player, JPEG preview as fallback), ``"whep"`` or ``"jpeg"``;
    ``url``: the server's address as the browser sees it (default ``server.url``);
    ``target``: the channel or session the player shows (default: the default channel);
    ``max_fps`` caps the JPEG preview; ``show_input`` shows the input beside the processed
    video; ``replace=False`` keeps earlier dashboards of the same server alive.
    """

    def __init__(
        self,
        server: Any,
        *,
        mode: str = "auto",
        url: str | None = None,
        target: str = "",
        max_fps: float = 15.0,
        show_input: bool = False,
        max_in_flight: int = 2,
        replace: bool = True,
    ) -> None:
        self.server = server
        if replace:
            with _LIVE_LOCK:
                previous = list(_LIVE.get(server, ()))
            for old in previous:
                old.close()
        self.card = _StatusCard(server)
        self.sessions_table = SessionTable(server, autostart=False)
        self.live = LiveView(
            server,
            mode=mode,
            url=url,
            target=target,
            max_fps=max_fps,
            show_input=show_input,
            max_in_flight=max_in_flight,
            autostart=False,
        )
        self.player = self.live.player
        self.preview = self.live.preview
        self.plot = StatsPlot(server, autostart=False)
        self.editor = PromptEditor(server, autostart=False)
        self.inspector = WhipInspector(server, autostart=False)
        self.audio = AudioPlayer(server, autostart=False)
        self.errors = widgets.HTML()
        # collapsed by default: the live parts stay on one screen; one click opens any
        self.sections = widgets.Accordion(
            [self.editor, self.audio, self.inspector],
            titles=("Prompt editor", "Audio player", "WHIP inspector"),
        )
        self.sections.selected_index = None
        super().__init__(
            [
                self.card.html,
                self.sessions_table,
                widgets.HBox(
                    [self.live, self.plot],
                    layout=widgets.Layout(flex_flow="row wrap", align_items="flex-start"),
                ),
                self.sections,
                self.errors,
            ]
        )
        self.add_class("comfywhip-dashboard")
        self.live.layout.flex = "1 1 480px"
        self.plot.layout.flex = "0 1 450px"
        components = [
            self.card,
            self.sessions_table,
            self.live,
            self.plot,
            self.editor,
            self.audio,
            self.inspector,
        ]
        self.refresher = Refresher(server, components, on_error=self._show_error)
        parts = (
            self.sessions_table,
            self.preview,
            self.plot,
            self.editor,
            self.audio,
            self.inspector,
        )
        for part in parts:
            part._refresher = self.refresher  # their wake() calls reach the shared thread
        with _LIVE_LOCK:
            _LIVE.setdefault(server, weakref.WeakSet()).add(self)
        self._closed = False
        self.refresher.start()

    def _show_error(self, message: str) -> None:
        self.errors.value = (
            f'<div style="color:#cf222e;font-size:12px">dashboard: {esc(message)}</div>'
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        self.preview._shown.displayed = True  # counts once the preview is the live view
        self.live.mark_displayed()
        self.plot.mark_displayed()
        return super()._repr_mimebundle_(**kwargs)

    @property
    def running(self) -> bool:
        """Whether the refresher thread is alive."""
        return self.refresher.alive

    def close(self) -> None:
        """Stop the refresher (joined) and close every widget model. Idempotent."""
        if getattr(self, "_closed", True):  # also reached from __del__ of a failed __init__
            return
        self._closed = True
        self.refresher.stop()
        with _LIVE_LOCK:
            live = _LIVE.get(self.server)
            if live is not None:
                live.discard(self)
        close_tree(self)
