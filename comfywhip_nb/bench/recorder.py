"""Per-frame records and the measurement window, shared by both receivers.

Both receivers call ``Recorder.on_processed`` at the same point of their pipeline: after the
op ran and the result was converted back to a video frame, before the preview JPEG. The
record is ``(session, index, received_at, processed_at)`` with the stamp read back from the
processed pixels, so a frame that did not really go through the op cannot be counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from .procs import cpu_seconds
from .stamp import read_stamp

__all__ = ["Recorder"]

Record = tuple[int, int, float, float]


class Recorder:
    """Thread-safe enough for its use: ``list.append`` is atomic under the GIL."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.unreadable = 0
        self.sessions_seen: set[int] = set()
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.records = []
            self.unreadable = 0
            self.sessions_seen = set()

    def on_processed(self, image: torch.Tensor, received_at: float) -> None:
        """Record one processed frame (called on the processing thread)."""
        now = time.monotonic()
        stamp = read_stamp(image)
        if stamp is None:
            self.unreadable += 1
            return
        self.records.append((stamp[0], stamp[1], received_at, now))
        if stamp[0] not in self.sessions_seen:
            with self._lock:
                self.sessions_seen.add(stamp[0])

    def measure(
        self,
        sessions: int,
        warmup: float,
        duration: float,
        counters: Callable[[], dict[str, Any]],
        during: Callable[[float], None] | None = None,
        settle: float = 0.0,
        start_timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Wait until every session delivered a processed frame, then ``warmup`` seconds,
        then up to ``settle`` seconds for a receive queue left by the start (connection,
        first keyframe) to drain, then record a ``duration``-second window: records, CPU
        seconds and ``counters()`` at both ends. ``during(t0)`` is called every 10 ms inside
        the window (hot swaps)."""
        deadline = time.monotonic() + start_timeout
        while len(self.sessions_seen) < sessions:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {len(self.sessions_seen)} of {sessions} sessions delivered frames "
                    f"within {start_timeout:g} s"
                )
            time.sleep(0.01)
        time.sleep(warmup)
        settle_start = time.monotonic()
        while counters().get("queued", 0) > sessions and time.monotonic() - settle_start < settle:
            time.sleep(0.02)
        settled = time.monotonic() - settle_start
        before, cpu0, t0 = counters(), cpu_seconds(), time.monotonic()
        end = t0 + duration
        while (now := time.monotonic()) < end:
            if during is not None:
                during(t0)
            time.sleep(min(0.01, max(0.0, end - now)))
        t1, cpu1, after = time.monotonic(), cpu_seconds(), counters()
        records = [r for r in self.records if t0 <= r[3] <= t1]
        # a little before the window too: stall and gap analysis needs the previous frame
        context = [r for r in self.records if t0 - 1.0 <= r[3] < t0]
        return {
            "t0": t0,
            "t1": t1,
            "settle_s": settled,
            "cpu_s": cpu1 - cpu0,
            "records": records,
            "before_window": context,
            "unreadable": self.unreadable,
            "counters_before": before,
            "counters_after": after,
        }
