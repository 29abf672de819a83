"""Faults inside and around a session: broken nodes, racing requests, dead or silent peers.

Real server, real aiortc publishers and viewers over 127.0.0.1. What must hold every time:
the session (or the server) survives, ``last_error`` says what went wrong, nothing is left
running afterwards, and no request is answered with a 5xx.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import torch
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from helpers import async_wait_until, server_threads

from comfywhip_nb.client.sources import TestPatternTrack
from comfywhip_nb.client.whip_client import WHIPClient, strip_candidates
from comfywhip_nb.prompts import register_nodes
from comfywhip_nb.prompts.registry import unregister_nodes
from comfywhip_nb.server import WhipServer

pytestmark = pytest.mark.timeout(90)

SDP = {"Content-Type": "application/sdp"}
FRAG = {"Content-Type": "application/trickle-ice-sdpfrag"}

#: set to let every hung test node return (each waits at most 20 s anyway)
RELEASE_HUNG = threading.Event()


# -- nodes that misbehave (ComfyUI contract) ------------------------------------------------
class _TestNode:
    CATEGORY = "tests/faults"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",)}}


class FaultRaises(_TestNode):
    def run(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        raise RuntimeError("boom from a test node")


class FaultHangs(_TestNode):
    def run(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        RELEASE_HUNG.wait(20)
        return (image,)


class FaultDropsBatch(_TestNode):
    def run(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        return (image[0],)  # [H,W,3]: the batch dimension is gone


class FaultUint8(_TestNode):
    def run(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        return ((image * 255).to(torch.uint8),)


class FaultFourChannels(_TestNode):
    def run(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        return (torch.cat([image, image[..., :1]], dim=-1),)


class FaultNotATensor(_TestNode):
    def run(self, image: torch.Tensor) -> tuple[str]:
        return ("not an image",)


class FaultNotATuple(_TestNode):
    def run(self, image: torch.Tensor) -> torch.Tensor:
        return image  # ComfyUI nodes return a tuple of outputs


FAULT_NODES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        FaultRaises,
        FaultHangs,
        FaultDropsBatch,
        FaultUint8,
        FaultFourChannels,
        FaultNotATensor,
        FaultNotATuple,
    )
}


def graph(class_type: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadTensor", "inputs": {}},
        "2": {"class_type": class_type, "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
    }


@pytest.fixture(scope="module", autouse=True)
def fault_nodes() -> Iterator[None]:
    register_nodes(FAULT_NODES)
    try:
        yield
    finally:
        RELEASE_HUNG.set()
        unregister_nodes(*FAULT_NODES)


# -- helpers --------------------------------------------------------------------------------
@pytest.fixture
async def srv() -> AsyncIterator[WhipServer]:
    server = WhipServer(port=0, frame_timeout=0.5, media_timeout=10.0)
    await asyncio.get_running_loop().run_in_executor(None, server.start)
    try:
        yield server
    finally:
        await asyncio.get_running_loop().run_in_executor(None, server.stop)


def info(server: WhipServer, session_id: str) -> Any:
    return server.sessions.get(session_id)


def session_id_of(client: WHIPClient) -> str:
    assert client.resource_url is not None
    return client.resource_url.rsplit("/", 1)[1]


async def publish(server: WhipServer, **kwargs: Any) -> tuple[WHIPClient, str]:
    client = WHIPClient(server.whip_url, **kwargs)
    await client.publish(TestPatternTrack(96, 64, fps=20))
    await client.wait_connected(timeout=10)
    return client, session_id_of(client)


async def frames_keep_coming(server: WhipServer, session_id: str, more: int = 5) -> None:
    start = info(server, session_id).frames_processed
    await async_wait_until(lambda: info(server, session_id).frames_processed >= start + more)


def loop_tasks(server: WhipServer) -> int:
    async def count() -> int:
        return len(asyncio.all_tasks())

    assert server._loop is not None
    return asyncio.run_coroutine_threadsafe(count(), server._loop).result(5)


async def status_of(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> int:
    async with http.request(method, url, **kwargs) as resp:
        return resp.status


def no_unhandled_errors(caplog: pytest.LogCaptureFixture) -> None:
    bad = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith(("comfywhip_nb", "aiohttp"))
    ]
    assert not bad, bad


# -- nodes that raise, hang, or return the wrong thing -----------------------------------------
async def test_node_that_raises_is_reported_and_the_stream_survives(
    srv: WhipServer, caplog: pytest.LogCaptureFixture
) -> None:
    client, sid = await publish(srv)
    try:
        await frames_keep_coming(srv, sid)
        version = srv.set_prompts(graph("FaultRaises"))
        await async_wait_until(lambda: info(srv, sid).last_error is not None)
        error = info(srv, sid).last_error
        assert "node 2 (FaultRaises)" in error and "boom from a test node" in error
        assert info(srv, sid).prompt_version == version
        await frames_keep_coming(srv, sid)  # passthrough while the prompt is benched
        assert info(srv, sid).connection_state == "connected"
        async with aiohttp.ClientSession() as http, http.get(f"{srv.url}/whip-stats") as resp:
            assert "boom from a test node" in (await resp.json())[sid]["last_error"]
        # a good prompt clears the error and runs again
        srv.set_prompts(None)
        await frames_keep_coming(srv, sid)
        assert info(srv, sid).last_error is None
    finally:
        await client.unpublish()


async def test_node_that_hangs_is_skipped_after_the_frame_budget(srv: WhipServer) -> None:
    RELEASE_HUNG.clear()
    client, sid = await publish(srv)
    try:
        await frames_keep_coming(srv, sid)
        started = time.monotonic()
        srv.set_prompts(graph("FaultHangs"))
        await async_wait_until(lambda: info(srv, sid).last_error is not None, timeout=5)
        assert time.monotonic() - started < 5  # the budget is 0.5 s (slack for a busy CI)
        assert "timed out after 0.5 s" in info(srv, sid).last_error
        await frames_keep_coming(srv, sid)  # the hung prompt is benched: frames pass through
        # re-arm it: the node hangs again, and DELETE still answers at once
        srv.set_prompts(graph("FaultHangs"))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        async with aiohttp.ClientSession() as http, http.delete(client.resource_url) as resp:
            assert resp.status == 200
        assert time.monotonic() - started < 5
        await async_wait_until(lambda: sid not in srv.sessions)
    finally:
        RELEASE_HUNG.set()  # the abandoned helper threads return and end
        await client.unpublish()
    await async_wait_until(lambda: server_threads() == ["comfywhip-server"], timeout=10)


@pytest.mark.parametrize(
    ("class_type", "expected"),
    [
        ("FaultDropsBatch", "shape"),
        ("FaultUint8", "dtype torch.uint8"),
        ("FaultFourChannels", "shape"),
        ("FaultNotATensor", "str"),
        ("FaultNotATuple", "tuple"),
    ],
)
async def test_node_with_wrong_output_is_reported(
    srv: WhipServer, class_type: str, expected: str
) -> None:
    client, sid = await publish(srv)
    try:
        await frames_keep_coming(srv, sid)
        srv.set_prompts(graph(class_type))
        await async_wait_until(lambda: info(srv, sid).last_error is not None)
        assert expected in info(srv, sid).last_error
        dropped = info(srv, sid).frames_dropped
        await frames_keep_coming(srv, sid)
        assert info(srv, sid).frames_dropped >= dropped  # counted, never negative/reset
        assert info(srv, sid).connection_state == "connected"
    finally:
        await client.unpublish()


# -- racing requests --------------------------------------------------------------------------
async def test_delete_racing_ice_failure(srv: WhipServer, caplog: pytest.LogCaptureFixture) -> None:
    """DELETE, the server's own "ICE failed" close and the peer going away, all at once."""
    assert srv._loop is not None
    for _round in range(3):
        client, sid = await publish(srv)
        assert client.pc is not None and client.resource_url is not None
        ice_failed = asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(srv.core.close_session(sid, "ICE failed"), srv._loop)
        )
        async with aiohttp.ClientSession() as http:
            closed, status, _ = await asyncio.gather(
                ice_failed, status_of(http, "DELETE", client.resource_url), client.pc.close()
            )
        assert status in (200, 404)
        assert closed or status == 200  # exactly one of them did the work, and it happened
        await client.unpublish()  # its own DELETE now gets 404: fine
        await async_wait_until(lambda: len(srv.sessions) == 0)
    await async_wait_until(lambda: server_threads() == ["comfywhip-server"])
    no_unhandled_errors(caplog)


