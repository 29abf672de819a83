"""Resynchronise a video receiver after a gap that retransmission cannot fill.

aiortc's video jitter buffer (512 packets) releases frames strictly in sequence order. After
a loss burst longer than the publisher's retransmission history (aiortc keeps 128 packets),
the missing packets never come and the buffer holds every later frame until 512 packets have
piled up behind the gap: at 640x480/30 fps (~65 packets/s) processing froze for 4.5-6 s
after a 3 s blackout (benchmarks/network_faults.py). ``GapWatch`` looks at each video
receiver every ``interval``: when the oldest slot has stayed empty for ``gap_timeout`` while
newer packets wait, it drops the gap and the partial frame behind it (the buffer's own
``smart_remove``) and sends a PLI, so the publisher's next keyframe resynchronises the
decoder at once.

It reads aiortc's private jitter buffer (aiortc 1.x; where that is missing the watch does
nothing) and runs on the event loop, where aiortc itself touches the buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

__all__ = ["GapWatch"]

logger = logging.getLogger(__name__)


def _jitter_buffer(receiver: Any) -> Any | None:
    jb = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
    needed = ("_origin", "_packets", "capacity", "smart_remove")
    return jb if jb is not None and all(hasattr(jb, n) for n in needed) else None


class GapWatch:
    """Skip unfillable gaps in one video receiver's jitter buffer; see the module docstring."""

    def __init__(self, receiver: Any, gap_timeout: float = 0.3, interval: float = 0.05) -> None:
        self.receiver = receiver
        self.gap_timeout = gap_timeout
        self.interval = interval
        self.skips = 0
        """Gaps skipped (each followed by a PLI)."""
        self._since: float | None = None
        self._origin: int | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None and _jitter_buffer(self.receiver) is not None:
            self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(self.interval)
                ssrc = self.check(time.monotonic())
                if ssrc is not None:
                    with contextlib.suppress(Exception):  # a closing transport
                        await self.receiver._send_rtcp_pli(ssrc)

    def check(self, now: float) -> int | None:
        """Skip a gap that has waited past ``gap_timeout``; the media SSRC to PLI, or None."""
        jb = _jitter_buffer(self.receiver)
        if jb is None or jb._origin is None:
            return None
        cap = jb.capacity
        origin = jb._origin
        slots = [jb._packets[(origin + i) % cap] is not None for i in range(cap)]
        # the head frame waits for the packet after it; a gap is an empty run with packets
        # behind it (the frame before the gap can never be closed, those after never released)
        try:
            gap = slots.index(False)
            after = slots.index(True, gap)
        except ValueError:
            self._since = None  # no gap, or nothing waits behind it: frames flow
            return None
        first = after
        if self._since is None or self._origin != origin:
            self._since, self._origin = now, origin
            return None
        if now - self._since < self.gap_timeout:
            return None
        ssrc = jb._packets[(origin + first) % cap].ssrc
        # drop the frame before the gap, the gap and the partial frame right after it; stop
        # at the next frame start
        jb.smart_remove(first + 1)
        self.skips += 1
        self._since = None
        logger.info("WHIP: skipped a %d-packet gap that retransmission did not fill", first)
        return int(ssrc)
