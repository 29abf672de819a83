"""The audio worker (pipeline/audio.py) on real PyAV frames and a real aiortc publisher:
buffering by LoadAudioTensor's buffer_size, passthrough, prompt lists split by stream,
dropping whole buffers when slow, errors passing audio through, ``latest_audio``."""

from __future__ import annotations

import fractions
import time
from collections.abc import Iterator
from typing import Any

import av
import numpy as np
import pytest
from graphs import AudioScale
from helpers import async_wait_until, tone_stats, wait_until

from comfywhip_nb import WhipServer, load_prompt, register_nodes
from comfywhip_nb.client import WHIPClient
from comfywhip_nb.client.sources import TestPatternTrack
from comfywhip_nb.pipeline.audio import AudioChunk, AudioProcessor
from comfywhip_nb.prompts.registry import unregister_nodes

RATE = 48000
FRAME = 960


def opus_like_frame(index: int, freq: float = 440.0, volume: float = 0.5) -> av.AudioFrame:
    """What aiortc's Opus decoder hands over: packed s16 stereo, 20 ms at 48 kHz."""
    t = (index * FRAME + np.arange(FRAME)) / RATE
    wave = (np.sin(2 * np.pi * freq * t) * volume * 32767).astype(np.int16)
    packed = np.repeat(wave, 2).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(packed, format="s16", layout="stereo")
    frame.sample_rate = RATE
    frame.pts, frame.time_base = 1000 + index * FRAME, fractions.Fraction(1, RATE)
    return frame


@pytest.fixture(autouse=True)
def scale_node() -> Iterator[None]:
    register_nodes({"TestAudioScale": AudioScale})
    yield
    unregister_nodes("TestAudioScale")


def audio_graph(buffer_ms: float = 100.0, factor: float = 1.0, **scale: Any) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadAudioTensor", "inputs": {"buffer_size": buffer_ms}},
        "2": {
            "class_type": "TestAudioScale",
            "inputs": {"audio": ["1", 0], "factor": factor, **scale},
        },
        "3": {"class_type": "SaveAudioTensor", "inputs": {"audio": ["2", 0]}},
    }


