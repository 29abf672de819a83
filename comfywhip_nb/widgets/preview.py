"""FramePreview: the newest processed frame of a session, pulled at a capped rate.

Pull, never push: the refresher asks ``server.latest_frame(kind="processed")`` for the
newest frame only when (1) the preview is shown, (2) fewer than ``max_in_flight`` frames
await the front end's acknowledgement (``FrameFlow``), (3) ``1/max_fps`` has passed since
the last frame, and (4) the frame index changed. Only then is it downscaled to at most
``max_width`` pixels and JPEG-encoded, on the refresher thread; the server's event loop and
processing worker never wait for the preview. Frames produced meanwhile are simply never
looked at (newest frame wins), so a slow or frozen front end costs nothing upstream.
Encoding happens in ``prepare`` (refresher thread); ``tick`` only sets the widget values, on
the kernel's thread. In a dashboard this is the fallback of the WHEP ``PlayerWidget``.
"""

from __future__ import annotations

import io
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
from PIL import Image, ImageDraw

from ..pipeline import frames
from ._common import FrameFlow, Refresher, ShownTracker, close_tree, esc

__all__ = ["FramePreview", "placeholder_jpeg"]

NEWEST = "newest"
STATUS_PERIOD = 0.5


def placeholder_jpeg(
    text: str = "waiting for frames…", size: tuple[int, int] = (320, 180)
) -> bytes:
    """A small grey JPEG shown before the first frame (an empty Image looks broken)."""
    image = Image.new("RGB", size, (40, 42, 48))
    draw = ImageDraw.Draw(image)
    box = draw.textbbox((0, 0), text)
    draw.text(
        ((size[0] - (box[2] - box[0])) // 2, (size[1] - (box[3] - box[1])) // 2),
        text,
        fill=(200, 200, 200),
    )
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=70)
    return buffer.getvalue()


