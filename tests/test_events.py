"""The WHIP server-sent-events extension: a real publisher, a real SSE reader."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiortc import RTCSessionDescription
from helpers import make_offer

from comfywhip_nb.http.events import MAX_PENDING, EventFeed, EventHub, format_event
from comfywhip_nb.rtc.sessions import SessionInfo
from comfywhip_nb.server import WhipServer

REL = "urn:ietf:params:whip:ext:core:server-sent-events"
INVERT = {
    "1": {"class_type": "LoadTensor", "inputs": {}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
}


async def read_events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Parse ``text/event-stream`` into (event, data) pairs until the server ends it."""
    event, data = "message", ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if data:
                yield event, json.loads(data)
            event, data = "message", ""
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data += line[6:]


async def next_event(
    events: AsyncIterator[tuple[str, dict[str, Any]]], wanted: str, timeout: float = 10.0
) -> dict[str, Any]:
    """The next ``wanted`` event (others are skipped), within ``timeout`` seconds."""

    async def find() -> dict[str, Any]:
        async for event, data in events:
            if event == wanted:
                return data
        raise AssertionError(f"stream ended before a {wanted!r} event")

    return await asyncio.wait_for(find(), timeout)


async def test_event_stream_of_a_live_whip_session(server: WhipServer) -> None:
    pc, sdp = await make_offer()
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        try:
            headers = {"Content-Type": "application/sdp"}
            async with http.post(server.whip_url, data=sdp, headers=headers) as resp:
                assert resp.status == 201
                location = resp.headers["Location"]
                links = resp.headers.getall("Link")
                answer = await resp.text()
            url = f"{location}/events"
            assert any(f"<{url}>" in link and f'rel="{REL}"' in link for link in links), links
            async with http.get(url) as stream:
                assert stream.status == 200
                assert stream.content_type == "text/event-stream"
                events = read_events(stream)
                first = await next_event(events, "state")
                assert first["session_id"] == location.rsplit("/", 1)[1]
                initial = await next_event(events, "prompt")
                await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
                state = first
                while state["state"] != "connected":
                    state = await next_event(events, "state")

                async with http.post(f"{server.url}/prompts", json=INVERT) as resp:
                    assert resp.status == 200
                    version = (await resp.json())["version"]
                prompt = await next_event(events, "prompt")
                assert prompt["version"] == version != initial["version"]
                stats = await next_event(events, "stats", timeout=5)
                assert stats["connection_state"] == "connected" and "fps_in" in stats

                async with http.delete(location) as resp:
                    assert resp.status == 200
                rest = [item async for item in events]  # ends: the server closed the stream
                assert rest[-1] == (
                    "state",
                    {
                        "session_id": first["session_id"],
                        "state": "closed",
                        "end_reason": "delete",
                        "end_detail": "DELETE from the client",
                    },
                )
        finally:
            await pc.close()
        async with http.get(url) as resp:  # the session is gone, and so is its stream
            assert resp.status == 404


async def test_unknown_session_is_404(server: WhipServer) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{server.whip_url}/nope/events") as resp,
    ):
        assert resp.status == 404
        assert resp.content_type == "application/problem+json"


def test_slow_client_keeps_only_the_newest_stats() -> None:
    feed = EventFeed(max_pending=4)
    for n in range(10):
        feed.push("stats", {"n": n})
    assert feed.take() == [("stats", {"n": 9})]
    for n in range(6):
        feed.push("state", {"n": n})
    feed.push("stats", {"n": 99})
    assert feed.dropped == 3
    assert [data["n"] for _, data in feed.take()] == [3, 4, 5, 99]
    feed.end()
    feed.push("state", {"n": 7})  # nothing is queued after the end
    assert feed.take() == [] and feed.ended
    assert MAX_PENDING >= 16


class _FakeSession:
    id = "s1"

    def __init__(self) -> None:
        self.error: str | None = None

    def info(self) -> SessionInfo:
        return SessionInfo(
            id=self.id,
            kind="whip",
            created_at=time.time(),
            connection_state="connected",
            has_video=True,
            has_audio=False,
            channel_id="default",
            prompt_source="default",
            prompt_version=3,
            last_error=self.error,
        )


async def test_new_node_errors_become_error_events() -> None:
    hub = EventHub(core=None)  # type: ignore[arg-type]
    session, feed = _FakeSession(), EventFeed()
    hub._sample(session, {feed})  # type: ignore[arg-type]
    assert [event for event, _ in feed.take()] == ["prompt", "stats"]
    session.error = "node 2 (ImageInvert): RuntimeError: boom"
    hub._sample(session, {feed})  # type: ignore[arg-type]
    hub._sample(session, {feed})  # type: ignore[arg-type]  # the same error is not repeated
    items = feed.take()
    assert [event for event, _ in items] == ["error", "stats"]
    assert items[0][1] == {"session_id": "s1", "error": session.error, "prompt_version": 3}
    assert format_event("state", {"a": 1}, 5) == b'event: state\nid: 5\ndata: {"a": 1}\n\n'


async def test_event_stream_of_a_whep_viewer(server: WhipServer) -> None:
    pc, sdp = await make_offer(direction="recvonly")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        try:
            headers = {"Content-Type": "application/sdp"}
            async with http.post(f"{server.url}/whep/cam", data=sdp, headers=headers) as resp:
                assert resp.status == 201, await resp.text()
                location = resp.headers["Location"]
            async with http.get(f"{location}/events") as stream:
                assert stream.status == 200
                events = read_events(stream)
                assert (await next_event(events, "state"))["state"] in ("new", "connecting")
                whip_url = f"{server.whip_url}/{location.rsplit('/', 1)[1]}/events"
                async with http.get(whip_url) as resp:  # a WHEP id is not a WHIP session
                    assert resp.status == 404
                async with http.delete(location) as resp:
                    assert resp.status == 200
                assert [item async for item in events][-1][1]["state"] == "closed"
        finally:
            await pc.close()
