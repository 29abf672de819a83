"""``ServerPeerConnection``: loopback host candidates for the server's own peers only.

aioice skips 127.0.0.1 when it gathers; these tests undo the suite's loopback-only patch
(``real_host_addresses``) so that aioice's real gathering runs, as in a user's server.
"""

from __future__ import annotations

import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection
from helpers import REAL_GET_HOST_ADDRESSES, make_offer

from comfywhip_nb.rtc.peer import ServerPeerConnection, is_loopback_host


def _host_candidates(sdp: str) -> list[str]:
    """Host candidate addresses of the first media section (bundled: the same in all)."""
    first = sdp.split("\r\nm=")[1]
    return [
        line.split()[4]
        for line in first.splitlines()
        if line.startswith("a=candidate:") and " typ host" in line
    ]


async def _answer(pc: RTCPeerConnection, offer: str) -> str:
    from aiortc import RTCSessionDescription

    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    return pc.localDescription.sdp


async def test_only_the_server_peer_gathers_a_loopback_candidate(real_host_addresses) -> None:
    client, offer = await make_offer(video=1, audio=1)
    server = ServerPeerConnection(RTCConfiguration(iceServers=[]), loopback=True)
    plain = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        server_hosts = _host_candidates(await _answer(server, offer))
        plain_hosts = _host_candidates(await _answer(plain, offer))
        assert server_hosts[0] == "127.0.0.1", server_hosts  # FFmpeg takes the first
        assert server_hosts.count("127.0.0.1") == 1
        assert "127.0.0.1" not in plain_hosts, plain_hosts
        assert aioice.ice.get_host_addresses is REAL_GET_HOST_ADDRESSES  # nothing patched
    finally:
        for pc in (client, server, plain):
            await pc.close()


async def test_without_loopback_the_server_peer_gathers_as_aioice_does(
    real_host_addresses,
) -> None:
    client, offer = await make_offer(video=1)
    server = ServerPeerConnection(RTCConfiguration(iceServers=[]), loopback=False)
    try:
        assert "127.0.0.1" not in _host_candidates(await _answer(server, offer))
    finally:
        await client.close()
        await server.close()


async def test_no_duplicate_when_aioice_already_gathers_loopback() -> None:
    """The suite's own patch makes aioice return 127.0.0.1: nothing is added twice."""
    client, offer = await make_offer(video=1)
    server = ServerPeerConnection(RTCConfiguration(iceServers=[]), loopback=True)
    try:
        assert _host_candidates(await _answer(server, offer)) == ["127.0.0.1"]
    finally:
        await client.close()
        await server.close()


def test_loopback_hosts() -> None:
    for host in ("127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback_host(host), host
    for host in ("0.0.0.0", "::", "192.168.1.2", "example.org", "", None):
        assert not is_loopback_host(host), host
