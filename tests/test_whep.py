"""WHEP egress end to end: an aiortc publisher (solid colour) + ImageInvert + aiortc viewers.

Everything is real loopback WebRTC against ``WhipServer(port=0)``; colours are compared with
a tolerance because the video goes through two lossy encodes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from graphs import INVERT
from helpers import async_wait_until, server_threads

from comfywhip_nb.client.sources import TestPatternTrack
from comfywhip_nb.client.whep_viewer import WHEPViewer
from comfywhip_nb.client.whip_client import WHIPClient
from comfywhip_nb.pipeline import egress
from comfywhip_nb.server_state import ServerConfig

RED = (200, 40, 40)
GREEN = (20, 200, 40)
TOLERANCE = 24


def inverted(rgb: tuple[int, int, int]) -> np.ndarray:
    return 255 - np.array(rgb, dtype=float)


def centre_colour(frame: av.VideoFrame) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24")
    h, w = rgb.shape[:2]
    return rgb[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].reshape(-1, 3).mean(axis=0)


class Viewer(WHEPViewer):
    """The package's WHEP viewer, plus a wait for a colour."""

    async def wait_colour(self, rgb: np.ndarray, timeout: float = 15.0) -> np.ndarray:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.latest is not None:
                last = centre_colour(self.latest)
                if np.abs(last - rgb).max() < TOLERANCE:
                    return last
            await asyncio.sleep(0.05)
        raise AssertionError(f"no frame close to {rgb} within {timeout} s; last {last}")


async def publish(server: Any, color: tuple[int, int, int], channel: str | None = None):
    client = WHIPClient(server.whip_url, channel_id=channel)
    await client.publish(TestPatternTrack(320, 240, 15, solid_color=color))
    return client


def feeds(server: Any) -> dict[Any, egress.Feed]:
    return dict(server.egress.feeds)


def whep_count(server: Any) -> int:
    return sum(1 for info in server.sessions.values() if info.kind == "whep")


async def test_viewer_receives_inverted_frames(server: Any) -> None:
    server.set_prompts(INVERT)
    publisher = await publish(server, RED)
    viewer = Viewer(f"{server.url}/whep/default")
    try:
        resp = await viewer.start()
        assert resp.status == 201
        assert resp.content_type == "application/sdp"
        assert viewer.location is not None and viewer.location.startswith(server.url + "/whep/")
        assert resp.headers["Accept-Patch"] == "application/trickle-ice-sdpfrag"
        assert "a=sendonly" in (await resp.text())
        await viewer.wait_colour(inverted(RED))
        assert whep_count(server) == 1
        states = {info.kind: info.video_state for info in server.sessions.values()}
        assert states == {"whip": "receiving", "whep": ""}  # a viewer waits for no keyframe
    finally:
        await viewer.close()
        await publisher.unpublish()


async def test_two_viewers_share_one_encoder(server: Any) -> None:
    server.set_prompts(INVERT)
    publisher = await publish(server, RED)
    viewers = [Viewer(f"{server.url}/whep/default") for _ in range(2)]
    try:
        for viewer in viewers:
            assert (await viewer.start()).status == 201
        for viewer in viewers:
            await viewer.wait_colour(inverted(RED))
        feed = feeds(server)[("channel", "default")]
        assert set(feed.encoders) == {"vp8"}
        encoder = feed.encoders["vp8"]
        processed = server.stats()[next(iter(server.core.sessions.values())).id]
        # once per processed frame (plus a joiner's re-encode), not once per viewer
        assert encoder.frames_encoded <= processed["frames_processed"] + 2
        assert all(t.codec == "vp8" for t in feed.tracks)
    finally:
        for viewer in viewers:
            await viewer.close()
        await publisher.unpublish()


async def test_h264_viewer(server: Any) -> None:
    server.set_prompts(INVERT)
    publisher = await publish(server, RED)
    viewer = Viewer(f"{server.url}/whep/default", codec="H264")
    try:
        assert (await viewer.start()).status == 201
        await viewer.wait_colour(inverted(RED))
        assert "h264" in feeds(server)[("channel", "default")].encoders
    finally:
        await viewer.close()
        await publisher.unpublish()


