"""Per-session network counters: RTP packets lost, NACKs and PLIs this server sent, gaps
skipped by the resync watch (``resync.py``).

aiortc's receiver already answers loss itself: it NACKs missing sequence numbers (the sender
retransmits) and sends a PLI when a frame cannot be reassembled or decoded, so the publisher
sends a keyframe and the decoder resynchronises on it. It keeps no count of either, so
``watch`` wraps the two senders on each receiver *instance* (aiortc's classes stay untouched)
and ``refresh`` reads ``packetsLost``/``packetsReceived`` from the receiver's ``getStats``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from .resync import GapWatch

__all__ = ["RtpCounters"]


class RtpCounters:
    """Loss, NACK and PLI counts of one session's receivers; used from the event loop."""

    def __init__(self) -> None:
        self.nacks_sent = 0
        """RTCP NACK packets sent (each may name several lost packets)."""
        self.nack_packets = 0
        """Lost packets named in those NACKs."""
        self.plis_sent = 0
        """Keyframe requests (RTCP PLI) sent to the publisher."""
        self.packets_lost = 0
        self.packets_received = 0
        self._receivers: list[Any] = []
        self._gap_watches: list[GapWatch] = []

    def watch(self, receiver: Any) -> None:
        """Count the NACKs and PLIs ``receiver`` (an ``RTCRtpReceiver``) sends; idempotent."""
        if any(r is receiver for r in self._receivers):
            return
        self._receivers.append(receiver)
        send_nack: Callable[[int, list[int]], Awaitable[None]] | None = getattr(
            receiver, "_send_rtcp_nack", None
        )
        send_pli: Callable[[int], Awaitable[None]] | None = getattr(
            receiver, "_send_rtcp_pli", None
        )
        if send_nack is not None:

            async def nack(media_ssrc: int, lost: list[int]) -> None:
                self.nacks_sent += 1
                self.nack_packets += len(lost)
                await send_nack(media_ssrc, lost)

            receiver._send_rtcp_nack = nack
        if send_pli is not None:

            async def pli(media_ssrc: int) -> None:
                self.plis_sent += 1
                await send_pli(media_ssrc)

            receiver._send_rtcp_pli = pli
        if getattr(getattr(receiver, "track", None), "kind", None) == "video":
            watch = GapWatch(receiver)  # after the wrap: its PLIs are counted too
            watch.start()
            self._gap_watches.append(watch)

    def stop(self) -> None:
        """End the gap watches and forget the receivers (the session is closing)."""
        for watch in self._gap_watches:
            watch.stop()
        for receiver in self._receivers:  # the wrappers close over the receiver: a cycle
            for name in ("_send_rtcp_nack", "_send_rtcp_pli"):
                receiver.__dict__.pop(name, None)
        self._receivers.clear()

    async def refresh(self) -> None:
        """Update ``packets_lost``/``packets_received`` from the receivers' ``getStats``."""
        lost = received = 0
        for receiver in self._receivers:
            with contextlib.suppress(Exception):  # a closing receiver may have no stats
                report = await receiver.getStats()
                for stat in report.values():
                    if getattr(stat, "type", "") == "inbound-rtp":
                        lost += max(0, int(getattr(stat, "packetsLost", 0) or 0))
                        received += int(getattr(stat, "packetsReceived", 0) or 0)
        self.packets_lost, self.packets_received = lost, received

    def as_dict(self) -> dict[str, int]:
        return {
            "packets_lost": self.packets_lost,
            "nacks_sent": self.nacks_sent,
            "nack_packets": self.nack_packets,
            "plis_sent": self.plis_sent,
            "gap_skips": sum(w.skips for w in self._gap_watches),
        }