async def test_patch_racing_delete(srv: WhipServer, caplog: pytest.LogCaptureFixture) -> None:
    """Trickle PATCHes sent together with the DELETE of the same session."""
    async with aiohttp.ClientSession() as http:
        for _round in range(5):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTransceiver(TestPatternTrack(64, 48), direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            offer = pc.localDescription.sdp
            async with http.post(srv.whip_url, data=strip_candidates(offer), headers=SDP) as r:
                assert r.status == 201
                location, etag = r.headers["Location"], r.headers["ETag"]
            candidates = [x for x in offer.splitlines() if x.startswith("a=candidate:")]
            fragment = "\r\n".join(
                ["m=video 9 UDP/TLS/RTP/SAVPF 0", "a=mid:0", *candidates, "a=end-of-candidates"]
            )

            headers = {**FRAG, "If-Match": etag}
            statuses = await asyncio.gather(
                status_of(http, "PATCH", location, data=fragment, headers=headers),
                status_of(http, "DELETE", location),
                status_of(http, "PATCH", location, data=fragment, headers=headers),
            )
            assert statuses[0] in (204, 404) and statuses[2] in (204, 404), statuses
            assert statuses[1] == 200, statuses
            await pc.close()
    await async_wait_until(lambda: len(srv.sessions) == 0)
    no_unhandled_errors(caplog)


async def test_patch_whose_body_arrives_after_the_delete(srv: WhipServer) -> None:
    """The PATCH handler is waiting for its body when the session is deleted underneath it."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(TestPatternTrack(64, 48), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                srv.whip_url, data=strip_candidates(pc.localDescription.sdp), headers=SDP
            ) as r:
                assert r.status == 201
                location = r.headers["Location"]
            path = "/" + location.split("/", 3)[3]
            body = (
                b"m=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
                b"a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n"
            )
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(
                b"PATCH %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: "
                b"application/trickle-ice-sdpfrag\r\nContent-Length: %d\r\nConnection: close"
                b"\r\n\r\n%s" % (path.encode(), srv.port, len(body), body[:10])
            )
            await writer.drain()
            await asyncio.sleep(0.2)  # the handler now waits in read_body
            async with http.delete(location) as resp:
                assert resp.status == 200
            writer.write(body[10:])
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), 5)
            writer.close()
            status = int(status_line.split()[1])
            assert status == 404, status_line  # the session is gone: not 204, never 5xx
    finally:
        await pc.close()
    assert len(srv.sessions) == 0


async def test_double_delete(srv: WhipServer) -> None:
    client, sid = await publish(srv)
    try:
        url = client.resource_url
        assert url is not None
        async with aiohttp.ClientSession() as http:
            together = sorted(
                await asyncio.gather(status_of(http, "DELETE", url), status_of(http, "DELETE", url))
            )
            assert together == [200, 200], together  # the second finds it ended
            assert await status_of(http, "DELETE", url) == 200  # and once more, later
    finally:
        await client.unpublish()
    assert sid not in srv.sessions


# -- stopping, dead and silent peers -----------------------------------------------------------
async def test_stop_with_live_sessions_and_viewers_closes_everything() -> None:
    srv = WhipServer(port=0)
    await asyncio.get_running_loop().run_in_executor(None, srv.start)
    publishers: list[WHIPClient] = []
    viewers: list[RTCPeerConnection] = []
    try:
        for _ in range(2):
            client, sid = await publish(srv)
            publishers.append(client)
            await frames_keep_coming(srv, sid, more=2)
        async with aiohttp.ClientSession() as http:
            for _ in range(2):
                viewer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                viewer.addTransceiver("video", direction="recvonly")
                await viewer.setLocalDescription(await viewer.createOffer())
                async with http.post(
                    f"{srv.url}/whep/default", data=viewer.localDescription.sdp, headers=SDP
                ) as resp:
                    assert resp.status == 201, await resp.text()
                    answer = await resp.text()
                await viewer.setRemoteDescription(RTCSessionDescription(answer, "answer"))
                viewers.append(viewer)
        await async_wait_until(lambda: all(v.connectionState == "connected" for v in viewers))
        assert len(srv.sessions) == 4
        tasks_before = loop_tasks(srv)
        assert tasks_before > 0
        started = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, srv.stop)
        assert time.monotonic() - started < 8
        assert not srv.running and server_threads() == []
        # the peers notice: DTLS close_notify from the server ends their connections
        await async_wait_until(
            lambda: (
                all(c.connection_state in ("closed", "failed") for c in publishers)
                and all(v.connectionState in ("closed", "failed") for v in viewers)
            ),
            timeout=15,
        )
    finally:
        for client in publishers:
            await client.unpublish()
        for viewer in viewers:
            await viewer.close()
        srv.stop()


class SilentTrack(MediaStreamTrack):
    """A video track that never produces a frame: the peer connects, no RTP ever flows."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._ended = asyncio.Event()

    async def recv(self) -> Any:
        await asyncio.wait_for(self._ended.wait(), 60)
        raise MediaStreamError

    def stop(self) -> None:
        self._ended.set()
        super().stop()


async def test_publisher_that_connects_but_never_sends_media_is_removed() -> None:
    srv = WhipServer(port=0, media_timeout=1.5)
    await asyncio.get_running_loop().run_in_executor(None, srv.start)
    client = WHIPClient(srv.whip_url)
    try:
        await client.publish(SilentTrack())
        await client.wait_connected(timeout=10)
        sid = session_id_of(client)
        assert info(srv, sid).frames_in == 0
        started = time.monotonic()
        await async_wait_until(lambda: sid not in srv.sessions, timeout=10)
        assert 1.0 < time.monotonic() - started < 8  # media_timeout 1.5 s, reaper every 1 s
        await async_wait_until(lambda: server_threads() == ["comfywhip-server"])
    finally:
        await client.unpublish()
        await asyncio.get_running_loop().run_in_executor(None, srv.stop)


async def test_publisher_whose_media_stops_while_ice_stays_up_is_removed() -> None:
    """The peer keeps answering ICE consent checks but sends no more RTP (a frozen encoder,
    a paused camera): the no-media timeout still ends the session."""
    srv = WhipServer(port=0, media_timeout=1.5)
    await asyncio.get_running_loop().run_in_executor(None, srv.start)
    client = WHIPClient(srv.whip_url)
    track = TestPatternTrack(96, 64, fps=20)
    try:
        await client.publish(track)
        await client.wait_connected(timeout=10)
        sid = session_id_of(client)
        await frames_keep_coming(srv, sid, more=3)
        track.stop()  # the sender stops; the peer connection stays open
        await asyncio.sleep(0.5)
        assert client.pc is not None and client.pc.connectionState == "connected"
        assert sid in srv.sessions
        await async_wait_until(lambda: sid not in srv.sessions, timeout=10)
        # the server closed its side, and the peer is told (DTLS close_notify)
        await async_wait_until(lambda: client.connection_state in ("closed", "failed"))
    finally:
        await client.unpublish()
        await asyncio.get_running_loop().run_in_executor(None, srv.stop)


def test_dead_peer_timeouts_default_to_at_most_15_s() -> None:
    config = WhipServer(port=0).config
    assert 0 < config.media_timeout <= 15
    assert 0 < config.connect_timeout <= 60
    assert 0 < config.frame_timeout <= 15
