"""Audio ingest latency: trim aiortc's audio jitter-buffer hold from 80 ms to 20 ms.

aiortc's audio receiver uses ``JitterBuffer(capacity=16, prefetch=4)``: a frame is handed to
the decoder only once the four frames after it have arrived, 80 ms of Opus or G.711. Its
video buffer hands a frame on when the next frame's first packet arrives (one frame interval,
33 ms at 30 fps). So audio reached the audio worker about 50 ms after the video of the same
instant, and a WHEP viewer that is itself an aiortc peer adds the same again: about 100 ms
of A/V offset before any processing (measured: ``tests/test_audio_egress.py``'s sync test).

The prefetch buys nothing here: delivery stops at the first missing packet whatever the
prefetch (it waits for a retransmission or for the buffer to overflow), so a hold of one
frame (prefetch 1, the smallest the buffer has: it needs the next packet to know a frame is
complete) only removes latency. Sessions call ``trim_audio_prefetch`` when an audio track
arrives. aiortc keeps the buffer in a private attribute (as it does the decoder thread that
``keyframe_wait.py`` reads); on a version without it nothing changes.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AUDIO_PREFETCH", "trim_audio_prefetch"]

AUDIO_PREFETCH = 1
"""Frames after a frame that must have arrived before it is decoded (aiortc's default: 4)."""


def trim_audio_prefetch(pc: Any, prefetch: int = AUDIO_PREFETCH) -> int:
    """Lower the prefetch of ``pc``'s audio receivers to ``prefetch``; how many changed."""
    changed = 0
    for transceiver in pc.getTransceivers():
        if transceiver.kind != "audio":
            continue
        buffer = getattr(transceiver.receiver, "_RTCRtpReceiver__jitter_buffer", None)
        if isinstance(getattr(buffer, "_prefetch", None), int) and buffer._prefetch > prefetch:
            buffer._prefetch = prefetch
            changed += 1
    return changed
