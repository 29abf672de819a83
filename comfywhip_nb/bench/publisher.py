"""The publisher process: N aiortc peer connections sending stamped frames, send times kept.

For (h) each connection sends a paced sine (``TimedSine``, Opus) and no video instead; its
send times are kept per 20 ms frame.

The same code publishes to the raw baseline and to the project (a plain SDP POST, which is
what WHIP is), so the two receivers see identical bytes. Each frame carries its session
number and index in a luma stamp (``stamp.py``); ``time.monotonic()`` at the moment the frame
is handed to aiortc is recorded as its capture time. CLOCK_MONOTONIC is system-wide on
Linux, so receivers in other processes can subtract it directly.
"""

from __future__ import annotations

import asyncio
import fractions
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError
from yarl import URL

from ..client.sources import SineAudioTrack
from .procs import command_loop, cpu_seconds, loopback_only, quiet_logs
from .stamp import stamp_yuv420p

__all__ = ["StampedTrack", "TimedSine", "content_cycle", "publisher_main"]

CLOCK = 90000
CYCLE = 30


def content_cycle(width: int, height: int, count: int = CYCLE) -> list[np.ndarray]:
    """``count`` yuv420p frames of moving, textured content (precomputed: the publisher
    should spend its CPU on encoding, as a camera pipeline would)."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:height, 0:width]
    base = (96 + 64 * np.sin(x / 23.0) * np.cos(y / 17.0)).astype(np.float32)
    base += rng.normal(0, 6, (height, width)).astype(np.float32)
    cw, ch = width // 2, height // 2
    u = np.tile(np.linspace(80, 176, cw, dtype=np.float32), (ch, 1))
    v = np.tile(np.linspace(176, 80, ch, dtype=np.float32)[:, None], (1, cw))
    frames = []
    box = max(8, height // 6)
    for n in range(count):
        luma = np.roll(base, n * 3, axis=1)
        bx = int((width - box) * (0.5 + 0.5 * np.sin(n * 2 * np.pi / count)))
        by = int((height - box) * (0.5 + 0.5 * np.cos(n * 2 * np.pi / count)))
        luma[by : by + box, bx : bx + box] = 230
        planes = [luma, np.roll(u, n, axis=1), np.roll(v, n, axis=0)]
        flat = np.concatenate([p.clip(0, 255).astype(np.uint8).reshape(-1) for p in planes])
        frames.append(flat.reshape(height * 3 // 2, width))
    return frames


class StampedTrack(VideoStreamTrack):
    """Paced (``fps``) or unpaced (``fps=None``: as fast as aiortc pulls) stamped frames."""

    def __init__(
        self, session: int, width: int, height: int, fps: float | None, cycle: list[np.ndarray]
    ) -> None:
        super().__init__()
        self.session, self.width, self.height, self.fps = session, width, height, fps
        self._cycle = cycle
        self._start: float | None = None
        self._next = 0.0
        self.send_times: list[float] = []

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = self._next = now
        if self.fps:
            if self._next > now:
                await asyncio.sleep(self._next - now)
            # like a camera: never burst to catch up after a stall
            self._next = max(self._next + 1.0 / self.fps, time.monotonic() - 0.5 / self.fps)
        else:
            await asyncio.sleep(0)
        n = len(self.send_times)
        yuv = self._cycle[n % len(self._cycle)].copy()
        stamp_yuv420p(yuv, self.width, self.height, self.session, n)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        sent = time.monotonic()
        frame.pts = round((sent - self._start) * CLOCK)
        frame.time_base = fractions.Fraction(1, CLOCK)
        self.send_times.append(sent)
        return frame


class TimedSine(SineAudioTrack):
    """A paced 440 Hz sine that notes when each 20 ms frame went to aiortc: frame ``n``
    (pts ``n * 960`` at 48 kHz) in ``send_times[n]``, for (h)'s end-to-end latency."""

    def __init__(self) -> None:
        super().__init__(volume=0.3)
        self.send_times: list[float] = []

    async def recv(self) -> av.AudioFrame:
        frame = await super().recv()
        self.send_times.append(time.monotonic())
        return frame


