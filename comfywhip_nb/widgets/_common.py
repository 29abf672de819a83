"""Shared machinery of the widgets: the refresher thread, frame flow control, HTML helpers.

Developer notes (the protocol, in the spirit of jupyter_rfb's widget.py):

* Threads. One ``Refresher`` thread per dashboard (or per standalone widget) polls the server
  and prepares what is costly (snapshots, JPEG encoding, plot PNGs) in ``prepare``; every
  widget change happens in the components' ``tick``, which the refresher hands to the
  kernel's own thread (``_kernel.KernelThread``: ``loop.call_soon_threadsafe`` on the loop
  the kernel runs cells on), so no comm message leaves from a foreign thread (ipykernel 7
  can leave a cell "running" for good otherwise). Outside a kernel, ticks run inline.
  Front-end events (buttons, dropdowns, acknowledgements) arrive on the kernel thread too;
  they flip flags and ``wake()`` the refresher.
* Flow control (``FrameFlow``). Every image sent is followed by a bump of a hidden sequence
  widget ``seq``. A ``jsdlink(seq -> ack)`` makes the front end copy each ``seq`` it has
  processed into a hidden ``ack`` widget and sync it back to the kernel (ipywidgets'
  DirectionalLinkModel calls ``save_changes``), so ``ack`` is the last frame the front end
  has handled. Frames in flight = frames whose ``seq`` is above ``ack``; nothing new is
  encoded while that reaches ``max_in_flight``. This approximates jupyter_rfb's
  ``frame_feedback`` without custom JavaScript: it proves the widget model got the frame,
  not that the browser painted it. The kernel handles acks only when its main thread is free
  (between cells, or while a cell awaits), so a busy kernel also throttles the preview.
* A front end that never acks (frozen tab, closed page, headless nbclient) gets at most
  ``max_in_flight`` frames, then only tiny probes with exponential backoff (1 s to 30 s).
  A probe gives the link a fresh ``ack`` model; the front end re-binds the link and copies
  the current ``seq`` into it at once (a reloaded page's link does the same on creation).
  Why a fresh model: ipywidgets' front end sends a model's next update only after the
  kernel's ``idle`` status for the previous one, and ipykernel 7.4 handles comm messages
  that arrive during an awaiting cell concurrently, without any busy/idle status. One ack
  arriving during ``await asyncio.sleep(...)`` would otherwise stop that model's syncing
  for good (seen in JupyterLab as a preview frozen after its first frame).
* Visibility. ``_view_count`` (ipywidgets' view tracking) says whether any view exists. Until
  a front end reports a view, a widget counts as shown once the kernel displayed it (so
  headless runs still record frames in the saved widget state).
"""

from __future__ import annotations

import contextlib
import html
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import ipywidgets as widgets

from ._kernel import KernelThread

__all__ = ["Component", "FrameFlow", "Refresher", "ShownTracker", "close_tree", "esc"]

logger = logging.getLogger("comfywhip_nb.widgets")

SNAPSHOT_MAX_AGE = 0.5
IDLE_TICK = 1.0
_counter = itertools.count(1)


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


class Component(Protocol):
    """What the refresher drives: ``tick`` returns seconds until it wants the next tick."""

    def tick(self, now: float, sessions: Mapping[str, Any]) -> float: ...

    def on_server_stopped(self) -> None: ...


