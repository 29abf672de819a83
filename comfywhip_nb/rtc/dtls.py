"""DTLS of the server's own peer connections: wider cipher suites and the alerts seen.

aiortc's DTLS context offers only ECDHE-ECDSA cipher suites. For an ``actpass`` offer its
answer says ``a=setup:active``, so the server is the DTLS client, and a publisher whose
certificate is RSA -- GStreamer's ``dtlsenc`` inside webrtcbin, so simple-whip-client and
gst-plugins-rs ``whipsink`` too -- finds no shared cipher and aborts the handshake. RFC 8827
§6.5 asks endpoints for ECDSA, but browsers and most servers accept ECDHE-RSA suites as well,
and offering them changes nothing for ECDSA peers (the DTLS server picks the suite that
matches its own key).

The hook is one subclass of aiortc's ``RTCCertificate`` that widens the cipher list and
records TLS alerts, installed by ``use_server_dtls`` on the server's peer connections only
(publishers created by this package, and anything else in the process, keep aiortc's
defaults). It relies on two aiortc internals, both checked by ``tests/test_dtls.py``:
``RTCCertificate._create_ssl_context`` and the peer connection's certificate list.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from aiortc import RTCCertificate, RTCPeerConnection
from OpenSSL import SSL

__all__ = [
    "SERVER_DTLS_CIPHERS",
    "DtlsAlerts",
    "ServerCertificate",
    "dtls_alerts",
    "use_server_dtls",
]

logger = logging.getLogger(__name__)

#: aiortc's own ECDSA suites first, then the ECDHE-RSA equivalents (OpenSSL names).
SERVER_DTLS_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-RSA-AES256-SHA",
    ]
)

#: TLS alert descriptions (RFC 8446 §6, RFC 5246 §7.2) by code.
ALERT_NAMES = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    40: "handshake_failure",
    42: "bad_certificate",
    43: "unsupported_certificate",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    50: "decode_error",
    51: "decrypt_error",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    90: "user_canceled",
    109: "missing_extension",
    110: "unsupported_extension",
}


@dataclass
class DtlsAlerts:
    """The TLS alerts one peer connection's DTLS sessions sent and received."""

    received: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    handshake_done: bool = False

    @property
    def peer_closed(self) -> bool:
        """The publisher ended DTLS cleanly (close_notify) after the handshake."""
        return self.handshake_done and "close_notify" in self.received

    def failure(self) -> str | None:
        """Why the handshake failed, in words, or None when no alert says so."""
        if self.handshake_done:
            return None
        if self.sent:  # OpenSSL (this server) refused what the publisher sent
            alert = self.sent[-1]
            if alert == "illegal_parameter":
                return (
                    f"peer certificate curve not supported (server sent alert {alert}; FFmpeg "
                    "built with gnutls sends a P-224 certificate: use an FFmpeg built with "
                    "OpenSSL, e.g. the imageio-ffmpeg wheel)"
                )
            return f"the server refused the publisher's handshake (server sent alert {alert})"
        if self.received:
            alert = self.received[-1]
            hint = " (no shared cipher suite or signature algorithm)"
            return f"publisher sent alert {alert}" + (hint if alert == "handshake_failure" else "")
        return None


class ServerCertificate(RTCCertificate):
    """aiortc's certificate with ECDHE-RSA suites added and TLS alerts recorded."""

    def __init__(self, key, cert) -> None:  # same signature as RTCCertificate
        super().__init__(key, cert)
        self.alerts = DtlsAlerts()

    def _create_ssl_context(self, srtp_profiles):  # aiortc's hook: one context per transport
        ctx = super()._create_ssl_context(srtp_profiles)
        ctx.set_cipher_list(SERVER_DTLS_CIPHERS.encode())
        ctx.set_info_callback(self._on_info)
        return ctx

    def _on_info(self, _conn: SSL.Connection, where: int, ret: int) -> None:
        if where & SSL.SSL_CB_HANDSHAKE_DONE:
            self.alerts.handshake_done = True
        if where & SSL.SSL_CB_ALERT:
            code = ret & 0xFF
            name = ALERT_NAMES.get(code, f"alert {code}")
            (self.alerts.received if where & SSL.SSL_CB_READ else self.alerts.sent).append(name)


def use_server_dtls(pc: RTCPeerConnection) -> RTCPeerConnection:
    """Give a fresh server-side ``pc`` the ``ServerCertificate`` (before any transceiver).

    aiortc generates the certificate in ``RTCPeerConnection.__init__`` and keeps it in a
    private list; it is re-wrapped (same key and certificate, so the same fingerprint).
    """
    certificates = getattr(pc, "_RTCPeerConnection__certificates", None)
    if not certificates or type(certificates[0]) is not RTCCertificate:
        logger.warning("WHIP: aiortc changed: cannot add ECDHE-RSA DTLS suites (GStreamer fails)")
        return pc
    old = certificates[0]
    certificates[0] = ServerCertificate(old._key, old._cert)
    return pc


def dtls_alerts(pc: RTCPeerConnection) -> DtlsAlerts | None:
    """The alerts recorded for ``pc`` (None for a peer without the server certificate)."""
    certificates = getattr(pc, "_RTCPeerConnection__certificates", None) or [None]
    cert = certificates[0]
    return cert.alerts if isinstance(cert, ServerCertificate) else None
