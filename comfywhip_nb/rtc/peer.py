"""The server's own peer connections: ``ServerPeerConnection``.

Every peer connection the server answers with (WHIP, WHEP, ``/offer``) is one of these, so
the two things the server does differently from a plain aiortc peer live in one place:

* DTLS: ECDHE-RSA cipher suites and TLS alert records (``dtls.py``), so GStreamer connects
  and a failed handshake can be explained.
* Loopback host candidates (``loopback=True``): aioice skips 127.0.0.1 when it gathers, so on
  a machine with only ``lo`` (containers without a network, CI) the answer has no candidate
  and a local publisher cannot connect. The server adds a 127.0.0.1 host candidate to *its
  own* gatherers, first in the answer (FFmpeg uses the first host candidate). Nothing in
  aioice is patched: other peers in the process gather as before.

The loopback candidate uses aioice's ``StunProtocol`` and its candidate helpers, and touches
two of its private lists (``_protocols``, ``_local_candidates``), as aioice's own gathering
does; ``tests/test_server_peer.py`` checks them against the installed aioice.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any

from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aioice.ice import StunProtocol
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from .dtls import use_server_dtls

__all__ = ["LOOPBACK_HOST", "ServerPeerConnection", "is_loopback_host"]

logger = logging.getLogger(__name__)

LOOPBACK_HOST = "127.0.0.1"


def is_loopback_host(host: str | None) -> bool:
    """Whether a bind address only serves this machine (``127.x``, ``::1``, localhost)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ServerPeerConnection(RTCPeerConnection):
    """aiortc's peer connection with the server's DTLS and optional loopback candidates."""

    def __init__(
        self, configuration: RTCConfiguration | None = None, *, loopback: bool = False
    ) -> None:
        super().__init__(configuration)
        use_server_dtls(self)
        self.loopback = loopback

    async def setLocalDescription(self, sessionDescription: RTCSessionDescription) -> None:
        if self.loopback:
            for gatherer in self._gatherers():
                _gather_loopback_too(gatherer._connection)
        await super().setLocalDescription(sessionDescription)

    def _gatherers(self) -> list[Any]:
        transports = [t.receiver.transport for t in self.getTransceivers()]
        if self.sctp is not None:
            transports.append(self.sctp.transport)
        gatherers = []
        for dtls in transports:
            gatherer = dtls.transport.iceGatherer
            if gatherer not in gatherers:
                gatherers.append(gatherer)
        return gatherers


def _gather_loopback_too(connection: Any) -> None:
    """Make one aioice ``Connection`` also gather a 127.0.0.1 host candidate (idempotent)."""
    if getattr(connection, "_comfywhip_loopback", False):
        return
    connection._comfywhip_loopback = True
    gather = connection.gather_candidates

    async def gather_with_loopback() -> None:
        started = connection._local_candidates_start
        await gather()
        if started or any(c.host == LOOPBACK_HOST for c in connection.local_candidates):
            return
        loop = asyncio.get_running_loop()
        added = []
        for component in sorted(connection._components):
            try:
                transport, protocol = await loop.create_datagram_endpoint(
                    lambda: StunProtocol(connection), local_addr=(LOOPBACK_HOST, 0)
                )
            except OSError as exc:  # no loopback interface: nothing to add
                logger.info("WHIP: no loopback ICE candidate: %s", exc)
                return
            host, port = transport.get_extra_info("sockname")[:2]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host),
                component=component,
                transport="udp",
                priority=candidate_priority(component, "host"),
                host=host,
                port=port,
                type="host",
            )
            connection._protocols.append(protocol)
            added.append(protocol.local_candidate)
        connection._local_candidates[:0] = added

    connection.gather_candidates = gather_with_loopback