async def test_per_viewer_encoding_mode(server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """aiortc encodes per viewer; two viewers convert the same shared frame concurrently."""
    monkeypatch.setattr(server.config, "shared_encoding", False)
    server.set_prompts(INVERT)
    publisher = await publish(server, RED)
    viewers = [Viewer(f"{server.url}/whep/default") for _ in range(2)]
    try:
        for viewer in viewers:
            assert (await viewer.start()).status == 201
        for viewer in viewers:
            await viewer.wait_colour(inverted(RED))
        feed = feeds(server)[("channel", "default")]
        assert feed.encoders == {}
        assert all(t.codec is None for t in feed.tracks)
        counts = [viewer.frames for viewer in viewers]
        await asyncio.sleep(1.0)  # both keep receiving (15 fps source)
        assert all(v.frames - c >= 5 for v, c in zip(viewers, counts, strict=True)), counts
    finally:
        for viewer in viewers:
            await viewer.close()
        await publisher.unpublish()


async def test_viewer_before_publisher_and_publisher_change(server: Any) -> None:
    server.set_prompts(INVERT)
    viewer = Viewer(f"{server.url}/whep/late")
    first = second = None
    try:
        assert (await viewer.start()).status == 201
        await asyncio.sleep(0.5)
        assert viewer.frames == 0  # nothing to watch yet: the viewer waits
        first = await publish(server, RED, channel="late")
        await viewer.wait_colour(inverted(RED))
        await first.unpublish()
        second = await publish(server, GREEN, channel="late")
        await viewer.wait_colour(inverted(GREEN))
    finally:
        await viewer.close()
        for client in (first, second):
            if client is not None:
                await client.unpublish()


async def test_watch_one_session_by_id(server: Any) -> None:
    server.set_prompts(INVERT)
    publisher = await publish(server, RED, channel="studio")
    session_id = publisher.resource_url.rsplit("/", 1)[-1]
    viewer = Viewer(f"{server.url}/whep/{session_id}")
    try:
        resp = await viewer.start()
        assert resp.status == 201
        assert "/whep/studio/" in resp.headers["Location"]
        await viewer.wait_colour(inverted(RED))
        await publisher.unpublish()  # the watched session ends: so does the viewer
        await async_wait_until(lambda: whep_count(server) == 0, timeout=5)
        assert feeds(server) == {}
    finally:
        await viewer.close()
        await publisher.unpublish()


async def test_delete_frees_the_viewer(server: Any) -> None:
    server.set_prompts(INVERT)
    publisher = await publish(server, RED)
    bus_before = len(server.core.events)
    viewer = Viewer(f"{server.url}/whep/default")
    try:
        assert (await viewer.start()).status == 201
        await viewer.wait_colour(inverted(RED))
        source = next(s for s in server.core.sessions.values() if s.kind == "whip")
        assert source.frame_subscribers == 1
        assert await viewer.delete() == 200
        await async_wait_until(lambda: whep_count(server) == 0, timeout=5)
        await async_wait_until(lambda: not feeds(server), timeout=5)
        assert source.frame_subscribers == 0
        assert len(server.core.events) == bus_before  # the feed's subscription ended too
        assert await viewer.delete() == 200  # ended a moment ago: remembered
    finally:
        await viewer.close()
        await publisher.unpublish()


async def test_errors(server: Any) -> None:
    base = f"{server.url}/whep"
    recv_offer = sendonly_offer = ""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    recv_offer = pc.localDescription.sdp
    sendonly_offer = recv_offer.replace("a=recvonly", "a=sendonly")
    audio_only = recv_offer.replace("m=video", "m=audio")
    await pc.close()
    sdp = {"Content-Type": "application/sdp"}
    frag = {"Content-Type": "application/trickle-ice-sdpfrag"}
    async with aiohttp.ClientSession() as http:
        checks = [
            ("DELETE", f"{base}/default/nope", None, {}, 404),
            ("PATCH", f"{base}/default/nope", "a=end-of-candidates\r\n", frag, 404),
            ("POST", f"{base}/default", recv_offer, {"Content-Type": "text/plain"}, 415),
            ("POST", f"{base}/default", "hello", sdp, 400),
            ("POST", f"{base}/default", sendonly_offer, sdp, 422),
            ("POST", f"{base}/default", audio_only, sdp, 422),
            ("PUT", f"{base}/default", recv_offer, sdp, 405),
        ]
        for method, url, body, headers, status in checks:
            async with http.request(method, url, data=body, headers=headers) as resp:
                assert resp.status == status, (method, url, await resp.text())
                if status >= 400:
                    assert resp.content_type == "application/problem+json"
                    assert resp.headers["Access-Control-Allow-Origin"] == "*"
        preflight = {"Origin": "http://other", "Access-Control-Request-Method": "POST"}
        async with http.options(f"{base}/default", headers=preflight) as resp:
            assert resp.status == 200
            assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    assert whep_count(server) == 0


async def test_max_sessions_counts_viewers() -> None:
    from comfywhip_nb.server import WhipServer

    with WhipServer(port=0, max_sessions=1) as srv:
        first, second = Viewer(f"{srv.url}/whep/x"), Viewer(f"{srv.url}/whep/x")
        try:
            assert (await first.start()).status == 201
            resp = await second.start()
            assert resp.status == 503 and "Retry-After" in resp.headers
        finally:
            await first.close()
            await second.close()


async def test_viewer_that_never_connects_is_removed() -> None:
    from comfywhip_nb.server import WhipServer

    with WhipServer(port=0, connect_timeout=0.5) as srv:
        viewer = Viewer(f"{srv.url}/whep/default")
        try:
            assert (await viewer.start()).status == 201
            await viewer.pc.close()  # gone before ICE completes, and no DELETE
            await async_wait_until(lambda: not srv.sessions, timeout=5)
            assert not srv.egress.feeds
        finally:
            await viewer.close()


async def test_stop_with_live_viewers() -> None:
    from comfywhip_nb.server import WhipServer

    srv = WhipServer(port=0).start()
    srv.set_prompts(INVERT)
    publisher = await publish(srv, RED)
    viewers = [Viewer(f"{srv.url}/whep/default") for _ in range(2)]
    try:
        for viewer in viewers:
            assert (await viewer.start()).status == 201
        await viewers[0].wait_colour(inverted(RED))
        core, egress_of = srv.core, srv.egress
        started = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, srv.stop)
        assert time.monotonic() - started < 8
        assert not srv.running
        assert len(core.sessions) == 0
        assert not egress_of.feeds
        assert server_threads() == []
    finally:
        for viewer in viewers:
            await viewer.close()
        await publisher.unpublish()
        srv.stop()