class FramePreview(widgets.VBox):
    """Live preview of processed frames (optionally side by side with the input frame).

    ``session_id=None`` follows the newest session that has a processed frame. Counters:
    ``frames_sent``, ``frames_skipped`` (processed frames never shown), ``updated_from``
    (names of the threads that set the image: the refresher's).
    """

    def __init__(
        self,
        server: Any,
        session_id: str | None = None,
        *,
        max_fps: float = 15.0,
        max_width: int = 640,
        max_in_flight: int = 2,
        show_input: bool = False,
        quality: int = 80,
        autostart: bool = True,
        track_views: bool = True,
    ) -> None:
        if max_fps <= 0:
            raise ValueError(f"max_fps must be positive, got {max_fps}")
        self.server = server
        self.max_fps = max_fps
        self.max_width = max_width
        self.quality = quality
        self._refresher: Refresher | None = None
        self.flow = FrameFlow(max_in_flight, on_progress=self._wake)
        placeholder = placeholder_jpeg()
        self.image = widgets.Image(
            value=placeholder, format="jpeg", layout=widgets.Layout(max_width="100%")
        )
        self.input_image = widgets.Image(
            value=placeholder, format="jpeg", layout=widgets.Layout(max_width="100%")
        )
        self.image.add_class("comfywhip-preview-image")  # found by tests and the browser check
        self.input_image.add_class("comfywhip-input-image")
        self._shown = ShownTracker(self.image, on_change=self._wake, track_views=track_views)
        self.chooser = widgets.Dropdown(
            options=[("newest session", NEWEST)],
            value=NEWEST,
            description="session",
            layout=widgets.Layout(width="260px"),
            style={"description_width": "56px"},
        )
        self.show_input = widgets.Checkbox(
            value=show_input,
            description="input side by side",
            indent=False,
            layout=widgets.Layout(width="150px"),
        )
        self.live = widgets.ToggleButton(
            value=True,
            description="live",
            icon="play",
            tooltip="pause/resume the preview",
            layout=widgets.Layout(width="80px"),
        )
        self.status = widgets.HTML()
        self._input_box = widgets.VBox(
            [widgets.HTML("<b style='font-size:12px'>input</b>"), self.input_image],
            layout=widgets.Layout(
                display="flex" if show_input else "none", flex="1 1 0", align_items="flex-start"
            ),
        )
        images = widgets.HBox(
            [
                widgets.VBox(
                    [widgets.HTML("<b style='font-size:12px'>processed</b>"), self.image],
                    # flex-start: the image keeps its size (never upscaled), shrinks if needed
                    layout=widgets.Layout(flex="1 1 0", align_items="flex-start"),
                ),
                self._input_box,
            ],
            layout=widgets.Layout(width="100%"),
        )
        super().__init__(
            [widgets.HBox([self.chooser, self.show_input, self.live]), images, self.status]
        )
        self.add_class("comfywhip-preview")
        for control in (self.chooser, self.show_input, self.live):
            control.observe(self._on_control, names="value")
        if session_id is not None:
            self.chooser.options = [("newest session", NEWEST), (session_id[:8], session_id)]
            self.chooser.value = session_id

        self._lock = threading.Lock()
        self._last_key: tuple[Any, ...] | None = None
        self._ready: tuple[Any, ...] | None = None  # (key, frame, jpeg, input jpeg) to show
        self._waiting = False
        self._next_at = 0.0
        self._status_at = 0.0
        self._placeholder_shown = True
        self._sent_times: deque[float] = deque(maxlen=60)
        self._encode_ms: deque[float] = deque(maxlen=30)
        self.frames_sent = 0
        self.frames_skipped = 0
        self.updated_from: set[str] = set()
        self.last_frame_index = -1
        self._last_sent: Any = None
        if autostart:
            self._refresher = Refresher(server, [self]).start()

    # -- kernel-thread side ----------------------------------------------------------------
    @property
    def _extra_widgets(self) -> list[widgets.Widget]:
        """Models outside the children tree (the flow's seq/ack/link), for close_tree."""
        return self.flow.widgets if hasattr(self, "flow") else []

    def _wake(self) -> None:
        if self._refresher is not None:
            self._refresher.wake()

    def _on_control(self, change: Mapping[str, Any]) -> None:
        self._input_box.layout.display = "flex" if self.show_input.value else "none"
        self.live.icon = "play" if self.live.value else "pause"
        with self._lock:
            self._last_key = None  # resend at once for the new choice
            self._ready = None
        self._wake()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        self.mark_displayed()
        return super()._repr_mimebundle_(**kwargs)

    def mark_displayed(self) -> None:
        """Called when the kernel displays this preview (or a dashboard holding it)."""
        self._shown.displayed = True
        self._wake()

    @property
    def shown(self) -> bool:
        return self._shown.shown

    # -- refresher-thread side -------------------------------------------------------------
    def _update_choices(self, sessions: Mapping[str, Any]) -> None:
        options = [("newest session", NEWEST)] + [
            (f"{sid[:8]} ({info.channel_id})", sid)
            for sid, info in sorted(sessions.items(), key=lambda kv: kv[1].created_at)
            if info.has_video
        ]
        if list(self.chooser.options) == options:
            return
        current = self.chooser.value
        with self.chooser.hold_sync():
            self.chooser.options = options
            # a vanished session falls back to "newest" rather than to an arbitrary one
            self.chooser.value = current if current in dict(options).values() else NEWEST

    def prepare(self, now: float, sessions: Mapping[str, Any]) -> None:
        """Refresher thread: fetch the newest frame and encode it when one is due."""
        if not self.live.value or not self.shown or not self.flow.ready():
            return
        if now < self._next_at:
            return
        choice = self.chooser.value
        session_id = None if choice == NEWEST else choice
        try:
            latest = self.server.latest_frame(session_id, kind="processed")
        except KeyError:  # the chosen session ended between snapshot and now
            latest = None
        if latest is None:
            with self._lock:
                self._waiting = True
            return
        with_input = bool(self.show_input.value)
        key = (session_id, latest.index, with_input)
        with self._lock:
            self._waiting = False
            if key == self._last_key or (self._ready is not None and self._ready[0] == key):
                return
        started = time.perf_counter()
        processed = frames.encode_preview_jpeg(latest.frame, self.max_width, self.quality)
        raw = (
            frames.encode_preview_jpeg(latest.input_frame, self.max_width, self.quality)
            if with_input
            else None
        )
        self._encode_ms.append((time.perf_counter() - started) * 1e3)
        with self._lock:
            self._ready = (key, latest, processed, raw)

    def tick(self, now: float, sessions: Mapping[str, Any]) -> float:
        """Kernel thread: show what ``prepare`` encoded (inline outside a kernel)."""
        self._update_choices(sessions)
        if not self.live.value or not self.shown:
            return 0.5
        if not self.flow.ready():
            self._update_status(now, None)  # says "waiting for the front end", once
            return min(self.flow.maybe_probe(now), 1.0)
        with self._lock:
            ready, self._ready = self._ready, None
            waiting = self._waiting
        if ready is None:
            if waiting:
                self._show_waiting(now, sessions)
                return 0.2
            if now < self._next_at:
                return self._next_at - now
            return 1.0 / self.max_fps / 2  # poll for the next frame at twice the cap
        key, latest, processed, raw = ready
        with self._lock:
            previous = self._last_key
            self._last_key = key
        if previous is not None and previous[0] == key[0] and latest.index > previous[1] + 1:
            self.frames_skipped += latest.index - previous[1] - 1
        self.image.value = processed
        if raw is not None:
            self.input_image.value = raw
        self.flow.mark_sent()  # after the images: its ack implies they were handled
        self.frames_sent += 1
        self.last_frame_index = latest.index
        self._placeholder_shown = False
        self._sent_times.append(now)
        self.updated_from.add(threading.current_thread().name)
        self._next_at = now + 1.0 / self.max_fps
        self._last_sent = latest
        self._update_status(now, latest)
        return 1.0 / self.max_fps

    def _show_waiting(self, now: float, sessions: Mapping[str, Any]) -> None:
        if now - self._status_at >= STATUS_PERIOD:
            self._status_at = now
            text = "waiting for a publisher…" if not sessions else "waiting for processed frames…"
            self._set_status(f'<span style="color:#656d76">{esc(text)}</span>')

    def _update_status(self, now: float, latest: Any | None) -> None:
        """At most every STATUS_PERIOD, and only sent when the text changed."""
        latest = latest if latest is not None else self._last_sent
        if latest is None or now - self._status_at < STATUS_PERIOD:
            return
        self._status_at = now
        times = self._sent_times
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        fps = (len(times) - 1) / span if span > 0 and now - times[-1] < 1.0 else 0.0
        width, height = latest.frame.width, latest.frame.height
        shown_w, shown_h = frames.preview_size(width, height, self.max_width)
        size = f"{width}x{height}" + (f" → {shown_w}x{shown_h}" if shown_w != width else "")
        encode = sum(self._encode_ms) / len(self._encode_ms) if self._encode_ms else 0.0
        in_flight = self.flow.in_flight()
        waiting = " · waiting for the front end" if in_flight >= self.flow.max_in_flight else ""
        self._set_status(
            f'<span style="font-size:12px;color:#656d76">frame #{latest.index} · {size} · '
            f"preview {fps:.1f} fps (cap {self.max_fps:g}) · "
            f"{in_flight}/{self.flow.max_in_flight} in flight{waiting} · "
            f"JPEG {encode:.1f} ms</span>"
        )

    def _set_status(self, value: str) -> None:
        if self.status.value != value:
            self.status.value = value

    def on_server_stopped(self) -> None:
        self._set_status('<span style="color:#656d76">server stopped</span>')

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        refresher = getattr(self, "_refresher", None)  # None also after a failed __init__
        if refresher is not None:
            refresher.stop()
        close_tree(self)
