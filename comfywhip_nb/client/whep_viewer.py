"""A WHEP viewer built on aiortc: watch a channel's (or a session's) processed video, and
hear its audio.

``start`` POSTs a ``recvonly`` (or ``sendrecv``) video offer, plus an audio section with
``audio=True``, to a WHEP URL such as ``http://host:port/whep/<channel>`` and applies the
answer; a task per track then reads every frame (aiortc's receive queue never grows), keeps
the newest video frame in ``latest`` and a count in ``frames``, and the last ``keep_audio_s``
of received audio (``audio_samples``, float32 ``[channels, samples]``) with a count in
``audio_frames``. ``on_frame(frame, arrival)`` sees every frame with its monotonic arrival
time (the sync test times flashes and beeps with it). ``delete`` ends the resource (DELETE;
the status is returned), ``close`` closes the peer connection and the HTTP session. Used by
the tests and ``benchmarks/whep_viewers.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from ..rtc.teardown import break_peer_cycles

__all__ = ["WHEPViewer"]


class WHEPViewer:
    """One viewer: one peer connection, one HTTP session, the newest received frame."""

    def __init__(
        self,
        url: str,
        codec: str | None = None,
        sendrecv: bool = False,
        *,
        audio: bool = False,
        audio_codec: str | None = None,
        keep_audio_s: float = 30.0,
        on_frame: Callable[[av.AudioFrame | av.VideoFrame, float], None] | None = None,
    ) -> None:
        self.url, self.codec = url, codec
        self.audio, self.audio_codec, self.keep_audio_s = audio, audio_codec, keep_audio_s
        self.on_frame = on_frame
        self.direction = "sendrecv" if sendrecv else "recvonly"
        self.pc: RTCPeerConnection = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.http = aiohttp.ClientSession()
        self.location: str | None = None
        self.etag: str | None = None
        self.latest: av.VideoFrame | None = None
        self.frames = 0
        self.audio_frames = 0
        self.audio_rate = 0
        self._audio: deque[np.ndarray] = deque()
        self._audio_len = 0
        self._readers: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track: Any) -> None:
        self._readers.append(asyncio.ensure_future(self._read(track)))

    async def _read(self, track: Any) -> None:
        try:
            while True:
                frame = await track.recv()
                if self.on_frame is not None:
                    self.on_frame(frame, time.monotonic())
                if isinstance(frame, av.AudioFrame):
                    self._keep_audio(frame)
                else:
                    self.latest = frame
                    self.frames += 1
        except (MediaStreamError, asyncio.CancelledError):
            pass

    def _keep_audio(self, frame: av.AudioFrame) -> None:
        """aiortc decodes to packed s16 (Opus: stereo 48 kHz; G.711: mono 8 kHz)."""
        channels = len(frame.layout.channels)
        data = frame.to_ndarray().reshape(-1, channels).T.astype(np.float32) / 32768.0
        if frame.sample_rate != self.audio_rate:
            self._audio.clear()
            self._audio_len, self.audio_rate = 0, frame.sample_rate
        self._audio.append(data)
        self._audio_len += data.shape[1]
        while self._audio_len - self._audio[0].shape[1] >= self.keep_audio_s * self.audio_rate:
            self._audio_len -= self._audio.popleft().shape[1]
        self.audio_frames += 1

    def audio_samples(self, seconds: float | None = None) -> np.ndarray:
        """The last ``seconds`` (default: all kept) of received audio, ``[channels, T]``."""
        if not self._audio:
            return np.zeros((1, 0), dtype=np.float32)
        joined = np.concatenate(list(self._audio), axis=1)
        if seconds is not None:
            joined = joined[:, max(0, joined.shape[1] - int(seconds * self.audio_rate)) :]
        return joined

    async def start(self) -> aiohttp.ClientResponse:
        """POST the offer; on 201 the answer is applied. Returns the (read) response."""
        transceiver = self.pc.addTransceiver("video", direction=self.direction)
        if self.codec:
            caps = RTCRtpReceiver.getCapabilities("video").codecs
            wanted = (f"video/{self.codec}".lower(), "video/rtx")
            transceiver.setCodecPreferences([c for c in caps if c.mimeType.lower() in wanted])
        if self.audio:
            transceiver = self.pc.addTransceiver("audio", direction=self.direction)
            if self.audio_codec:
                caps = RTCRtpReceiver.getCapabilities("audio").codecs
                wanted = (f"audio/{self.audio_codec}".lower(),)
                transceiver.setCodecPreferences([c for c in caps if c.mimeType.lower() in wanted])
        await self.pc.setLocalDescription(await self.pc.createOffer())
        resp = await self.http.post(
            self.url,
            data=self.pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp"},
        )
        if resp.status == 201:
            self.location, self.etag = resp.headers["Location"], resp.headers["ETag"]
            answer = await resp.text()
            await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        return resp

    async def delete(self) -> int:
        if self.location is None:
            raise RuntimeError("the viewer was not started")
        async with self.http.delete(self.location) as resp:
            return resp.status

    async def close(self) -> None:
        for reader in self._readers:
            reader.cancel()
        self._readers.clear()
        await self.pc.close()
        break_peer_cycles(self.pc)
        await self.http.close()