async def test_sendrecv_publisher_gets_recvonly_answer_by_default(server: Any) -> None:
    """RFC 9725: the WHIP answer is recvonly unless the echo option is on."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    source = TestPatternTrack(320, 240, 15, solid_color=RED)
    try:
        pc.addTransceiver(source, direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        async with aiohttp.ClientSession() as http:
            headers = {"Content-Type": "application/sdp"}
            async with http.post(
                server.whip_url, data=pc.localDescription.sdp, headers=headers
            ) as r:
                assert r.status == 201
                answer = await r.text()
                location = r.headers["Location"]
            assert "a=recvonly" in answer and "a=sendrecv" not in answer
            async with http.delete(location) as r:
                assert r.status == 200
    finally:
        source.stop()
        await pc.close()


@pytest.mark.skipif(
    "echo_processed" not in ServerConfig.__dataclass_fields__,
    reason="core.create_session has no echo hook yet (ServerConfig.echo_processed)",
)
async def test_sendrecv_echo(server: Any) -> None:
    server.core.config.echo_processed = True
    server.set_prompts(INVERT)
    echo = Viewer(server.whip_url, sendrecv=True)
    source = TestPatternTrack(320, 240, 15, solid_color=RED)
    try:
        transceiver = echo.pc.addTransceiver(source, direction="sendrecv")
        await echo.pc.setLocalDescription(await echo.pc.createOffer())
        resp = await echo.http.post(
            echo.url, data=echo.pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}
        )
        assert resp.status == 201
        answer = await resp.text()
        assert "a=sendrecv" in answer
        await echo.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        assert transceiver.currentDirection == "sendrecv"
        await echo.wait_colour(inverted(RED))
    finally:
        source.stop()
        await echo.close()
