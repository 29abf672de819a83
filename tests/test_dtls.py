"""The server's DTLS hook (``comfywhip_nb/dtls.py``) against the installed aiortc/OpenSSL.

The end-to-end proof is ``test_gstreamer_publisher.py`` (GStreamer's RSA certificate only
connects with the ECDHE-RSA suites); these checks catch an aiortc upgrade that moves the
internals the hook relies on, and show what a failed handshake is reported as.
"""

from __future__ import annotations

import asyncio

from aiortc import RTCCertificate, RTCConfiguration, RTCPeerConnection
from aiortc.rtcdtlstransport import SRTP_AES128_CM_SHA1_80, generate_certificate
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL

from comfywhip_nb.client.sources import TestPatternTrack
from comfywhip_nb.rtc.dtls import ServerCertificate, dtls_alerts, use_server_dtls
from comfywhip_nb.rtc.end_reason import EndReason, end_from_peer


def _ciphers(certificate: RTCCertificate) -> list[str]:
    return SSL.Connection(
        certificate._create_ssl_context([SRTP_AES128_CM_SHA1_80])
    ).get_cipher_list()


async def test_server_peers_offer_ecdhe_rsa_suites_and_plain_peers_do_not() -> None:
    plain = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    server = use_server_dtls(RTCPeerConnection(RTCConfiguration(iceServers=[])))
    try:
        plain_cert = plain._RTCPeerConnection__certificates[0]
        server_cert = server._RTCPeerConnection__certificates[0]
        assert isinstance(server_cert, ServerCertificate)
        assert not any("ECDHE-RSA" in c for c in _ciphers(plain_cert))
        ciphers = _ciphers(server_cert)
        assert "ECDHE-RSA-AES128-GCM-SHA256" in ciphers
        assert "ECDHE-ECDSA-AES128-GCM-SHA256" in ciphers
        assert dtls_alerts(plain) is None and dtls_alerts(server) is not None
    finally:
        await plain.close()
        await server.close()


async def test_rewrapping_keeps_the_fingerprint() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    before = pc._RTCPeerConnection__certificates[0].getFingerprints()
    use_server_dtls(pc)
    use_server_dtls(pc)  # idempotent
    assert pc._RTCPeerConnection__certificates[0].getFingerprints() == before
    await pc.close()


async def test_a_refused_handshake_is_reported_as_dtls_not_ice() -> None:
    """A publisher whose DTLS certificate is P-224 (as gnutls FFmpeg builds send) fails the
    handshake after ICE succeeded: the end says DTLS and names the TLS alert."""
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    key = ec.generate_private_key(ec.SECP224R1())
    client._RTCPeerConnection__certificates = [RTCCertificate(key, generate_certificate(key))]
    client.addTransceiver(TestPatternTrack(64, 48), direction="sendonly")
    server = use_server_dtls(RTCPeerConnection(RTCConfiguration(iceServers=[])))
    try:
        await client.setLocalDescription(await client.createOffer())
        await server.setRemoteDescription(client.localDescription)
        await server.setLocalDescription(await server.createAnswer())
        await client.setRemoteDescription(server.localDescription)
        for _ in range(200):
            if server.connectionState in ("failed", "closed", "connected"):
                break
            await asyncio.sleep(0.05)
        assert server.connectionState == "failed"
        end = end_from_peer(server, was_connected=False)
        assert end.reason is EndReason.DTLS_FAILED, end
        assert "alert handshake_failure" in end.detail, end
        ice = server.getTransceivers()[0].receiver.transport.transport
        assert ice.state == "completed"  # ICE itself worked
    finally:
        await client.close()
        await server.close()