class _Publisher:
    """Owns the publisher's event loop thread and its peer connections."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-pub", daemon=True)
        self.thread.start()
        self.pcs: list[RTCPeerConnection] = []
        self.tracks: list[StampedTrack] = []
        self.audio_tracks: list[TimedSine] = []
        self.locations: list[str] = []
        self.cycles: dict[tuple[int, int], list[np.ndarray]] = {}
        self.cpu_start, self.wall_start = cpu_seconds(), time.monotonic()

    def run(self, coro: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def start(self, msg: dict[str, Any]) -> dict[str, Any]:
        width, height = int(msg["width"]), int(msg["height"])
        key = (width, height)
        if key not in self.cycles:
            self.cycles = {key: content_cycle(width, height)}
        codecs = [
            c
            for c in RTCRtpSender.getCapabilities("video").codecs
            if c.mimeType.lower() in (f"video/{msg['codec'].lower()}", "video/rtx")
        ]
        audio_only = msg.get("media") == "audio"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            for session in range(int(msg["sessions"])):
                pc = RTCPeerConnection(
                    RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
                )
                self.pcs.append(pc)
                if audio_only:  # (h): a microphone alone, a paced 440 Hz sine in Opus
                    tone = TimedSine()
                    self.audio_tracks.append(tone)
                    pc.addTransceiver(tone, direction="sendonly")
                else:
                    track = StampedTrack(session, width, height, msg.get("fps"), self.cycles[key])
                    self.tracks.append(track)
                    transceiver = pc.addTransceiver(track, direction="sendonly")
                    transceiver.setCodecPreferences(codecs)
                await pc.setLocalDescription(await pc.createOffer())
                headers = {"Content-Type": "application/sdp"}
                body = pc.localDescription.sdp
                async with http.post(msg["url"], data=body, headers=headers) as resp:
                    if resp.status != 201:
                        raise RuntimeError(f"POST {msg['url']}: {resp.status} {await resp.text()}")
                    self.locations.append(str(resp.url.join(URL(resp.headers["Location"]))))
                    answer = await resp.text()
                await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        deadline = time.monotonic() + 20.0
        while any(pc.connectionState != "connected" for pc in self.pcs):
            if time.monotonic() > deadline:
                raise RuntimeError("publisher: peer connections did not connect in 20 s")
            await asyncio.sleep(0.02)
        self.cpu_start, self.wall_start = cpu_seconds(), time.monotonic()
        return {"ok": True, "connected_at": self.wall_start}

    async def stop(self) -> dict[str, Any]:
        send_times = [list(t.send_times) for t in self.tracks]
        audio_send_times = [list(t.send_times) for t in self.audio_tracks]
        cpu_share = (cpu_seconds() - self.cpu_start) / max(time.monotonic() - self.wall_start, 1e-6)
        for track in [*self.tracks, *self.audio_tracks]:
            track.stop()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            for location in self.locations:
                try:
                    async with http.delete(location):
                        pass
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass
        await asyncio.gather(*(pc.close() for pc in self.pcs), return_exceptions=True)
        self.pcs, self.tracks, self.audio_tracks, self.locations = [], [], [], []
        return {
            "send_times": send_times,
            "audio_send_times": audio_send_times,
            "cpu_share": cpu_share,
        }

    def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        if msg["cmd"] == "start":
            return self.run(self.start(msg), 60.0)
        if msg["cmd"] == "stop":
            return self.run(self.stop(), 30.0)
        if msg["cmd"] == "quit":
            if self.pcs:
                self.run(self.stop(), 30.0)
            self.loop.call_soon_threadsafe(self.loop.stop)
            return {"ok": True}
        raise ValueError(f"unknown command {msg['cmd']!r}")


def publisher_main(conn: Connection) -> None:
    """Entry point of the publisher child process."""
    loopback_only()
    quiet_logs()
    command_loop(conn, _Publisher().handle)
