"""End to end over loopback: WhipServer in its thread + the real aiortc WHIPClient."""

from __future__ import annotations

import asyncio
import gc
import os
import socket

import aiohttp
import numpy as np
import pytest
from helpers import async_wait_until, server_threads

from comfywhip_nb.client.sources import TestPatternTrack
from comfywhip_nb.client.whip_client import PublishError, WHIPClient
from comfywhip_nb.server import WhipServer


def _frames_processed(server: WhipServer) -> int:
    return sum(i.frames_processed for i in server.sessions.values())


async def test_publish_process_delete_and_stop(server: WhipServer) -> None:
    track = TestPatternTrack(160, 120, fps=30, solid_color=(200, 40, 40))
    async with WHIPClient(server.whip_url) as client:
        await client.publish(track)
        await client.wait_connected(timeout=10)
        await async_wait_until(lambda: _frames_processed(server) >= 10, timeout=10)
        info = next(iter(server.sessions.values()))
        assert info.connection_state == "connected" and info.has_video
        assert (info.width, info.height) == (160, 120)
        pixel = np.asarray(server.latest_frame())[60, 80]
        assert np.abs(pixel.astype(int) - [200, 40, 40]).max() < 25  # passthrough by default
        location = client.resource_url
    # __aexit__ DELETEd the session and the server freed it
    await async_wait_until(lambda: len(server.sessions) == 0, timeout=5)
    async with aiohttp.ClientSession() as http:
        assert (await http.delete(location)).status == 200  # just ended: remembered
        assert (await http.delete(location + "x")).status == 404


async def test_trickle_offer_without_candidates_connects(server: WhipServer) -> None:
    client = WHIPClient(server.whip_url, trickle=True)
    try:
        await client.publish(TestPatternTrack(160, 120))
        assert "a=candidate" not in client.offer_sdp
        await client.wait_connected(timeout=10)
        await async_wait_until(lambda: _frames_processed(server) >= 5, timeout=10)
    finally:
        await client.unpublish()


async def test_audio_and_video_session(server: WhipServer) -> None:
    async with WHIPClient(server.whip_url) as client:
        await client.publish(TestPatternTrack(160, 120), audio=True)
        await client.wait_connected(timeout=10)
        await async_wait_until(
            lambda: next(iter(server.sessions.values())).audio_frames_in > 10, timeout=10
        )
        info = next(iter(server.sessions.values()))
        assert info.has_audio and info.has_video


async def test_client_raises_clear_error_on_refusal() -> None:
    with WhipServer(port=0, token="t0k") as srv:
        client = WHIPClient(srv.whip_url)
        with pytest.raises(PublishError) as info:
            await client.publish(TestPatternTrack(160, 120))
        assert info.value.status == 401
        assert "bearer token" in str(info.value)
        async with WHIPClient(srv.whip_url, token="t0k") as ok:
            await ok.publish(TestPatternTrack(160, 120))
            await ok.wait_connected(timeout=10)


async def test_publisher_that_vanishes_is_reaped() -> None:
    with WhipServer(port=0, media_timeout=1.5) as srv:
        client = WHIPClient(srv.whip_url)
        await client.publish(TestPatternTrack(160, 120))
        await client.wait_connected(timeout=10)
        await async_wait_until(lambda: _frames_processed(srv) >= 3, timeout=10)
        # vanish without DELETE: close the peer connection only
        await client.pc.close()
        await async_wait_until(lambda: len(srv.sessions) == 0, timeout=10)


async def test_offer_that_never_connects_is_reaped() -> None:
    from helpers import make_offer

    with WhipServer(port=0, connect_timeout=1.0) as srv:
        pc, sdp = await make_offer()
        await pc.close()  # the answer is never applied: ICE never completes
        async with aiohttp.ClientSession() as http:
            resp = await http.post(
                srv.whip_url, data=sdp, headers={"Content-Type": "application/sdp"}
            )
            assert resp.status == 201
        assert len(srv.sessions) == 1
        await async_wait_until(lambda: len(srv.sessions) == 0, timeout=10)


async def test_stop_closes_live_sessions_and_frees_port() -> None:
    srv = WhipServer(port=0).start()
    port = srv.port
    client = WHIPClient(srv.whip_url)
    await client.publish(TestPatternTrack(160, 120))
    await client.wait_connected(timeout=10)
    await asyncio.get_running_loop().run_in_executor(None, srv.stop)
    assert not srv.running
    assert server_threads() == []
    srv.stop()  # idempotent
    await client.unpublish()
    again = WhipServer(port=port).start()  # the port is free again: a new server binds it
    again.stop()


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_start_stop_20_times_leaks_nothing() -> None:
    WhipServer(port=0).start().stop()  # warm imports and lazy singletons
    gc.collect()
    threads, fds = server_threads(), _fd_count()
    for _ in range(20):
        srv = WhipServer(port=0)
        srv.start()
        srv.stop()
    gc.collect()
    assert server_threads() == threads
    assert _fd_count() <= fds + 2


def test_port_in_use_error_names_port_and_cell_rerun_replaces_server() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(OSError, match=f"127.0.0.1:{port}.*already in use.*port=0"):
            WhipServer(port=port).start()
    first = WhipServer(port=port).start()
    second = WhipServer(port=port).start()  # re-running the notebook cell
    try:
        assert not first.running and second.running
    finally:
        second.stop()
        first.stop()


def test_public_methods_from_another_thread_while_stopped() -> None:
    srv = WhipServer(port=0)
    assert dict(srv.sessions) == {} and srv.latest_frame() is None
    with pytest.raises(RuntimeError, match="not running"):
        srv.close_session("x")
