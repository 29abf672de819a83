"""Audio out (issue 15, part 4): WHEP viewers and ``/offer`` peers hear the processed audio.

Real aiortc peers over loopback: a WHIP publisher sends a sine (or the flash/beep clip), the
server runs an audio prompt (built-in LiveAudioGain/LiveAudioMute, or a custom V1 node
registered here) or passes audio through, and aiortc viewers decode what arrives. Levels
are compared with a passthrough run in the same test (aiortc's publisher upmixes mono to
stereo at -3 dB; Opus adds its own error), never with absolute numbers. The sync test
prints its offsets (``-s`` shows them).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from graphs import AudioScale
from helpers import async_wait_until, server_threads, tone_stats

from comfywhip_nb import WhipServer, register_nodes
from comfywhip_nb.client.sources import FlashBeepClip, SineAudioTrack, TestPatternTrack
from comfywhip_nb.client.whep_viewer import WHEPViewer
from comfywhip_nb.prompts.registry import unregister_nodes
from comfywhip_nb.rtc.audio_jitter import AUDIO_PREFETCH
from comfywhip_nb.rtc.teardown import break_peer_cycles


@pytest.fixture(autouse=True)
def scale_node() -> Iterator[None]:
    register_nodes({"TestEgressScale": AudioScale})
    yield
    unregister_nodes("TestEgressScale")


@pytest.fixture
async def server() -> AsyncIterator[WhipServer]:
    srv = WhipServer(port=0, media_timeout=10.0).start()
    try:
        yield srv
    finally:
        await asyncio.get_running_loop().run_in_executor(None, srv.stop)
    await async_wait_until(lambda: not server_threads(), timeout=5)  # no worker left behind


def scale_graph(factor: float, buffer_ms: float = 20.0) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadAudioTensor", "inputs": {"buffer_size": buffer_ms}},
        "2": {"class_type": "TestEgressScale", "inputs": {"audio": ["1", 0], "factor": factor}},
        "3": {"class_type": "SaveAudioTensor", "inputs": {"audio": ["2", 0]}},
    }


def live_graph(class_type: str, **inputs: Any) -> dict[str, Any]:
    """A built-in live audio node (``prompts/nodes/audio_live.py``) on 20 ms buffers."""
    return {
        "1": {"class_type": "LoadAudioTensor", "inputs": {"buffer_size": 20.0}},
        "2": {"class_type": class_type, "inputs": {"audio": ["1", 0], **inputs}},
        "3": {"class_type": "SaveAudioTensor", "inputs": {"audio": ["2", 0]}},
    }


def db(rms: float) -> float:
    return 20 * float(np.log10(max(rms, 1e-9)))


class Publisher:
    """A WHIP publisher sending the tracks given (``WHIPClient`` sends its own sine)."""

    def __init__(self, url: str, *tracks: MediaStreamTrack, audio_codec: str = "") -> None:
        self.url, self.tracks, self.audio_codec = url, tracks, audio_codec
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.location: str | None = None

    async def start(self) -> Publisher:
        for track in self.tracks:
            transceiver = self.pc.addTransceiver(track, direction="sendonly")
            if track.kind == "audio" and self.audio_codec:
                codecs = RTCRtpSender.getCapabilities("audio").codecs
                wanted = f"audio/{self.audio_codec}"
                transceiver.setCodecPreferences([c for c in codecs if c.mimeType == wanted])
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                self.url,
                data=self.pc.localDescription.sdp,
                headers={"Content-Type": "application/sdp"},
            ) as resp,
        ):
            assert resp.status == 201, await resp.text()
            self.location = resp.headers["Location"]  # absolute (http/whip.py)
            answer = await resp.text()
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        return self

    async def stop(self) -> None:
        if self.location is not None:
            async with aiohttp.ClientSession() as http, http.delete(self.location):
                pass
            self.location = None
        for track in self.tracks:
            track.stop()
        await self.pc.close()
        break_peer_cycles(self.pc)


async def sine_publisher(server: WhipServer, freq: float = 440.0, channel: str = "") -> Publisher:
    url = server.whip_url + (f"?channelId={channel}" if channel else "")
    return await Publisher(url, TestPatternTrack(160, 120, 15), SineAudioTrack(freq)).start()


def publisher_info(server: WhipServer) -> Any:
    return next(i for i in server.sessions.values() if i.kind == "whip")


async def heard(server: WhipServer, viewer: WHEPViewer, version: int | None = None) -> Any:
    """(rms, Hz) of the viewer's last 0.6 s, once the publisher runs prompt ``version`` and
    a second of audio has gone through since."""
    if version is not None:
        await async_wait_until(lambda: publisher_info(server).prompt_version >= version, 10)
    start = viewer.audio_frames
    await async_wait_until(lambda: viewer.audio_frames >= start + 50, timeout=15)
    return tone_stats(viewer.audio_samples(0.6), viewer.audio_rate)


async def test_viewer_hears_passthrough_gain_mute_and_a_custom_node(server: WhipServer) -> None:
    publisher = await sine_publisher(server)
    viewer = WHEPViewer(f"{server.url}/whep/default", audio=True)
    try:
        resp = await viewer.start()
        assert resp.status == 201
        assert "m=audio" in (answer := await resp.text()) and answer.count("a=sendonly") == 2
        passthrough = await heard(server, viewer)
        assert abs(passthrough[1] - 440) < 5
        session = next(s for s in server.core.sessions.values() if s.kind == "whip")
        receivers = [t.receiver for t in session.pc.getTransceivers() if t.kind == "audio"]
        jitter = [r._RTCRtpReceiver__jitter_buffer._prefetch for r in receivers]
        assert jitter == [AUDIO_PREFETCH]  # rtc/audio_jitter.py: 20 ms, not aiortc's 80
        del session, receivers
        assert viewer.audio_rate == 48000  # Opus
        levels = {}
        prompts = {
            "0 dB": live_graph("LiveAudioGain", gain_db=0.0),
            "mute": live_graph("LiveAudioMute", mute=True),
            "x0.5": scale_graph(0.5),  # the custom V1 node
        }
        for name, graph in prompts.items():
            version = server.set_prompts(graph)
            rms, freq = await heard(server, viewer, version)
            levels[name] = db(rms) - db(passthrough[0])
            if name != "mute":
                assert abs(freq - 440) < 5, (name, freq)
            assert publisher_info(server).audio_buffer_ms == 20.0
        print(f"\nlevels against passthrough ({db(passthrough[0]):.1f} dBFS): {levels}")
        assert abs(levels["0 dB"]) < 1.5
        assert db(passthrough[0]) + levels["mute"] < -50
        assert abs(levels["x0.5"] + 6.02) < 1.5
        assert publisher_info(server).audio_last_error is None
    finally:
        await viewer.close()
        await publisher.stop()


async def test_viewer_offering_to_send_audio_gets_none(server: WhipServer) -> None:
    """An audio section the viewer only sends on is answered without a track of ours."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    tone = SineAudioTrack()
    try:
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver(tone, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{server.url}/whep/default",
                data=pc.localDescription.sdp,
                headers={"Content-Type": "application/sdp"},
            ) as resp,
        ):
            assert resp.status == 201, await resp.text()
            answer = await resp.text()
            audio_section = answer[answer.index("m=audio") :]
            assert "a=recvonly" in audio_section and "a=sendonly" not in audio_section
            assert not server.egress.feeds[("channel", "default")].audio.tracks
            async with http.delete(resp.headers["Location"]) as deleted:
                assert deleted.status == 200
    finally:
        tone.stop()
        await pc.close()
        break_peer_cycles(pc)
    await async_wait_until(lambda: not server.core.sessions, timeout=15)


