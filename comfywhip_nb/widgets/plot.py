"""StatsPlot: fps in/out and latency of every session over the last minute.

Rendered with matplotlib's object-oriented API on the Agg canvas (no pyplot, so no global
figure state and no GUI backend: safe on the refresher thread) into a PNG ``Image``, about
once a second, only while shown, and with the same frame flow control as the preview.
"""

from __future__ import annotations

import io
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ._common import FrameFlow, Refresher, ShownTracker, close_tree

__all__ = ["StatsPlot"]

WINDOW_S = 60.0
SAMPLE_PERIOD = 1.0
MAX_SESSIONS_PLOTTED = 6


class StatsPlot(widgets.VBox):
    """A one-minute plot of fps in (dashed), fps out (solid) and latency per session."""

    def __init__(
        self,
        server: Any,
        *,
        period: float = SAMPLE_PERIOD,
        size: tuple[float, float] = (5.6, 3.4),
        dpi: int = 80,
        autostart: bool = True,
    ) -> None:
        self.server = server
        self.period = period
        self._refresher: Refresher | None = None
        self.flow = FrameFlow(2, on_progress=self._wake)
        self.figure = Figure(figsize=size, dpi=dpi, layout="constrained")
        FigureCanvasAgg(self.figure)
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self._shown = ShownTracker(self.image, on_change=self._wake)
        super().__init__([self.image])
        self.add_class("comfywhip-plot")
        self.history: dict[str, deque[tuple[float, float, float, float]]] = {}
        self._sampled_at = -1e9
        self._dirty = True
        self.renders = 0
        self.updated_from: set[str] = set()
        self.image.value = self.render()
        if autostart:
            self._refresher = Refresher(server, [self]).start()

    @property
    def _extra_widgets(self) -> list[widgets.Widget]:
        """Models outside the children tree (the flow's seq/ack/link), for close_tree."""
        return self.flow.widgets if hasattr(self, "flow") else []

    def _wake(self) -> None:
        if self._refresher is not None:
            self._refresher.wake()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        self.mark_displayed()
        return super()._repr_mimebundle_(**kwargs)

    def mark_displayed(self) -> None:
        self._shown.displayed = True
        self._wake()

    def sample(self, now: float, sessions: Mapping[str, Any]) -> None:
        """Record one point per session and forget data older than a minute."""
        for sid, info in sessions.items():
            if info.kind == "whep":
                continue
            points = self.history.setdefault(sid, deque(maxlen=int(WINDOW_S / self.period) + 2))
            points.append((now, info.fps_in, info.fps_out, info.latency_ms))
        for sid in list(self.history):
            points = self.history[sid]
            while points and points[0][0] < now - WINDOW_S:
                points.popleft()
            if not points:
                del self.history[sid]
        self._dirty = True

    def render(self, now: float | None = None) -> bytes:
        """PNG of the current history (also used for the empty placeholder)."""
        fig = self.figure
        fig.clear()
        ax_fps, ax_lat = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
        ax_fps.set_ylabel("fps")
        ax_lat.set_ylabel("latency ms")
        ax_lat.set_xlabel("seconds ago")
        ax_lat.set_xlim(-WINDOW_S, 0)
        for ax in (ax_fps, ax_lat):
            ax.grid(True, alpha=0.3)
            ax.tick_params(labelsize=8)
        newest = sorted(self.history.items(), key=lambda kv: kv[1][0][0])[-MAX_SESSIONS_PLOTTED:]
        if not newest:
            ax_fps.text(
                0.5,
                0.5,
                "no sessions yet",
                ha="center",
                va="center",
                transform=ax_fps.transAxes,
                color="grey",
            )
        for i, (sid, points) in enumerate(newest):
            colour = f"C{i}"
            ref = now if now is not None else points[-1][0]
            xs = [t - ref for t, *_ in points]
            ax_fps.plot(xs, [p[1] for p in points], "--", color=colour, linewidth=1, alpha=0.7)
            ax_fps.plot(
                xs, [p[2] for p in points], "-", color=colour, linewidth=1.6, label=f"{sid[:8]}"
            )
            ax_lat.plot(xs, [p[3] for p in points], "-", color=colour, linewidth=1.2)
        # explicit limits: set_ylim(bottom=0) alone would freeze the top at 1
        fps_top = max((max(p[1], p[2]) for _, pts in newest for p in pts), default=0.0)
        lat_top = max((p[3] for _, pts in newest for p in pts), default=0.0)
        ax_fps.set_ylim(0, max(fps_top * 1.15, 1.0))
        ax_lat.set_ylim(0, max(lat_top * 1.15, 1.0))
        if newest:
            ax_fps.legend(
                fontsize=7, loc="lower left", title="out (solid) / in (dashed)", title_fontsize=7
            )
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return buffer.getvalue()

    def tick(self, now: float, sessions: Mapping[str, Any]) -> float:
        if now - self._sampled_at >= self.period:
            self._sampled_at = now
            self.sample(now, sessions)
        wait = max(0.0, self._sampled_at + self.period - now)
        if not self._dirty or not self._shown.shown:
            return wait or self.period
        if not self.flow.ready():
            return min(wait or self.period, self.flow.maybe_probe(now))
        self.image.value = self.render(now)
        self.flow.mark_sent()
        self._dirty = False
        self.renders += 1
        self.updated_from.add(threading.current_thread().name)
        return wait or self.period

    def on_server_stopped(self) -> None:
        pass

    def close(self) -> None:
        refresher = getattr(self, "_refresher", None)  # None also after a failed __init__
        if refresher is not None:
            refresher.stop()
        close_tree(self)
