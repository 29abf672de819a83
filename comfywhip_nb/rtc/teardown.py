"""Breaking the reference cycles aiortc leaves behind when a peer connection closes.

A closed ``RTCPeerConnection`` stays in reference cycles that only Python's cycle collector
frees, and frames and tensors hang off them: until a collection runs, a closed session keeps
its memory (and, on a GPU, device memory the collector cannot see, since it counts objects,
not bytes). ``break_peer_cycles`` cuts them after ``close()``, so reference counting frees
the connection at once. The cycles (aiortc 1.16):

* **transport state handlers**: the connection registers its bound methods
  ``__updateConnectionState`` / ``__updateIceConnectionState`` /
  ``__updateIceGatheringState`` as ``statechange`` handlers on every ICE gatherer, ICE
  transport and DTLS transport it creates, and keeps those transports in its own sets:
  pc -> transports -> handler -> pc. ``close()`` removes the connection's own listeners,
  not the ones it left on its transports.
* **our handlers on the connection** (``track``, ``connectionstatechange``, ``datachannel``)
  close over the session or the core; ``close()`` drops them only when it runs to the end.
"""

from __future__ import annotations

import contextlib
from typing import Any

__all__ = ["break_peer_cycles"]


def _emitters(pc: Any) -> list[Any]:
    """The connection and every event emitter of its transports."""
    found: list[Any] = [pc]
    transports = set(getattr(pc, "_RTCPeerConnection__dtlsTransports", ()) or ())
    for transceiver in pc.getTransceivers():
        transports.add(transceiver.receiver.transport)
    sctp = getattr(pc, "sctp", None)
    if sctp is not None:
        found.append(sctp)
        transports.add(sctp.transport)
    for dtls in transports:
        if dtls is None:
            continue
        ice = dtls.transport
        found += [dtls, ice, getattr(ice, "iceGatherer", None)]
    found += list(getattr(pc, "_RTCPeerConnection__iceTransports", ()) or ())
    return [e for e in found if e is not None]


def break_peer_cycles(pc: Any) -> None:
    """Cut the cycles of a closed peer connection (call after ``await pc.close()``)."""
    for emitter in _emitters(pc):
        with contextlib.suppress(Exception):
            emitter.remove_all_listeners()