async def test_viewers_share_one_audio_encoder_per_codec(server: WhipServer) -> None:
    server.set_prompts(scale_graph(0.5))
    publisher = await sine_publisher(server)
    viewers = [WHEPViewer(f"{server.url}/whep/default", audio=True) for _ in range(2)]
    viewers.append(WHEPViewer(f"{server.url}/whep/default", audio=True, audio_codec="PCMU"))
    try:
        for viewer in viewers:
            assert (await viewer.start()).status == 201
        for viewer in viewers:
            await async_wait_until(lambda v=viewer: v.audio_frames >= 100, timeout=15)
        feed = server.egress.feeds[("channel", "default")]
        assert set(feed.audio.encoders) == {"opus", "pcmu"}
        assert sorted(t.codec or "" for t in feed.audio.tracks) == ["opus", "opus", "pcmu"]
        info = publisher_info(server)
        for encoder in feed.audio.encoders.values():
            # once per processed 20 ms, not once per viewer (+2: encoder/resampler edges)
            assert encoder.frames_encoded <= info.audio_frames_out + 2
        assert [v.audio_rate for v in viewers] == [48000, 48000, 8000]
        for viewer in viewers:
            rms, freq = tone_stats(viewer.audio_samples(0.6), viewer.audio_rate)
            assert abs(freq - 440) < 5 and abs(db(rms) - info.audio_level_out_db) < 1.5
    finally:
        for viewer in viewers:
            await viewer.close()
        await publisher.stop()
    await async_wait_until(lambda: not server.egress.feeds, timeout=10)