class FrameFlow:
    """Frames sent vs acknowledged by the front end; see the module docstring."""

    def __init__(
        self,
        max_in_flight: int = 2,
        *,
        probe_min: float = 1.0,
        probe_max: float = 30.0,
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self.max_in_flight = max_in_flight
        self.probe_min, self.probe_max = probe_min, probe_max
        self.on_progress = on_progress
        self.seq = widgets.IntText(0)
        self.ack = self._new_ack()
        self.link = widgets.jsdlink((self.seq, "value"), (self.ack, "value"))
        self._lock = threading.Lock()
        self._seq = 0
        self._acked = 0
        self._frames: deque[int] = deque()  # seq numbers of frames not yet acknowledged
        self._probe_delay = probe_min
        self._last_progress = time.monotonic()
        self.frames_sent = 0
        self.probes_sent = 0

    def _new_ack(self) -> widgets.IntText:
        ack = widgets.IntText(0)
        ack.observe(self._on_ack, names="value")
        return ack

    @property
    def widgets(self) -> list[widgets.Widget]:
        return [self.seq, self.ack, self.link]

    def in_flight(self) -> int:
        with self._lock:
            return len(self._frames)

    def ready(self) -> bool:
        """True while another frame may be sent."""
        return self.in_flight() < self.max_in_flight

    def mark_sent(self) -> None:
        """Call right after setting a frame's widget values (from the sending thread)."""
        with self._lock:
            self._seq += 1
            self._frames.append(self._seq)
            self.frames_sent += 1
            seq = self._seq
        self.seq.value = seq

    def maybe_probe(self, now: float) -> float:
        """When stalled, re-arm the ack path (with backoff); seconds until the next check.

        A probe points the link at a *new* ``ack`` model: the front end re-binds the link and
        copies the current ``seq`` into it at once, so a live front end answers even when the
        old ``ack`` model can no longer sync (see the module docstring).
        """
        with self._lock:
            if len(self._frames) < self.max_in_flight:
                return float("inf")
            due = self._last_progress + self._probe_delay
            if now < due:
                return due - now
            self.probes_sent += 1
            self._last_progress = now
            self._probe_delay = min(self._probe_delay * 2, self.probe_max)
            delay = self._probe_delay
        old, self.ack = self.ack, self._new_ack()
        self.link.target = (self.ack, "value")
        old.close()
        return delay

    def acknowledge(self, value: int) -> None:
        """What the front end's link does; tests call it to simulate a live front end."""
        with self._lock:
            value = min(int(value), self._seq)  # never trust an ack for something unsent
            if value <= self._acked:
                return
            self._acked = value
            while self._frames and self._frames[0] <= value:
                self._frames.popleft()
            self._probe_delay = self.probe_min
            self._last_progress = time.monotonic()
        if self.on_progress is not None:
            self.on_progress()

    def _on_ack(self, change: Mapping[str, Any]) -> None:
        with contextlib.suppress(TypeError, ValueError):  # a malformed ack is no ack
            self.acknowledge(int(change["new"]))


class ShownTracker:
    """Whether a widget is on screen: ipywidgets' ``_view_count`` once a front end reports
    views, else "displayed by the kernel" (headless runs have no front end at all).

    View tracking makes the front end send a comm message whenever a view appears or goes,
    and such messages arriving while a cell awaits can leave that cell "running" for good
    in JupyterLab with ipykernel 7 (see ``_kernel.py``); so it is only switched on
    (``track()``) for widgets that need it, such as a JPEG preview that is the live view.
    """

    def __init__(
        self,
        widget: widgets.DOMWidget,
        on_change: Callable[[], None] | None = None,
        *,
        track_views: bool = True,
    ):
        self.displayed = False
        self.reported = False
        self._widget = widget
        self._on_change = on_change
        self._tracking = False
        widget.observe(self._on_views, names="_view_count")
        if track_views:
            self.track()

    def track(self) -> None:
        """Start view tracking in the front end (idempotent)."""
        if not self._tracking:
            self._widget._view_count = 0  # our own reset is no report from a front end
            self._tracking = True

    def _on_views(self, change: Mapping[str, Any]) -> None:
        if not self._tracking:
            return
        self.reported = True
        if self._on_change is not None:
            self._on_change()

    @property
    def shown(self) -> bool:
        views = self._widget._view_count or 0
        if self.reported:
            return views > 0
        return self.displayed


class Refresher:
    """The background thread that keeps a set of components up to date.

    Each round it gathers data on its own thread (the session snapshot, then each
    component's optional ``prepare(now, sessions)``: JPEG encoding, plot rendering) and
    hands the widget changes (each component's ``tick``) to the kernel's thread through
    ``KernelThread`` (see ``_kernel.py``), waiting for that batch before the next round.
    Stops on ``stop()`` or by itself when the server stops; ``stop`` joins the thread.
    """

    def __init__(
        self,
        server: Any,
        components: Iterable[Component],
        *,
        on_error: Callable[[str], None] | None = None,
        kernel: KernelThread | None = None,
    ) -> None:
        self.server = server
        self.components = list(components)
        self.on_error = on_error
        self.kernel = kernel if kernel is not None else KernelThread.current()
        self.name = f"comfywhip-dashboard-{next(_counter)}"
        self.errors: deque[str] = deque(maxlen=20)
        self._cond = threading.Condition()
        self._stopping = False
        self._woken = False
        self._pending = False  # a batch of ticks waits for the kernel thread
        self._wait_hint = IDLE_TICK
        self.batches = 0
        self._thread: threading.Thread | None = None
        self._snapshot: Mapping[str, Any] = {}
        self._snapshot_at = -1.0

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Refresher:
        with self._cond:
            if self._thread is not None or self._stopping:
                return self
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def stop(self, timeout: float = 5.0) -> None:
        """Idempotent; returns once the thread has ended (or ``timeout`` passed)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("WHIP: %s did not stop within %.1f s", self.name, timeout)

    def sessions(self, now: float) -> Mapping[str, Any]:
        if now - self._snapshot_at >= SNAPSHOT_MAX_AGE:
            self._snapshot = self.server.sessions
            self._snapshot_at = now
        return self._snapshot

    def _report(self, component: object, exc: BaseException) -> None:
        message = f"{type(component).__name__}: {type(exc).__name__}: {exc}"
        if not self.errors or self.errors[-1] != message:
            logger.warning("WHIP: %s refresh failed: %s", self.name, message, exc_info=exc)
        self.errors.append(message)
        on_error = self.on_error
        if on_error is not None:
            self.kernel.call(lambda: on_error(message))

    def _gather(self, now: float) -> Mapping[str, Any] | None:
        """Refresher-thread work: snapshot and ``prepare``; None once the server stopped."""
        try:
            sessions = self.sessions(now)
        except Exception as exc:  # the server stopped between the check and the call
            if not self.server.running:
                return None
            self._report(self, exc)
            sessions = self._snapshot
        for component in self.components:
            prepare = getattr(component, "prepare", None)
            if prepare is None:
                continue
            try:
                prepare(now, sessions)
            except Exception as exc:
                self._report(component, exc)
        return sessions

    def _tick_all(self) -> float:
        """Kernel-thread work: every component applies its changes to its widgets."""
        now = time.monotonic()
        sessions = self._snapshot  # the freshest: a late batch never shows stale data
        wait = IDLE_TICK
        for component in self.components:
            try:
                wait = min(wait, component.tick(now, sessions))
            except Exception as exc:
                self._report(component, exc)
        return wait

    def _batch(self) -> None:
        wait = IDLE_TICK
        try:
            if not self._stopping:
                wait = self._tick_all()
                self.batches += 1
        finally:
            with self._cond:
                self._pending = False
                self._wait_hint = wait
                self._cond.notify_all()

    def _round(self) -> float | None:
        """One round; the seconds to wait before the next, or None to end the thread."""
        if self.kernel.inline:
            wait = self._tick_all()
            self.batches += 1
            return wait
        with self._cond:
            submit = not self._pending
            self._pending = True
        if submit and not self.kernel.call(self._batch):
            return None  # the kernel's loop is gone
        deadline = time.monotonic() + IDLE_TICK
        with self._cond:
            while self._pending and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    return 0.0  # the kernel is busy: gather again, submit nothing new
                self._cond.wait(left)
            return self._wait_hint

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
            if not self.server.running:
                break
            if self._gather(time.monotonic()) is None:
                break
            wait = self._round()
            if wait is None:
                return
            with self._cond:
                if not self._woken and not self._stopping and wait > 0:
                    self._cond.wait(max(wait, 0.005))
                self._woken = False
        for component in self.components:
            prepare = getattr(component, "prepare_stopped", None)
            if prepare is not None:
                try:
                    prepare()
                except Exception as exc:
                    self._report(component, exc)
        self.kernel.call(self._stopped)

    def _stopped(self) -> None:
        for component in self.components:
            try:
                component.on_server_stopped()
            except Exception as exc:
                self._report(component, exc)


def close_tree(widget: widgets.Widget, extra: Iterable[widgets.Widget] = ()) -> None:
    """Close a widget, its descendants and their layout/style models (they are comms too)."""
    seen: set[int] = set()
    stack: list[Any] = [widget, *extra]
    while stack:
        item = stack.pop()
        if not isinstance(item, widgets.Widget) or id(item) in seen:
            continue
        seen.add(id(item))
        stack.extend(getattr(item, "children", ()) or ())
        stack.extend(getattr(item, "_extra_widgets", ()) or ())
        for name in ("layout", "style"):
            stack.append(getattr(item, name, None))
        widgets.Widget.close(item)  # the base close: subclasses' close() calls close_tree
