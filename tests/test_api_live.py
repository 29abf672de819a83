"""Stats, prompts, preview and metrics endpoints with a real publisher, plus live prompts:
known colours inverted, hot-swap mid-stream, a slow node, a node that raises."""

from __future__ import annotations

import io
import json
import time

import aiohttp
import numpy as np
import pytest
from helpers import async_wait_until
from PIL import Image

from comfywhip_nb.client.sources import TestPatternTrack
from comfywhip_nb.client.whip_client import WHIPClient
from comfywhip_nb.prompts import register_nodes
from comfywhip_nb.server import WhipServer

COLOR = (200, 40, 90)
INVERT = {
    "1": {"class_type": "LoadTensor", "inputs": {}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
}
FLIP_TO_GRAY = {
    "1": {"class_type": "LoadTensor", "inputs": {}},
    "2": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0x808080},
    },
    "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
}


class SlowNode:
    """Takes 100 ms per frame: processing is 3x slower than 30 fps input."""

    CATEGORY = "test"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    def run(self, image):
        time.sleep(0.1)
        return (image,)


class BoomNode:
    CATEGORY = "test"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    def run(self, image):
        raise RuntimeError("boom on purpose")


register_nodes({"TestSlowNode": SlowNode, "TestBoomNode": BoomNode})


