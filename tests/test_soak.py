"""Soak: many sessions and many servers in one process; nothing may pile up.

Three bounded loops (count *and* wall-clock deadline), each measured before and after:

* 500 create -> DELETE cycles: a fresh aiortc offer POSTed each time, answered by a real
  server-side RTCPeerConnection, then deleted;
* 30 full publish cycles: WHIPClient connects (ICE + DTLS), frames get processed, DELETE;
* 50 WhipServer start/stop cycles.

Measured: threads (all, and the server's ``comfywhip*`` ones), open file descriptors
(``/proc/self/fd``), asyncio tasks on the server loop and RSS (``VmRSS``). After each loop the
counts must come back to the baseline taken after a warm-up (imports, codecs and executor
threads are created lazily), within the small slack noted next to each check; RSS may grow by
less than 50 MB. ``pytest -s`` prints the figures.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from helpers import async_wait_until, make_offer, server_threads

from comfywhip_nb.client.sources import TestPatternTrack
from comfywhip_nb.client.whip_client import WHIPClient
from comfywhip_nb.server import WhipServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CREATE_DELETE_CYCLES = 500
PUBLISH_CYCLES = 30
START_STOP_CYCLES = 50
RSS_GROWTH_LIMIT_MB = 50.0
SDP = {"Content-Type": "application/sdp"}


@dataclass(frozen=True)
class Resources:
    threads: int
    server_threads: int
    fds: int
    tasks: int
    rss_mb: float

    def row(self, label: str) -> str:
        return (
            f"{label:<8} threads={self.threads:<4} comfywhip_threads={self.server_threads:<3} "
            f"fds={self.fds:<5} loop_tasks={self.tasks:<4} rss={self.rss_mb:.1f} MB"
        )


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def loop_tasks(server: WhipServer | None) -> int:
    if server is None or server._loop is None or not server.running:
        return 0

    async def count() -> int:
        return len(asyncio.all_tasks())

    return asyncio.run_coroutine_threadsafe(count(), server._loop).result(5)


def measure(server: WhipServer | None = None) -> Resources:
    gc.collect()
    return Resources(
        threads=threading.active_count(),
        server_threads=len(server_threads()),
        fds=len(os.listdir("/proc/self/fd")),
        tasks=loop_tasks(server),
        rss_mb=rss_mb(),
    )


async def settle(check: Callable[[], bool], timeout: float = 15.0) -> None:
    """Closing is asynchronous (DTLS close, worker joins): give it a bounded moment."""
    await async_wait_until(check, timeout=timeout, interval=0.2)


def report(name: str, cycles: int, seconds: float, before: Resources, after: Resources) -> None:
    print(f"\nsoak {name}: {cycles} cycles in {seconds:.1f} s")
    print("  " + before.row("before"))
    print("  " + after.row("after"))


def check_baseline(before: Resources, after: Resources, *, executor_slack: int) -> None:
    # the default executor keeps up to min(32, cpus + 4) idle threads once it has made them
    assert after.server_threads <= before.server_threads, (before, after)
    assert after.threads <= before.threads + executor_slack, (before, after)
    assert after.fds <= before.fds + 4, (before, after)
    assert after.tasks <= before.tasks + 2, (before, after)
    assert after.rss_mb - before.rss_mb < RSS_GROWTH_LIMIT_MB, (before, after)


EXECUTOR_SLACK = min(32, (os.cpu_count() or 1) + 4)


@pytest.fixture
async def soak_server() -> AsyncIterator[WhipServer]:
    srv = WhipServer(port=0, rate_limit=0, max_sessions=16)
    await asyncio.get_running_loop().run_in_executor(None, srv.start)
    try:
        yield srv
    finally:
        await asyncio.get_running_loop().run_in_executor(None, srv.stop)


async def _create_delete(http: aiohttp.ClientSession, server: WhipServer) -> None:
    pc, sdp = await make_offer()
    try:
        async with http.post(server.whip_url, data=sdp, headers=SDP) as resp:
            assert resp.status == 201, await resp.text()
            location = resp.headers["Location"]
        async with http.delete(location) as resp:
            assert resp.status == 200
    finally:
        await pc.close()  # type: ignore[attr-defined]


async def test_500_create_delete_cycles(soak_server: WhipServer) -> None:
    srv = soak_server
    async with aiohttp.ClientSession() as http:
        for _ in range(20):  # warm-up: lazy imports, executor threads, codec tables
            await _create_delete(http, srv)
        await settle(lambda: len(srv.sessions) == 0)
        before = measure(srv)
        started = time.monotonic()
        deadline = started + 120
        done = 0
        while done < CREATE_DELETE_CYCLES:
            assert time.monotonic() < deadline, f"only {done} cycles in 120 s"
            await _create_delete(http, srv)
            done += 1
        seconds = time.monotonic() - started
    await settle(lambda: len(srv.sessions) == 0 and loop_tasks(srv) <= before.tasks + 2)
    await settle(lambda: len(server_threads()) <= before.server_threads)
    after = measure(srv)
    report("create/DELETE", done, seconds, before, after)
    check_baseline(before, after, executor_slack=EXECUTOR_SLACK)


async def _publish_cycle(server: WhipServer) -> None:
    client = WHIPClient(server.whip_url)
    try:
        await client.publish(TestPatternTrack(96, 64, fps=30))
        await client.wait_connected(timeout=10)
        session_id = (client.resource_url or "").rsplit("/", 1)[1]
        await async_wait_until(
            lambda: (
                (info := server.sessions.get(session_id)) is not None and info.frames_processed >= 3
            ),
            timeout=10,
        )
    finally:
        await client.unpublish()


async def test_30_publish_connect_frames_delete_cycles(soak_server: WhipServer) -> None:
    srv = soak_server
    for _ in range(2):
        await _publish_cycle(srv)
    await settle(lambda: len(srv.sessions) == 0)
    await settle(lambda: len(server_threads()) == 1)
    before = measure(srv)
    started = time.monotonic()
    deadline = started + 120
    done = 0
    while done < PUBLISH_CYCLES:
        assert time.monotonic() < deadline, f"only {done} publish cycles in 120 s"
        await _publish_cycle(srv)
        done += 1
    seconds = time.monotonic() - started
    await settle(lambda: len(srv.sessions) == 0 and loop_tasks(srv) <= before.tasks + 2)
    await settle(lambda: len(server_threads()) <= before.server_threads)
    after = measure(srv)
    report("publish/connect/frames/DELETE", done, seconds, before, after)
    check_baseline(before, after, executor_slack=EXECUTOR_SLACK)


def test_50_server_start_stop_cycles() -> None:
    for _ in range(3):  # warm-up
        WhipServer(port=0).start().stop()
    before = measure()
    started = time.monotonic()
    deadline = started + 60
    done = 0
    while done < START_STOP_CYCLES:
        assert time.monotonic() < deadline, f"only {done} start/stop cycles in 60 s"
        srv = WhipServer(port=0).start()
        with urllib.request.urlopen(f"{srv.url}/health", timeout=5) as resp:
            assert resp.status == 200  # really serving, not just constructed
        srv.stop()
        assert not srv.running
        done += 1
    seconds = time.monotonic() - started
    after = measure()
    report("server start/stop", done, seconds, before, after)
    assert after.server_threads == before.server_threads == 0, (before, after)
    check_baseline(before, after, executor_slack=0)
