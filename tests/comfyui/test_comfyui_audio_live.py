"""Audio through a real ComfyUI: a publisher with a tone, ComfyUI's own core audio node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import async_wait_until, tone_stats

from comfywhip_nb.client import WHIPClient
from comfywhip_nb.client.sources import TestPatternTrack
from comfywhip_nb.server import WhipServer

pytestmark = pytest.mark.timeout(240)


def video_and_audio(volume_db: int) -> dict[str, Any]:
    """One graph holding both streams: inverted video, ComfyUI's AudioAdjustVolume."""
    return {
        "1": {"class_type": "LoadTensor", "inputs": {}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
        "4": {"class_type": "LoadAudioTensor", "inputs": {"buffer_size": 40.0}},
        "5": {
            "class_type": "AudioAdjustVolume",
            "inputs": {"audio": ["4", 0], "volume": volume_db},
        },
        "6": {"class_type": "SaveAudioTensor", "inputs": {"audio": ["5", 0]}},
    }


@pytest.fixture
def comfy_server(comfy_engine: Any, comfy_copy: Path) -> Iterator[WhipServer]:
    server = WhipServer(port=0, comfyui=comfy_copy, media_timeout=30.0, frame_timeout=20.0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def session(server: WhipServer) -> Any:
    return next(iter(server.sessions.values()), None)


async def test_one_graph_runs_video_and_audio_and_hot_swaps(comfy_server: WhipServer) -> None:
    comfy_server.set_prompts(video_and_audio(-12))
    async with WHIPClient(comfy_server.whip_url) as client:
        await client.publish(TestPatternTrack(64, 48, fps=15), audio=True)
        await client.wait_connected(timeout=30)

        def ran(buffers: int) -> bool:
            info = session(comfy_server)
            return bool(info and info.audio_frames_out >= buffers and info.frames_processed)

        await async_wait_until(lambda: ran(50), timeout=60)
        quiet = session(comfy_server)
        assert quiet.audio_buffer_ms == 40.0 and quiet.audio_last_error is None
        assert quiet.last_error is None
        assert abs(quiet.audio_level_out_db - quiet.audio_level_in_db + 12) < 1.0
        samples, rate = comfy_server.latest_audio(seconds=0.5)
        assert abs(tone_stats(samples, rate)[1] - 440) < 5

        comfy_server.set_prompts(video_and_audio(0))
        before = quiet.audio_frames_out
        await async_wait_until(lambda: ran(before + 50), timeout=60)
        loud = session(comfy_server)
        assert abs(loud.audio_level_out_db - loud.audio_level_in_db) < 1.0