def graph_with(class_type: str) -> dict:
    return {
        "1": {"class_type": "LoadTensor", "inputs": {}},
        "2": {"class_type": class_type, "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
    }


def center(server: WhipServer) -> np.ndarray | None:
    frame = server.latest_frame(kind="ndarray")
    if frame is None:
        return None
    h, w = frame.shape[:2]
    return frame[h // 2 - 4 : h // 2 + 4, w // 2 - 4 : w // 2 + 4].reshape(-1, 3).mean(0)


def close_to(value: np.ndarray | None, expected: tuple[int, int, int], tol: float = 20) -> bool:
    return value is not None and float(np.abs(value - np.array(expected)).max()) < tol


@pytest.fixture
async def live(server: WhipServer):
    """A publisher sending one known colour at 30 fps."""
    server.set_prompts(INVERT)
    client = WHIPClient(server.whip_url)
    await client.publish(TestPatternTrack(64, 48, fps=30, solid_color=COLOR))
    await client.wait_connected(timeout=10)
    yield client
    await client.unpublish()


def sid(server: WhipServer) -> str:
    return next(iter(server.sessions))


async def test_inverted_colours_and_hot_swap_over_http(server: WhipServer, live) -> None:
    inverted = tuple(255 - c for c in COLOR)
    await async_wait_until(lambda: close_to(center(server), inverted), timeout=10)
    before = server.sessions[sid(server)]
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{server.url}/prompts", json=FLIP_TO_GRAY)
        assert resp.status == 200
        version = (await resp.json())["version"]
        await async_wait_until(lambda: close_to(center(server), (128, 128, 128), 6), timeout=5)
        info = server.sessions[sid(server)]
        assert info.prompt_version == version > before.prompt_version
        assert info.connection_state == "connected"
        resp = await http.get(f"{server.url}/prompts")
        body = await resp.json()
        assert body["version"] == version and body["prompts"][0]["2"]["class_type"] == "EmptyImage"
        # an invalid prompt changes nothing and names the node
        bad = {
            **INVERT,
            "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 99}},
        }
        resp = await http.post(f"{server.url}/prompts", json=bad)
        assert resp.status == 400
        problem = await resp.json()
        assert any(e["node_id"] == "2" for e in problem["node_errors"])
        assert "blur_radius" in problem["detail"]
        assert server.sessions[sid(server)].prompt_version == version


async def test_hot_swap_from_python_changes_output_within_a_few_frames(
    server: WhipServer, live
) -> None:
    await async_wait_until(lambda: close_to(center(server), tuple(255 - c for c in COLOR)), 10)
    done_before = server.sessions[sid(server)].frames_processed
    server.set_prompts(None)  # passthrough
    await async_wait_until(lambda: close_to(center(server), COLOR), timeout=5)
    info = server.sessions[sid(server)]
    assert info.frames_processed - done_before <= 10  # a few frames, no stall
    assert info.frames_dropped <= 3


async def test_stats_preview_metrics_endpoints(server: WhipServer, live) -> None:
    await async_wait_until(lambda: server.sessions[sid(server)].frames_processed > 10, 10)
    session_id = sid(server)
    async with aiohttp.ClientSession() as http:
        stats = await (await http.get(f"{server.url}/whip-stats")).json()
        entry = stats[session_id]
        for key in (
            "created_at",
            "connection_state",
            "has_video",
            "has_audio",
            "channel_id",
            "frames_in",
            "frames_processed",
            "frames_dropped",
            "fps_in",
            "fps_out",
            "latency_ms",
            "prompt_version",
            "last_error",
        ):
            assert key in entry
        assert entry["fps_in"] > 10 and entry["latency_ms"] > 0
        comfy = await (await http.get(f"{server.url}/streams/stats")).json()
        assert set(comfy[session_id]) >= {"fps", "minute_avg_fps", "minute_fps_array"}
        one = await http.get(f"{server.url}/stream/{session_id}/stats")
        assert one.status == 200
        assert (await http.get(f"{server.url}/stream/nope/stats")).status == 404
        metrics = await (await http.get(f"{server.url}/metrics")).text()
        assert "comfywhip_sessions 1" in metrics
        assert f'comfywhip_frames_processed_total{{session="{session_id}"' in metrics
        resp = await http.get(f"{server.url}/preview/{session_id}.jpg?width=32")
        assert resp.status == 200 and resp.content_type == "image/jpeg"
        image = Image.open(io.BytesIO(await resp.read()))
        assert image.size[0] == 32
        assert (await http.get(f"{server.url}/preview/nope.jpg")).status == 404
        health = await (await http.get(f"{server.url}/health")).json()
        assert health["status"] == "ok" and health["sessions"] == 1


async def test_slow_node_keeps_latency_bounded_and_counts_drops(server: WhipServer, live) -> None:
    server.set_prompts(graph_with("TestSlowNode"))
    await async_wait_until(lambda: server.sessions[sid(server)].frames_processed > 25, 15)
    start = server.sessions[sid(server)]
    await async_wait_until(
        lambda: server.sessions[sid(server)].frames_processed > start.frames_processed + 15, 10
    )
    info = server.sessions[sid(server)]
    assert info.frames_dropped > 15  # input is 3x faster than processing
    # receipt -> processed: one 100 ms node plus at most one frame waiting
    assert info.latency_p95_ms < 4 * 100, info
    assert info.fps_in > 20 and 5 < info.fps_out < 12


async def test_node_that_raises_is_reported_and_stream_keeps_flowing(
    server: WhipServer, live
) -> None:
    await async_wait_until(lambda: close_to(center(server), tuple(255 - c for c in COLOR)), 10)
    server.set_prompts(graph_with("TestBoomNode"))
    await async_wait_until(lambda: server.sessions[sid(server)].last_error, timeout=5)
    info = server.sessions[sid(server)]
    assert "2" in info.last_error and "TestBoomNode" in info.last_error
    assert "boom on purpose" in info.last_error
    processed = info.frames_processed
    await async_wait_until(lambda: server.sessions[sid(server)].frames_processed > processed + 10)
    # the last good prompt (invert) keeps running
    assert close_to(center(server), tuple(255 - c for c in COLOR))
    assert server.sessions[sid(server)].connection_state == "connected"
    async with aiohttp.ClientSession() as http:
        stats = await (await http.get(f"{server.url}/whip-stats")).json()
        assert "TestBoomNode" in stats[sid(server)]["last_error"]


async def test_channel_and_session_prompts(server: WhipServer) -> None:
    server.set_prompts(INVERT, channel="cam")
    async with (
        WHIPClient(server.whip_url, channel_id="cam") as cam,
        WHIPClient(server.whip_url) as other,
    ):
        await cam.publish(TestPatternTrack(64, 48, solid_color=COLOR))
        await other.publish(TestPatternTrack(64, 48, solid_color=COLOR))
        await cam.wait_connected()
        await other.wait_connected()
        ids = {info.channel_id: sid for sid, info in server.sessions.items()}

        def color(channel: str) -> np.ndarray | None:
            frame = server.latest_frame(ids[channel], kind="ndarray")
            return None if frame is None else frame[20:28, 28:36].reshape(-1, 3).mean(0)

        await async_wait_until(lambda: close_to(color("cam"), tuple(255 - c for c in COLOR)))
        await async_wait_until(lambda: close_to(color("default"), COLOR))
        assert server.sessions[ids["cam"]].prompt_source == "channel"
        server.set_prompts(INVERT, session=ids["default"])
        await async_wait_until(lambda: close_to(color("default"), tuple(255 - c for c in COLOR)))
        assert server.sessions[ids["default"]].prompt_source == "session"
        with pytest.raises(KeyError):
            server.set_prompts(INVERT, session="nope")


def test_prompts_json_roundtrip_is_api_format() -> None:
    from comfywhip_nb.prompts import load_prompt

    prompt = load_prompt(json.dumps(INVERT))
    assert (
        json.loads(prompt.to_json()) in (INVERT, [INVERT])
        or prompt.graphs[0]["2"]["class_type"] == "ImageInvert"
    )
