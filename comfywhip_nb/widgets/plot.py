"""StatsPlot: fps in/out and latency of every session over the last minute.

Rendered with matplotlib's object-oriented API on the Agg canvas (no pyplot, so no global
figure state and no GUI backend: safe on the refresher thread) into a PNG ``Image``, about
at most once a period, once displayed. Unlike the preview it asks the front end for no
acknowledgement and no view reports: messages from the front end that arrive while a cell
awaits can leave that cell "running" for good with ipykernel 7 (see ``_kernel.py``), and a
dashboard must not send them continuously. The cost is bounded anyway: one small PNG a period.
Rendering happens in ``prepare`` (refresher thread); ``tick`` sets the image on the kernel's
thread. The history outlives its sessions and the server: an ended session stays (marked
"ended"), and once the server stops the plot freezes, marked "server stopped";
``save("run.png")`` writes the whole record.
"""

from __future__ import annotations

import io
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ipywidgets as widgets
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ._common import Refresher, ShownTracker, close_tree

__all__ = ["StatsPlot"]

WINDOW_S = 60.0
HISTORY_S = 600.0  # what is kept (and saved); the live view shows the last WINDOW_S
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
        self.figure = Figure(figsize=size, dpi=dpi, layout="constrained")
        FigureCanvasAgg(self.figure)
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self._shown = ShownTracker(self.image, on_change=self._wake, track_views=False)
        super().__init__([self.image])
        self.add_class("comfywhip-plot")
        self.history: dict[str, deque[tuple[float, float, float, float]]] = {}
        self.ended: set[str] = set()  # sessions in the history that are gone
        self.stopped_at: float | None = None  # set when the server stopped: the plot freezes
        self._png: bytes | None = None  # rendered, waiting for the kernel thread
        self._render_lock = threading.Lock()  # the figure is shared by render() and save()
        self._sampled_at = -1e9
        self._dirty = True
        self.renders = 0
        self.updated_from: set[str] = set()
        self.image.value = self.render()
        if autostart:
            self._refresher = Refresher(server, [self]).start()

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
        """Record one point per live session; ended sessions keep their points."""
        changed = False
        for sid, info in sessions.items():
            if info.kind == "whep":
                continue
            points = self.history.setdefault(sid, deque(maxlen=int(HISTORY_S / self.period) + 2))
            points.append((now, info.fps_in, info.fps_out, info.latency_ms))
            changed = True
        ended = {sid for sid in self.history if sid not in sessions}
        if ended != self.ended:
            self.ended = ended
            changed = True
        for sid in list(self.history):
            points = self.history[sid]
            while points and points[0][0] < now - HISTORY_S:
                points.popleft()
            if not points:
                del self.history[sid]
                self.ended.discard(sid)
                changed = True
        self._dirty = self._dirty or changed

    def render(self, now: float | None = None, *, window: float | None = WINDOW_S) -> bytes:
        """PNG of the history (also the empty placeholder); ``window=None``: all of it."""
        with self._render_lock:
            return self._render(now, window)

    def _render(self, now: float | None, window: float | None) -> bytes:
        fig = self.figure
        if self.stopped_at is not None:
            now = self.stopped_at  # frozen: "seconds ago" counts from the stop
        fig.clear()
        ax_fps, ax_lat = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
        ax_fps.set_ylabel("fps")
        ax_lat.set_ylabel("latency ms")
        ax_lat.set_xlabel("seconds ago")
        oldest = min((pts[0][0] for pts in self.history.values() if pts), default=None)
        span = (now or 0.0) - oldest if oldest is not None and now is not None else 0.0
        shown = max(WINDOW_S, span) if window is None else window
        ax_lat.set_xlim(-shown, 0)
        if self.stopped_at is not None:
            ax_fps.set_title("server stopped: the record of the run", fontsize=9, color="#cf222e")
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
            label = sid[:8] + (" (ended)" if sid in self.ended else "")
            ax_fps.plot(xs, [p[2] for p in points], "-", color=colour, linewidth=1.6, label=label)
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

    def save(self, path: str | Path) -> Path:
        """Write the whole kept history (up to ten minutes) as a PNG; returns the path."""
        path = Path(path)
        now = self.stopped_at if self.stopped_at is not None else time.monotonic()
        path.write_bytes(self.render(now, window=None))
        return path

    def prepare(self, now: float, sessions: Mapping[str, Any]) -> None:
        """Refresher thread: sample once a period and render when shown and due."""
        if now - self._sampled_at >= self.period:
            self._sampled_at = now
            self.sample(now, sessions)
        if self._dirty and self._shown.shown and self._png is None:
            self._dirty = False
            self._png = self.render(now)

    def prepare_stopped(self) -> None:
        """Refresher thread, after the server stopped: freeze and render the final record."""
        self.stopped_at = self._sampled_at if self._sampled_at > 0 else time.monotonic()
        self.ended.update(self.history)
        self._png = self.render(self.stopped_at)

    def tick(self, now: float, sessions: Mapping[str, Any]) -> float:
        """Kernel thread: show the newest rendering."""
        wait = max(0.0, self._sampled_at + self.period - now)
        png, self._png = self._png, None
        if png is None:
            return wait or self.period
        self.image.value = png
        self.renders += 1
        self.updated_from.add(threading.current_thread().name)
        return wait or self.period

    def on_server_stopped(self) -> None:
        """Kernel thread: the frozen record replaces the live view (no flow control: once)."""
        png, self._png = self._png, None
        if png is not None:
            self.image.value = png
            self.renders += 1

    def close(self) -> None:
        refresher = getattr(self, "_refresher", None)  # None also after a failed __init__
        if refresher is not None:
            refresher.stop()
        close_tree(self)
