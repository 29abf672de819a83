"""``SampleBuffer``: decoded audio waiting for a whole prompt buffer (worker thread only).

Blocks of float32 ``[channels, samples]`` are kept as they arrived and joined only when a
buffer is taken, so adding a 20 ms frame is O(1). The buffer tracks the pts of its first
sample and the arrival time of the frame that holds it (the latency reference).
"""

from __future__ import annotations

from collections import deque

import numpy as np

__all__ = ["SampleBuffer"]


class SampleBuffer:
    """Samples in arrival order with the pts and arrival time of the first one."""

    def __init__(self) -> None:
        self._blocks: deque[tuple[np.ndarray, float]] = deque()
        self.total = 0
        self.sample_rate = 0
        self.channels = 0
        self.pts = 0
        self._next_pts = 0

    def add(self, samples: np.ndarray, rate: int, pts: int | None, received_at: float) -> bool:
        """Append one frame's samples; True when the format changed (what was buffered in
        the old format is dropped, a new timeline starts at this frame)."""
        changed = (rate, samples.shape[0]) != (self.sample_rate, self.channels)
        if changed:
            self._blocks.clear()
            self.total = 0
            self.sample_rate, self.channels = rate, samples.shape[0]
        if not self._blocks:  # the timeline restarts from the input's own pts
            self.pts = pts if pts is not None else self._next_pts
        self._blocks.append((samples, received_at))
        self.total += samples.shape[1]
        self._next_pts = self.pts + self.total
        return changed

    @property
    def head_received_at(self) -> float | None:
        """When the frame holding the first waiting sample arrived (None: empty)."""
        return self._blocks[0][1] if self._blocks else None

    def take(self, count: int) -> tuple[np.ndarray, int, int, float]:
        """The first ``count`` samples (fewer if fewer wait), the rate, their pts and the
        arrival time of the frame holding the first sample."""
        received_at = self._blocks[0][1]
        parts: list[np.ndarray] = []
        pts, got = self.pts, 0
        while self._blocks and got < count:
            block, arrived = self._blocks.popleft()
            room = count - got
            if block.shape[1] > room:
                self._blocks.appendleft((block[:, room:], arrived))
                block = block[:, :room]
            parts.append(block)
            got += block.shape[1]
        self.total -= got
        self.pts += got
        samples = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        return samples, self.sample_rate, pts, received_at

    def drop(self, count: int) -> None:
        """Discard the first ``count`` samples; the timeline skips them (no drift)."""
        self.take(count)