async def test_g711_publisher_reaches_an_opus_viewer(server: WhipServer) -> None:
    """8 kHz mono in (passed through), 48 kHz stereo Opus out, at the same level."""
    publisher = await Publisher(server.whip_url, SineAudioTrack(), audio_codec="PCMU").start()
    viewer = WHEPViewer(f"{server.url}/whep/default", audio=True)
    try:
        assert (await viewer.start()).status == 201
        rms, freq = await heard(server, viewer)
        info = publisher_info(server)
        assert info.audio_sample_rate == 8000 and viewer.audio_rate == 48000
        assert abs(freq - 440) < 5 and abs(db(rms) - info.audio_level_out_db) < 1.5
    finally:
        await viewer.close()
        await publisher.stop()


async def test_audio_follows_the_newest_publisher(server: WhipServer) -> None:
    viewer = WHEPViewer(f"{server.url}/whep/late", audio=True)
    first = second = None
    try:
        assert (await viewer.start()).status == 201
        await asyncio.sleep(0.5)
        assert viewer.audio_frames == 0  # no publisher: the viewer hears nothing (no packets)
        first = await sine_publisher(server, 440.0, channel="late")
        got = await heard(server, viewer)
        encoders = server.egress.feeds[("channel", "late")].audio.encoders
        assert abs(got[1] - 440) < 5, (got, {k: vars(e) for k, e in encoders.items()})
        await first.stop()
        second = await sine_publisher(server, 660.0, channel="late")
        assert abs((await heard(server, viewer))[1] - 660) < 5
        feed = server.egress.feeds[("channel", "late")]
        assert feed.audio.source is feed.source is not None
    finally:
        await viewer.close()
        for publisher in (first, second):
            if publisher is not None:
                await publisher.stop()


async def test_offer_sends_back_the_processed_audio(server: WhipServer) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(TestPatternTrack(160, 120, 15), "sendrecv")
    pc.addTransceiver(SineAudioTrack(), "sendrecv")
    audio: list[np.ndarray] = []
    tasks: list[asyncio.Task[None]] = []

    async def consume(track: Any) -> None:
        try:
            while True:
                frame = await track.recv()
                if isinstance(frame, av.AudioFrame):
                    audio.append(frame.to_ndarray().reshape(-1, 2).T / 32768.0)
        except MediaStreamError:
            pass

    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(consume(track))))
    await pc.setLocalDescription(await pc.createOffer())
    body = {
        "offer": {"sdp": pc.localDescription.sdp, "type": "offer"},
        "prompts": [scale_graph(0.5, buffer_ms=40.0)],
    }
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{server.url}/offer", json=body) as resp,
        ):
            assert resp.status == 200, await resp.text()
            answer = await resp.json()
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        await async_wait_until(lambda: len(audio) >= 150, timeout=20)
        info = server.sessions[answer["session_id"]]
        rms, freq = tone_stats(np.concatenate(audio[-30:], axis=1), 48000)
        assert abs(freq - 440) < 5
        assert info.audio_buffer_ms == 40.0
        # halved on the way: 6 dB under what the server received from this peer
        assert abs(db(rms) - (info.audio_level_in_db - 6.02)) < 1.5
        feed = server.egress.feeds[("session", answer["session_id"])]
        assert set(feed.audio.encoders) == {"opus"}
    finally:
        await pc.close()
        break_peer_cycles(pc)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await async_wait_until(lambda: not server.core.sessions, timeout=15)
    assert not server.egress.feeds


