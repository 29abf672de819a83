"""ComfyStream compatibility over real loopback WebRTC: /offer, /prompt, the control channel."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from helpers import async_wait_until, make_offer

from comfywhip_nb.client.sources import TestPatternTrack
from comfywhip_nb.comfystream.control import describe_node, parse_size
from comfywhip_nb.server import WhipServer

RED = (200, 40, 40)
INVERTED = (55, 215, 215)
TOLERANCE = 25  # VP8 at low bitrate shifts a flat colour by a few levels
INVERT = {
    "1": {"class_type": "LoadTensor", "inputs": {}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
}
PASSTHROUGH = {
    "1": {"class_type": "LoadTensor", "inputs": {}},
    "2": {"class_type": "SaveTensor", "inputs": {"images": ["1", 0]}},
}
UNKNOWN_NODE = {"1": {"class_type": "NoSuchNode", "inputs": {}}}


class OfferPeer:
    """A ComfyStream-style client: send-receive video plus a ``control`` data channel."""

    def __init__(self, *, audio: bool = False) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver(TestPatternTrack(96, 64, fps=20, solid_color=RED), "sendrecv")
        self.audio = audio
        if audio:
            from comfywhip_nb.client.sources import SineAudioTrack

            self.pc.addTransceiver(SineAudioTrack(), "sendrecv")
        self.channel = self.pc.createDataChannel("control")
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.channel.on("message", lambda m: self.replies.put_nowait(json.loads(m)))
        self.latest: np.ndarray | None = None
        self.audio_frames = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track: Any) -> None:
        self._tasks.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track: Any) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.latest = frame.to_ndarray(format="rgb24")
                else:
                    self.audio_frames += 1

    async def connect(self, http: aiohttp.ClientSession, url: str, **body: Any) -> dict[str, Any]:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        async with http.post(f"{url}/offer", json={"offer": offer, **body}) as resp:
            assert resp.status == 200, await resp.text()
            answer = await resp.json()
            assert "/events>" in resp.headers.get("Link", "")
        assert answer["type"] == "answer"
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        return answer

    def colour_is(self, rgb: tuple[int, int, int]) -> bool:
        if self.latest is None:
            return False
        mean = self.latest.reshape(-1, 3).mean(axis=0)
        return bool(np.all(np.abs(mean - np.array(rgb)) < TOLERANCE))

    async def ask(self, message: dict[str, Any] | str | bytes, timeout: float = 10.0) -> dict:
        await async_wait_until(lambda: self.channel.readyState == "open", timeout)
        self.channel.send(message if isinstance(message, (str, bytes)) else json.dumps(message))
        return await asyncio.wait_for(self.replies.get(), timeout)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


@pytest.fixture
async def peer() -> AsyncIterator[OfferPeer]:
    client = OfferPeer()
    yield client
    await client.close()


async def test_offer_sends_processed_video_back_and_prompt_swaps_it(
    server: WhipServer, http: aiohttp.ClientSession, peer: OfferPeer
) -> None:
    answer = await peer.connect(
        http, server.url, prompts=[INVERT], resolution={"width": 96, "height": 64}
    )
    session = server.sessions[answer["session_id"]]
    assert session.kind == "offer"
    await async_wait_until(lambda: peer.colour_is(INVERTED), 15)

    async with http.post(f"{server.url}/prompt", json=PASSTHROUGH) as resp:
        assert resp.status == 200
        assert (await resp.json())["ok"] is True
    await async_wait_until(lambda: peer.colour_is(RED), 10)

    reply = await peer.ask({"type": "update_resolution", "width": 48, "height": 32})
    assert reply == {"type": "resolution_updated", "success": True, "width": 48, "height": 32}
    await async_wait_until(lambda: peer.latest is not None and peer.latest.shape[:2] == (32, 48))

    await peer.close()  # the server notices the closed DTLS transport and frees the session
    await async_wait_until(lambda: answer["session_id"] not in server.sessions, 10)


async def test_audio_is_relayed_back(server: WhipServer, http: aiohttp.ClientSession) -> None:
    client = OfferPeer(audio=True)
    try:
        await client.connect(http, server.url)
        await async_wait_until(lambda: client.audio_frames > 10 and client.latest is not None, 10)
    finally:
        await client.close()


async def test_every_control_message_round_trips(
    server: WhipServer, http: aiohttp.ClientSession, peer: OfferPeer
) -> None:
    answer = await peer.connect(http, server.url)
    sid = answer["session_id"]
    await async_wait_until(lambda: peer.colour_is(RED), 15)

    nodes = await peer.ask({"type": "get_nodes", "id": 7})
    assert (nodes["type"], nodes["success"], nodes["id"]) == ("nodes_info", True, 7)
    invert = nodes["nodes"]["ImageInvert"]
    assert invert["inputs"]["image"] == {"required": True, "type": "IMAGE"}

    reply = await peer.ask({"type": "update_prompts", "prompts": INVERT})
    assert (reply["type"], reply["success"], reply["state"]) == ("prompts_updated", True, "running")
    assert server.sessions[sid].prompt_source == "session"
    await async_wait_until(lambda: peer.colour_is(INVERTED), 10)

    reply = await peer.ask({"type": "pause_prompts"})
    assert reply == {"type": "prompts_paused", "success": True, "state": "paused"}
    await async_wait_until(lambda: peer.colour_is(RED), 10)  # paused: input passes through
    reply = await peer.ask({"type": "resume_prompts"})
    assert reply == {"type": "prompts_resumed", "success": True, "state": "running"}
    await async_wait_until(lambda: peer.colour_is(INVERTED), 10)

    reply = await peer.ask({"type": "stop_prompts"})
    assert reply == {"type": "prompts_stopped", "success": True, "state": "stopped"}
    assert server.sessions[sid].prompt_source != "session"  # the session's prompt is gone
    await async_wait_until(lambda: peer.colour_is(RED), 10)
    reply = await peer.ask({"type": "resume_prompts"})  # resumes the (empty) server prompt
    assert reply["success"] is True

    malformed: list[tuple[Any, str, str]] = [
        ("not json {", "error", "not valid JSON"),
        (b"\xff\xfe", "error", "not valid JSON"),
        ("[1, 2]", "error", '"type"'),
        ({"type": 5}, "error", '"type"'),
        ({"type": "reboot"}, "error", "unknown message type 'reboot'"),
        ({"type": "update_prompts"}, "prompts_updated", '"prompts"'),
        ({"type": "update_prompts", "prompts": UNKNOWN_NODE}, "prompts_updated", "NoSuchNode"),
        ({"type": "update_prompts", "prompts": "{oops"}, "prompts_updated", "not valid JSON"),
        ({"type": "update_resolution", "width": 33, "height": 32}, "resolution_updated", "even"),
        ({"type": "update_resolution", "width": "big"}, "resolution_updated", "integer"),
    ]
    for message, reply_type, fragment in malformed:
        reply = await peer.ask(message)
        assert reply["type"] == reply_type and reply["success"] is False, (message, reply)
        assert fragment in reply["error"], (message, reply)
    assert peer.channel.readyState == "open"  # nothing above closed the channel
    reply = await peer.ask({"type": "pause_prompts"})
    assert reply["success"] is True


async def test_control_channel_on_a_whip_session(
    server: WhipServer, http: aiohttp.ClientSession
) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(TestPatternTrack(64, 48), direction="sendonly")
    channel = pc.createDataChannel("control")
    replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    channel.on("message", lambda m: replies.put_nowait(json.loads(m)))
    try:
        await pc.setLocalDescription(await pc.createOffer())
        headers = {"Content-Type": "application/sdp"}
        async with http.post(server.whip_url, data=pc.localDescription.sdp, headers=headers) as r:
            assert r.status == 201
            await pc.setRemoteDescription(RTCSessionDescription(await r.text(), "answer"))
        await async_wait_until(lambda: channel.readyState == "open", 10)
        got = []
        for message in ("pause_prompts", "update_resolution", "resume_prompts"):
            channel.send(json.dumps({"type": message, "width": 64, "height": 48}))
            got.append(await asyncio.wait_for(replies.get(), 10))
        assert [(r["type"], r["success"]) for r in got] == [
            ("prompts_paused", True),
            ("resolution_updated", False),  # a WHIP publisher gets no video back to scale
            ("prompts_resumed", True),
        ]
        assert "sends no video back" in got[1]["error"]
    finally:
        await pc.close()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "fragment"),
    [
        ("{not json", "application/json", 400, "not valid JSON"),
        ("v=0\r\n", "application/sdp", 415, "application/json"),
        ("[1]", "application/json", 400, "JSON object"),
        ('{"offer": "v=0"}', "application/json", 400, '"sdp"'),
        ('{"offer": {"sdp": "v=0", "type": "answer"}}', "application/json", 400, "offer.type"),
        ('{"offer": {"sdp": "hello", "type": "offer"}}', "application/json", 400, "v=0"),
    ],
)
async def test_offer_rejects_bad_requests(
    server: WhipServer,
    http: aiohttp.ClientSession,
    body: str,
    content_type: str,
    status: int,
    fragment: str,
) -> None:
    headers = {"Content-Type": content_type}
    async with http.post(f"{server.url}/offer", data=body, headers=headers) as resp:
        assert resp.status == status
        assert resp.content_type == "application/problem+json"
        assert fragment in (await resp.json())["detail"]


async def test_offer_rejects_bad_prompts_resolution_and_recvonly(
    server: WhipServer, http: aiohttp.ClientSession
) -> None:
    pc, sdp = await make_offer(direction="sendrecv")
    recv_pc, recv_sdp = await make_offer(direction="recvonly")
    offer = {"sdp": sdp, "type": "offer"}
    try:
        cases = [
            ({"offer": offer, "prompts": UNKNOWN_NODE}, 400, "NoSuchNode"),
            ({"offer": offer, "resolution": {"width": 15, "height": 16}}, 400, "even"),
            ({"offer": offer, "resolution": [640, 480]}, 400, "resolution"),
            ({"offer": {"sdp": recv_sdp, "type": "offer"}}, 422, "recvonly"),
        ]
        for body, status, fragment in cases:
            async with http.post(f"{server.url}/offer", json=body) as resp:
                problem = await resp.json()
                assert resp.status == status, problem
                assert fragment in json.dumps(problem), problem
        assert not server.sessions  # nothing half-made was left behind
    finally:
        await pc.close()
        await recv_pc.close()


async def test_prompt_endpoint(server: WhipServer, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{server.url}/prompt", json={"prompts": [INVERT]}) as resp:
        assert resp.status == 200
        version = (await resp.json())["version"]
    async with http.post(f"{server.url}/prompt?channelId=cam", json=INVERT) as resp:
        assert (await resp.json())["version"] > version
    async with http.post(f"{server.url}/prompt", json=UNKNOWN_NODE) as resp:
        assert resp.status == 400
        assert "NoSuchNode" in json.dumps(await resp.json())
    async with http.post(
        f"{server.url}/prompt", data="{", headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 400
    async with http.get(f"{server.url}/prompt") as resp:
        assert resp.status == 405
    async with http.post(f"{server.url}/prompt", json={"prompts": None}) as resp:
        assert resp.status == 200  # null: back to passthrough


def test_parse_size_and_describe_node() -> None:
    assert parse_size({"width": 640, "height": 480}) == (640, 480)
    for bad in ({"width": 641, "height": 480}, {"width": 8, "height": 8}, {"width": True}, None):
        with pytest.raises(ValueError):
            parse_size(bad)
    info = {
        "input": {
            "required": {"mode": [["a", "b"], {"default": "a"}], "x": ["INT", {"min": 0}]},
            "optional": {"image": ["IMAGE"]},
        },
        "output": ["IMAGE"],
        "name": "N",
    }
    described = describe_node(info)
    assert described["inputs"] == {
        "mode": {"required": True, "type": "COMBO", "choices": ["a", "b"], "default": "a"},
        "x": {"required": True, "type": "INT", "min": 0},
        "image": {"required": False, "type": "IMAGE"},
    }
    assert described["display_name"] == "N"
