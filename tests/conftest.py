"""Shared fixtures: loopback-only ICE, a real WhipServer on a free port, a real aiortc peer."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import aioice.ice
import pytest
from helpers import REAL_GET_HOST_ADDRESSES

from comfywhip_nb.server import WhipServer


@pytest.fixture(autouse=True, scope="session")
def loopback_only_ice() -> Iterator[None]:
    """Keep ICE on 127.0.0.1: no other interface, no STUN (nothing else is reachable here)."""
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"]
    yield
    aioice.ice.get_host_addresses = REAL_GET_HOST_ADDRESSES


@pytest.fixture
def real_host_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo ``loopback_only_ice`` for one test: aioice sees the real interfaces again."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", REAL_GET_HOST_ADDRESSES)


@pytest.fixture(autouse=True)
def _log_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="comfywhip_nb")


@pytest.fixture
def server() -> Iterator[WhipServer]:
    """A running server on a free loopback port, stopped after the test."""
    srv = WhipServer(port=0, media_timeout=10.0)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