INVERT_VIDEO = {
    "1": {"class_type": "LoadTensor", "inputs": {}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
}


def run_processor(prompt: Any, frames: int, pace: float = 0.0) -> tuple[list[AudioChunk], Any]:
    """Feed ``frames`` sine frames, wait until every whole buffer was run or dropped."""
    chunks: list[AudioChunk] = []
    processor = AudioProcessor("t", frame_timeout=1.0, on_processed=chunks.append)
    processor.set_prompt(prompt, 1)
    processor.start()
    try:
        for i in range(frames):
            processor.submit(opus_like_frame(i))
            if pace:
                time.sleep(pace)
        if prompt is None:
            wait_until(lambda: sum(c.samples.shape[1] for c in chunks) == frames * FRAME)
        else:
            buffers = frames * FRAME // round(prompt.audio_buffer_ms * RATE / 1000)

            def settled() -> bool:
                stats = processor.stats()
                return stats.buffers_processed + stats.buffers_dropped >= buffers

            wait_until(settled, timeout=15)
        return chunks, processor.stats()
    finally:
        processor.stop()


def test_passthrough_keeps_channels_rate_and_timeline() -> None:
    chunks, stats = run_processor(None, 25)
    joined = np.concatenate([c.samples for c in chunks], axis=1)
    assert joined.shape == (2, 25 * FRAME)
    assert chunks[0].pts == 1000 and all(c.sample_rate == RATE for c in chunks)
    assert [c.pts for c in chunks] == sorted(c.pts for c in chunks)
    rms, freq = tone_stats(joined, RATE)
    assert abs(freq - 440) < 5 and abs(rms - 0.5 / np.sqrt(2)) < 0.01
    assert stats.buffers_dropped == 0 and stats.buffer_ms == 0.0
    assert -10 < stats.level_out_db < -5  # a 0.5 sine: -9 dBFS


def test_prompt_runs_on_buffers_of_buffer_size_in_comfystream_layout() -> None:
    prompt = load_prompt(audio_graph(100.0, factor=0.5))
    assert prompt.has_audio and not prompt.has_image and prompt.audio_buffer_ms == 100.0
    chunks, stats = run_processor(prompt, 50, pace=0.02)  # real time: nothing to drop
    assert len(chunks) == 10 and {c.samples.shape for c in chunks} == {(1, 4800)}
    assert [c.pts for c in chunks] == [1000 + i * 4800 for i in range(10)]
    rms, freq = tone_stats(np.concatenate([c.samples for c in chunks], axis=1), RATE)
    assert abs(freq - 440) < 5 and abs(rms - 0.25 / np.sqrt(2)) < 0.01
    assert stats.buffer_ms == 100.0 and stats.buffers_processed == 10
    assert stats.level_out_db < stats.level_in_db - 5.5  # halved: -6 dB


def test_slow_prompt_drops_whole_buffers_and_never_drifts() -> None:
    prompt = load_prompt(audio_graph(40.0, sleep=0.12))  # 3x slower than real time
    chunks, stats = run_processor(prompt, 100, pace=0.02)
    assert stats.buffers_dropped > 0
    step = 40 * 48
    assert all((c.pts - 1000) % step == 0 for c in chunks)  # gaps of whole buffers only
    # the output never falls behind the input by more than two buffers plus the one running
    last = chunks[-1]
    assert (1000 + 100 * FRAME) - (last.pts + step) <= 3 * step + FRAME


def test_failing_prompt_passes_audio_through_and_says_why() -> None:
    prompt = load_prompt(audio_graph(20.0, fail=True))
    chunks, stats = run_processor(prompt, 10, pace=0.02)
    joined = np.concatenate([c.samples for c in chunks], axis=1)
    # every buffer came out (a loaded machine may have dropped whole ones while behind)
    assert joined.shape[1] + stats.buffers_dropped * FRAME == 10 * FRAME
    assert abs(tone_stats(joined, RATE)[0] - 0.5 / np.sqrt(2)) < 0.01
    assert stats.last_error is not None and "scale refused" in stats.last_error


async def test_live_publisher_runs_the_audio_part_of_a_prompt_list() -> None:
    prompt = [INVERT_VIDEO, audio_graph(60.0, factor=0.5)]
    with WhipServer(port=0, prompts=prompt) as server:
        async with WHIPClient(server.whip_url) as client:
            await client.publish(TestPatternTrack(160, 120), audio=True)
            await client.wait_connected(timeout=10)
            await async_wait_until(
                lambda: next(iter(server.sessions.values())).audio_frames_out >= 100, timeout=15
            )
            got = server.latest_audio(seconds=1.0)
            info = next(iter(server.sessions.values()))
    assert got is not None
    samples, rate = got
    assert rate == 48000 and samples.shape == (1, 48000)
    rms, freq = tone_stats(samples, rate)
    assert abs(freq - 440) < 5  # SineAudioTrack's tone, through Opus
    # halved: 6 dB below what arrived (aiortc's mono -> stereo upmix already took 3 dB)
    assert abs(info.audio_level_out_db - info.audio_level_in_db + 6.02) < 1.0
    assert abs(20 * np.log10(rms) - info.audio_level_out_db) < 1.5
    assert info.frames_processed > 0 and info.audio_buffer_ms == 60.0
    assert info.audio_latency_ms > 0 and info.audio_last_error is None
    assert info.to_dict()["audio_frames_out"] >= 100


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
async def test_g711_publisher_is_processed_at_8_khz(codec: str) -> None:
    """PCMU/PCMA decode to mono 8 kHz: the worker keeps that rate and buffers in it."""
    import aiohttp
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

    from comfywhip_nb.client.sources import SineAudioTrack

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transceiver = pc.addTransceiver(SineAudioTrack(), direction="sendonly")
    transceiver.setCodecPreferences(
        [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType == f"audio/{codec}"]
    )
    await pc.setLocalDescription(await pc.createOffer())
    with WhipServer(port=0, prompts=audio_graph(100.0, factor=0.5)) as server:
        try:
            async with aiohttp.ClientSession() as http:
                headers = {"Content-Type": "application/sdp"}
                async with http.post(
                    server.whip_url, data=pc.localDescription.sdp, headers=headers
                ) as response:
                    assert response.status == 201, await response.text()
                    answer = await response.text()
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            await async_wait_until(
                lambda: next(iter(server.sessions.values())).audio_frames_out >= 100, timeout=15
            )
            samples, rate = server.latest_audio(seconds=1.0)
            info = next(iter(server.sessions.values()))
        finally:
            await pc.close()
    assert rate == 8000 and samples.shape == (1, 8000) and info.audio_sample_rate == 8000
    assert abs(tone_stats(samples, rate)[1] - 440) < 5
    assert abs(info.audio_level_out_db - info.audio_level_in_db + 6.02) < 1.0