async def test_sendrecv_echo_sends_back_the_processed_audio(server: WhipServer) -> None:
    server.core.config.echo_processed = True
    server.set_prompts(scale_graph(0.5))
    echo = WHEPViewer(server.whip_url, sendrecv=True)  # its readers keep what comes back
    tracks = (TestPatternTrack(160, 120, 15), SineAudioTrack())
    try:
        for track in tracks:
            echo.pc.addTransceiver(track, direction="sendrecv")
        await echo.pc.setLocalDescription(await echo.pc.createOffer())
        resp = await echo.http.post(
            echo.url, data=echo.pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}
        )
        assert resp.status == 201
        answer = await resp.text()
        assert answer.count("a=sendrecv") == 2
        await echo.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await async_wait_until(lambda: echo.audio_frames >= 100, timeout=15)
        rms, freq = tone_stats(echo.audio_samples(0.6), echo.audio_rate)
        info = publisher_info(server)
        assert abs(freq - 440) < 5
        assert abs(db(rms) - (info.audio_level_in_db - 6.02)) < 1.5
    finally:
        for track in tracks:
            track.stop()
        await echo.close()


# -- A/V sync ----------------------------------------------------------------------------------
class OnsetTimer:
    """Arrival times (monotonic) at the viewer of flash starts and beep starts."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.flashes: list[float] = []
        self.beeps: list[float] = []
        self._white = self._loud = False

    def on_frame(self, frame: Any, arrival: float) -> None:
        if isinstance(frame, av.VideoFrame):
            white = float(frame.to_ndarray(format="gray").mean()) > 128
            if white and not self._white:
                self.flashes.append(arrival)
            self._white = white
        else:
            samples = frame.to_ndarray().astype(np.float64) / 32768.0
            loud = float(np.sqrt(np.mean(samples**2))) > 0.05  # the beep: ~0.35 rms
            if loud and not self._loud:
                self.beeps.append(arrival)
            self._loud = loud

    def offsets_ms(self) -> list[float]:
        """Audio minus video for each flash that has a beep within half a period."""
        out = []
        for flash in self.flashes[1:]:  # the first one may predate the connection
            beep = min(self.beeps, key=lambda b: abs(b - flash), default=None)
            if beep is not None and abs(beep - flash) < self.period / 2:
                out.append((beep - flash) * 1000)
        return out


async def measure_sync(server: WhipServer, flashes: int = 8, period: float = 1.0) -> list[float]:
    clip = FlashBeepClip(160, 120, 30, period=period, length=0.2)
    publisher = await Publisher(server.whip_url, clip.video, clip.audio).start()
    timer = OnsetTimer(period)
    viewer = WHEPViewer(f"{server.url}/whep/default", audio=True, on_frame=timer.on_frame)
    try:
        assert (await viewer.start()).status == 201
        deadline = time.monotonic() + flashes * period + 10
        while len(timer.offsets_ms()) < flashes and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return timer.offsets_ms()
    finally:
        await viewer.close()
        await publisher.stop()


@pytest.mark.parametrize("buffer_ms", [None, 20.0, 500.0])
async def test_audio_and_video_arrive_in_sync(server: WhipServer, buffer_ms: float | None) -> None:
    """Under 100 ms with passthrough or a short buffer. A long buffer delays audio by up to
    the buffer (video is not held back to match): latency = buffer + one frame."""
    if buffer_ms is not None:
        server.set_prompts(scale_graph(1.0, buffer_ms))
    long = (buffer_ms or 0) > 100  # a period long enough to pair each flash with its beep
    offsets = await measure_sync(server, 5 if long else 8, 2.0 if long else 1.0)
    median = statistics.median(abs(o) for o in offsets) if offsets else None
    print(f"\nA/V offsets (audio - video, ms), buffer {buffer_ms}: median {median}, {offsets}")
    assert len(offsets) >= 4, offsets
    limit = (buffer_ms or 0) + 100 if long else 100
    assert statistics.median(abs(o) for o in offsets) < limit, offsets
