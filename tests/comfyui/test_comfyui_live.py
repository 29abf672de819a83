"""A real ComfyUI behind a real WHIP server, fed by a real aiortc publisher over loopback."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from helpers import async_wait_until

from comfywhip_nb.client import WHIPClient
from comfywhip_nb.client.sources import TestPatternTrack
from comfywhip_nb.server import WhipServer

RED = (200, 40, 40)
TOLERANCE = 25  # VP8 shifts a flat colour by a few levels

pytestmark = pytest.mark.timeout(240)


def graph(*chain: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """LoadTensor -> each (class, extra inputs) in turn, linked by "image" -> SaveTensor."""
    nodes: dict[str, Any] = {"1": {"class_type": "LoadTensor", "inputs": {}}}
    for i, (class_type, inputs) in enumerate(chain, start=2):
        nodes[str(i)] = {"class_type": class_type, "inputs": {"image": [str(i - 1), 0], **inputs}}
    last = str(len(chain) + 1)
    nodes[str(len(chain) + 2)] = {"class_type": "SaveTensor", "inputs": {"images": [last, 0]}}
    return nodes


INVERT = graph(("ImageInvert", {}))
HALF_GREEN = graph(("WhipTestTint", {"r": 1.0, "g": 0.5, "b": 1.0}))


@pytest.fixture
def comfy_server(comfy_engine: Any, comfy_copy: Path) -> Iterator[WhipServer]:
    server = WhipServer(port=0, comfyui=comfy_copy, media_timeout=30.0, frame_timeout=20.0)
    assert server.engine is comfy_engine or server.engine.runtime is comfy_engine.runtime
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def publishing(server: WhipServer, prompts: Any = None) -> AsyncIterator[WHIPClient]:
    track = TestPatternTrack(64, 48, fps=30, solid_color=RED)
    async with WHIPClient(server.whip_url, prompts=prompts) as client:
        await client.publish(track)
        await client.wait_connected(timeout=30)
        yield client


def info(server: WhipServer) -> Any:
    sessions = list(server.sessions.values())
    return sessions[0] if sessions else None


def processed(server: WhipServer) -> int:
    session = info(server)
    return session.frames_processed if session else 0


def colour_is(server: WhipServer, rgb: tuple[int, int, int]) -> bool:
    frame = server.latest_frame(kind="ndarray")
    if frame is None:
        return False
    mean = frame.reshape(-1, 3).mean(axis=0)
    return bool(np.all(np.abs(mean - np.array(rgb)) < TOLERANCE))


async def test_workflow_with_core_v3_nodes(comfy_server: WhipServer) -> None:
    # ImageBlur and ImageBlend are V3 (comfy_api.latest.io.ComfyNode) in ComfyUI 0.3.75
    prompt = {
        "1": {"class_type": "LoadTensor", "inputs": {"timeout_seconds": 2.0}},
        "2": {
            "class_type": "ImageBlur",
            "inputs": {"image": ["1", 0], "blur_radius": 2, "sigma": 1.0},
        },
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "4": {
            "class_type": "ImageBlend",
            "inputs": {
                "image1": ["2", 0],
                "image2": ["3", 0],
                "blend_factor": 1.0,
                "blend_mode": "normal",
            },
        },
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }
    async with publishing(comfy_server, prompts=prompt):
        await async_wait_until(lambda: processed(comfy_server) >= 10, timeout=60)
        await async_wait_until(lambda: colour_is(comfy_server, (55, 215, 215)), timeout=30)
        session = info(comfy_server)
        assert session.prompt_source == "session" and session.last_error is None
        assert {"2:ImageBlur", "3:ImageInvert", "4:ImageBlend", "5:SaveTensor"} <= set(
            session.node_ms
        )
        stats = comfy_server.stats()[session.id]
        assert stats["node_ms"]["4:ImageBlend"] >= 0.0


async def test_custom_pack_v1_and_v3_nodes(comfy_server: WhipServer) -> None:
    prompt = graph(
        ("WhipTestTint", {"r": 1.0, "g": 0.5, "b": 0.0}),  # V1
        ("WhipTestGain", {"gain": 1.0}),  # V3 class in NODE_CLASS_MAPPINGS
        ("WhipTestMirror", {}),  # V3 extension (comfy_entrypoint)
    )
    async with publishing(comfy_server, prompts=prompt):
        await async_wait_until(lambda: colour_is(comfy_server, (200, 20, 0)), timeout=60)
        assert set(info(comfy_server).node_ms) >= {"2:WhipTestTint", "3:WhipTestGain"}


async def test_loader_runs_once_over_100_frames(comfy_server: WhipServer, counters: Path) -> None:
    prompt = {
        "1": {"class_type": "LoadTensor", "inputs": {}},
        "2": {"class_type": "WhipTestCountingLoader", "inputs": {}},
        "3": {"class_type": "WhipTestGain", "inputs": {"image": ["1", 0], "gain": ["2", 0]}},
        "4": {"class_type": "SaveTensor", "inputs": {"images": ["3", 0]}},
    }
    built = comfy_server.engine.load(prompt)
    comfy_server.set_prompts(built)
    async with publishing(comfy_server):
        await async_wait_until(lambda: processed(comfy_server) >= 100, timeout=120)
        assert colour_is(comfy_server, (100, 20, 20))
    runs = built.node_runs()
    assert (counters / "loader").read_text() == "x"  # the node's own function ran once
    assert runs["2:WhipTestCountingLoader"] == 1
    assert runs["3:WhipTestGain"] >= 100 and runs["1:LoadTensor"] >= 100


async def test_node_that_raises_leaves_the_stream_flowing(comfy_server: WhipServer) -> None:
    comfy_server.set_prompts(graph(("WhipTestBoom", {})))
    async with publishing(comfy_server):
        await async_wait_until(lambda: info(comfy_server) and info(comfy_server).last_error)
        error = info(comfy_server).last_error
        assert "node 2 (WhipTestBoom)" in error and "whiptest boom" in error
        before = processed(comfy_server)
        await async_wait_until(lambda: processed(comfy_server) >= before + 20, timeout=60)
        assert colour_is(comfy_server, RED)  # passthrough while the prompt is benched
        comfy_server.set_prompts(INVERT)
        await async_wait_until(lambda: colour_is(comfy_server, (55, 215, 215)), timeout=30)
        assert info(comfy_server).last_error is None


async def test_hot_swap_between_two_workflows_keeps_last_good(comfy_server: WhipServer) -> None:
    first = comfy_server.set_prompts(INVERT)
    async with publishing(comfy_server):
        await async_wait_until(lambda: colour_is(comfy_server, (55, 215, 215)), timeout=60)
        second = comfy_server.set_prompts(HALF_GREEN)
        assert second > first
        await async_wait_until(lambda: colour_is(comfy_server, (200, 20, 40)), timeout=30)
        assert info(comfy_server).prompt_version == second
        bad = graph(("ImageBlur", {"blur_radius": 300, "sigma": 1.0}))
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{comfy_server.url}/prompts", data=json.dumps(bad)) as resp,
        ):
            body = await resp.json()
        assert resp.status == 400
        assert body["node_errors"] == [
            {
                "node_id": "2",
                "class_type": "ImageBlur",
                "message": "Value 300 bigger than max of 31: blur_radius",
                "input_name": "blur_radius",
                "graph": None,
            }
        ]
        before = processed(comfy_server)
        await async_wait_until(lambda: processed(comfy_server) >= before + 10, timeout=30)
        assert (
            colour_is(comfy_server, (200, 20, 40)) and info(comfy_server).prompt_version == second
        )


async def test_upscale_model_runs_every_frame_loader_once(
    comfy_server: WhipServer, comfy_copy: Path
) -> None:
    names = comfy_server.engine.catalogue()["UpscaleModelLoader"]["input"]["required"]
    assert "whiptest_compact_x2.safetensors" in json.dumps(names)
    prompt = {
        "1": {"class_type": "LoadTensor", "inputs": {}},
        "2": {
            "class_type": "UpscaleModelLoader",
            "inputs": {"model_name": "whiptest_compact_x2.safetensors"},
        },
        "3": {
            "class_type": "ImageUpscaleWithModel",
            "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]},
        },
        "4": {"class_type": "SaveTensor", "inputs": {"images": ["3", 0]}},
    }
    built = comfy_server.engine.load(prompt)
    comfy_server.set_prompts(built)
    async with publishing(comfy_server):
        await async_wait_until(lambda: processed(comfy_server) >= 30, timeout=120)
        assert comfy_server.latest_frame().size == (128, 96)  # the model's 2x
        assert info(comfy_server).last_error is None
    runs = built.node_runs()
    assert runs["2:UpscaleModelLoader"] == 1
    assert runs["3:ImageUpscaleWithModel"] >= 30
