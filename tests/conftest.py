"""Shared fixtures: loopback-only ICE, a real WhipServer on a free port, a real aiortc peer."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator

import aioice.ice
import pytest

from comfywhip_nb.server import WhipServer


@pytest.fixture(autouse=True, scope="session")
def loopback_only_ice() -> Iterator[None]:
    """Keep ICE on 127.0.0.1: no other interface, no STUN (nothing else is reachable here)."""
    original = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"]
    yield
    aioice.ice.get_host_addresses = original


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


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; fail with a clear message."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s: {predicate}")


async def async_wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05
):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def server_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("comfywhip"))
