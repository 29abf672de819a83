"""Server options that need no media: HTTPS, ICE server configuration, prompt defaults."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import make_offer

from comfywhip_nb.rtc.ice import IceServer
from comfywhip_nb.server import WhipServer


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_with_cert_and_key(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    with WhipServer(port=0, cert=cert, key=key) as srv:
        assert srv.whip_url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        pc, sdp = await make_offer()
        try:
            async with aiohttp.ClientSession() as http:
                resp = await http.post(
                    srv.whip_url,
                    data=sdp,
                    headers={"Content-Type": "application/sdp"},
                    ssl=context,
                )
                assert resp.status == 201
                assert resp.headers["Location"].startswith("https://127.0.0.1:")
        finally:
            await pc.close()


def test_https_needs_both_cert_and_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both cert and key"):
        WhipServer(port=0, cert=tmp_path / "c.pem")


def test_ice_servers_configure_the_servers_own_peer_connections() -> None:
    turn = IceServer(urls="turn:turn.example.net:3478", username="u", credential="c")
    with WhipServer(port=0, ice_servers=[turn, "stun:stun.example.net:3478"]) as srv:
        config = srv.core.rtc_configuration()
        urls = [s.urls for s in config.iceServers]
        assert urls == ["turn:turn.example.net:3478", "stun:stun.example.net:3478"] or urls == [
            ["turn:turn.example.net:3478"],
            ["stun:stun.example.net:3478"],
        ]
        assert config.iceServers[0].username == "u"
        assert config.iceServers[0].credential == "c"


def test_ice_servers_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYWHIP_ICE_SERVERS", "stun:a.example:3478;turn:b.example:3478,us,cr")
    srv = WhipServer(port=0)
    assert [s.username for s in srv.config.ice_servers] == [None, "us"]
    monkeypatch.delenv("COMFYWHIP_ICE_SERVERS")
    assert WhipServer(port=0).config.ice_servers == []  # default: no STUN at all


def test_invalid_constructor_arguments_are_clear() -> None:
    with pytest.raises(ValueError, match="max_sessions"):
        WhipServer(max_sessions=0)
    with pytest.raises(ValueError, match="stun"):
        WhipServer(ice_servers=["http://not-ice.example"])
    from comfywhip_nb.prompts import PromptError

    with pytest.raises(PromptError, match="NoSuchNode"):
        WhipServer(prompts={"1": {"class_type": "NoSuchNode", "inputs": {}}})


def test_set_prompts_before_start_and_validation_first() -> None:
    from comfywhip_nb.prompts import PromptError

    srv = WhipServer(port=0)
    version = srv.set_prompts(
        {
            "1": {"class_type": "LoadTensor", "inputs": {}},
            "2": {"class_type": "SaveTensor", "inputs": {"images": ["1", 0]}},
        }
    )
    assert version == 1
    with pytest.raises(PromptError):
        srv.set_prompts({"1": {"class_type": "ImageBlur", "inputs": {"blur_radius": 999}}})
    assert srv._store.channel_entry(None).version == 1  # nothing changed on error
