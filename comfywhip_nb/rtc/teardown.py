"""Breaking the reference cycles aiortc leaves behind when a peer connection closes.

A closed ``RTCPeerConnection`` stays in reference cycles that only Python's cycle collector
frees: its event handlers (closures over the session that owns it), and objects of its own
that point back at it. Frames and tensors hang off those cycles, so until a collection runs
a closed session keeps its memory (and, on a GPU, device memory the collector cannot see).
``break_peer_cycles`` cuts them after ``close()``, so reference counting frees everything.
"""

from __future__ import annotations

import contextlib
from typing import Any

__all__ = ["break_peer_cycles"]


def break_peer_cycles(pc: Any) -> None:
    """Cut the cycles of a closed peer connection (call after ``await pc.close()``)."""
    with contextlib.suppress(Exception):
        pc.remove_all_listeners()
