"""Why a session ended: ``EndReason``, ``SessionEnd`` and reading it off a peer connection.

A session ends exactly once; the first recorded end wins (``Session.record_end``). The
reason is logged at INFO as ``WHIP: <id> ended (<reason>): <detail>``, shown as ``end_reason``
and ``end_detail`` in the session's stats and sent in the final SSE ``state`` event. Telling
ICE from DTLS matters: "ICE failed" sends a user chasing network problems when the
handshake after ICE was the problem (GStreamer's RSA certificate, FFmpeg's P-224 one).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from .dtls import dtls_alerts

__all__ = ["EndReason", "SessionEnd", "end_from_peer"]


class EndReason(str, Enum):
    """The ways a session ends; the value is what stats and events carry."""

    ICE_FAILED = "ice_failed"
    DTLS_FAILED = "dtls_failed"
    CLOSED_BY_PEER = "closed_by_peer"
    DELETE = "delete"
    MEDIA_TIMEOUT = "media_timeout"
    CONNECT_TIMEOUT = "connect_timeout"
    SERVER_STOP = "server_stop"
    CLOSED_BY_SERVER = "closed_by_server"
    """Closed from Python (``WhipServer.close_session``, the dashboard)."""
    SOURCE_ENDED = "source_ended"
    """A WHEP viewer whose watched publisher ended."""
    REJECTED = "rejected"
    """The offer could not be answered (no common codec, unusable SDP)."""


@dataclass(frozen=True)
class SessionEnd:
    """One session's end: the reason and a sentence for people."""

    reason: EndReason
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value


def end_from_peer(pc: Any, was_connected: bool) -> SessionEnd:
    """Why ``pc`` went ``failed`` or ``closed`` on its own (no DELETE, no timeout).

    Reads the DTLS and ICE transport states aiortc exposes and the TLS alerts recorded by
    ``dtls.ServerCertificate``.
    """
    alerts = dtls_alerts(pc)
    if alerts is not None and alerts.peer_closed:
        return SessionEnd(EndReason.CLOSED_BY_PEER, "the publisher closed DTLS (close_notify)")
    dtls_states, ice_states = set(), set()
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        if dtls is not None:
            dtls_states.add(dtls.state)
            ice_states.add(dtls.transport.state)
    if "failed" in dtls_states:
        why = alerts.failure() if alerts is not None else None
        return SessionEnd(
            EndReason.DTLS_FAILED,
            f"DTLS handshake failed: {why or 'no TLS alert (timed out or malformed)'}",
        )
    if "failed" in ice_states:
        detail = "ICE consent lost" if was_connected else "no ICE candidate pair succeeded"
        return SessionEnd(EndReason.ICE_FAILED, detail)
    if pc.connectionState == "failed":
        return SessionEnd(EndReason.ICE_FAILED, "the peer connection failed")
    return SessionEnd(EndReason.CLOSED_BY_PEER, "the peer connection closed")
