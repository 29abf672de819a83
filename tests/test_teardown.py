"""Issue 17: an ended session is freed by reference counting when its close finishes.

With the cycle collector off after a warm-up, 20 sessions of each kind are made with real
media over loopback and ended (WHIP: DELETE; WHEP: DELETE; ComfyStream /offer: the peer
closes; WHEP viewers and /offer peers receive audio too). Without ``gc.collect()``, nothing
of theirs may be left: no ``RTCPeerConnection``, ``Session``, ``FrameProcessor``, audio
track or feed, or frame tensor (weak references taken while they lived), no
more ``av.VideoFrame``s than after warm-up (they take no weak references, so they are
counted with ``gc.get_objects()``), and RSS within 20 MB of its value after warm-up.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from graphs import INVERT
from helpers import async_wait_until

from comfywhip_nb.client.sources import SineAudioTrack, TestPatternTrack
from comfywhip_nb.client.whep_viewer import WHEPViewer
from comfywhip_nb.client.whip_client import WHIPClient
from comfywhip_nb.rtc.teardown import break_peer_cycles
from comfywhip_nb.server import WhipServer

CYCLES = 20
WARMUP = 3
RSS_SLACK = 20 * 1024 * 1024

Refs = list[tuple[str, weakref.ref[Any]]]


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def video_frames() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is av.VideoFrame)


async def wait_processed(server: WhipServer, session_id: str) -> Any:
    """The server-side session once it has processed a frame (read for weak refs only)."""

    def ready() -> Any:
        session = server.core.sessions.get(session_id)
        return session if session is not None and session.processor.latest() else None

    return await async_wait_until(ready, timeout=15)


def remember(session: Any, refs: Refs) -> None:
    latest = session.processor.latest()
    refs += [
        ("Session", weakref.ref(session)),
        ("RTCPeerConnection", weakref.ref(session.pc)),
        ("FrameProcessor", weakref.ref(session.processor)),
        ("AudioProcessor", weakref.ref(session.audio_processor)),
        ("frame tensor", weakref.ref(latest.image)),
    ]


@pytest.fixture
async def server() -> AsyncIterator[WhipServer]:
    srv = WhipServer(port=0, prompts=INVERT, max_sessions=4).start()
    try:
        yield srv
    finally:
        await asyncio.get_running_loop().run_in_executor(None, srv.stop)


async def whip_cycle(server: WhipServer, refs: Refs) -> None:
    client = WHIPClient(server.whip_url)
    await client.publish(TestPatternTrack(160, 120, 15))
    assert client.resource_url is not None
    session_id = client.resource_url.rsplit("/", 1)[1]
    remember(await wait_processed(server, session_id), refs)
    refs.append(("client RTCPeerConnection", weakref.ref(client.pc)))
    await client.unpublish()  # DELETE
    await async_wait_until(lambda: session_id not in server.core.sessions, timeout=10)


async def whep_cycle(server: WhipServer, refs: Refs) -> None:
    viewer = WHEPViewer(f"{server.url}/whep/default", audio=True)
    assert (await viewer.start()).status == 201
    assert viewer.location is not None
    session_id = viewer.location.rsplit("/", 1)[1]
    await async_wait_until(lambda: viewer.frames > 0 and viewer.audio_frames > 0, timeout=15)
    session = server.core.sessions.get(session_id)
    feed = server.egress.feeds[("channel", "default")]
    refs += [(type(t).__name__, weakref.ref(t)) for t in (*feed.tracks, *feed.audio.tracks)]
    refs.append(("AudioFeed", weakref.ref(feed.audio)))
    del feed
    refs += [
        ("Session", weakref.ref(session)),
        ("RTCPeerConnection", weakref.ref(session.pc)),
        ("client RTCPeerConnection", weakref.ref(viewer.pc)),
    ]
    del session
    assert await viewer.delete() == 200
    await viewer.close()
    await async_wait_until(lambda: session_id not in server.core.sessions, timeout=10)


async def offer_cycle(server: WhipServer, refs: Refs) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(TestPatternTrack(160, 120, 15), "sendrecv")
    pc.addTransceiver(SineAudioTrack(), "sendrecv")
    received: list[str] = []

    async def consume(track: Any) -> None:
        try:
            while True:
                await track.recv()
                received.append(track.kind)
        except MediaStreamError:
            pass

    tasks: list[asyncio.Task[None]] = []
    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(consume(track))))
    await pc.setLocalDescription(await pc.createOffer())
    offer = {"sdp": pc.localDescription.sdp, "type": "offer"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{server.url}/offer", json={"offer": offer}) as resp,
    ):
        assert resp.status == 200, await resp.text()
        answer = await resp.json()
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    session_id = answer["session_id"]
    remember(await wait_processed(server, session_id), refs)
    await async_wait_until(lambda: {"audio", "video"} <= set(received), timeout=15)
    feed = server.egress.feeds[("session", session_id)]
    refs += [(type(t).__name__, weakref.ref(t)) for t in (*feed.tracks, *feed.audio.tracks)]
    refs.append(("AudioFeed", weakref.ref(feed.audio)))
    del feed
    refs.append(("client RTCPeerConnection", weakref.ref(pc)))
    await pc.close()  # the peer closes: the server ends the session (DTLS close)
    break_peer_cycles(pc)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    tasks.clear()
    await async_wait_until(lambda: session_id not in server.core.sessions, timeout=15)


async def run_cycles(
    server: WhipServer,
    cycle: Callable[[WhipServer, Refs], Awaitable[None]],
    count: int,
    refs: Refs,
    publisher: bool,
) -> None:
    """``count`` cycles; with ``publisher``, a WHIP publisher for them to watch, ended after
    (so what is counted afterwards is only what the ended sessions left behind)."""
    source = WHIPClient(server.whip_url) if publisher else None
    if source is not None:
        await source.publish(TestPatternTrack(160, 120, 15), audio=True)
    try:
        for _ in range(count):
            await cycle(server, refs)
    finally:
        if source is not None:
            await source.unpublish()
            await async_wait_until(lambda: not server.core.sessions, timeout=10)


async def churn(
    server: WhipServer,
    cycle: Callable[[WhipServer, Refs], Awaitable[None]],
    publisher: bool = False,
) -> None:
    await run_cycles(server, cycle, WARMUP, [], publisher)
    await asyncio.sleep(0.5)
    gc.collect()
    gc.disable()
    try:
        frames_before, rss_before = video_frames(), rss_bytes()
        refs: Refs = []
        await run_cycles(server, cycle, CYCLES, refs, publisher)
        await asyncio.sleep(0.5)  # let the last close's callbacks run
        alive = sorted({name for name, ref in refs if ref() is not None})
        assert alive == [], f"still alive after their sessions ended: {alive}"
        assert video_frames() <= frames_before, (frames_before, video_frames())
        grown = rss_bytes() - rss_before
        assert grown < RSS_SLACK, f"RSS grew {grown / 2**20:.1f} MB over {CYCLES} sessions"
    finally:
        gc.enable()


async def test_whip_sessions_are_freed_without_the_cycle_collector(server: WhipServer) -> None:
    await churn(server, whip_cycle)


async def test_whep_viewers_are_freed_without_the_cycle_collector(server: WhipServer) -> None:
    await churn(server, whep_cycle, publisher=True)


async def test_offer_sessions_are_freed_without_the_cycle_collector(server: WhipServer) -> None:
    await churn(server, offer_cycle)
