"""A WHEP viewer built on aiortc: watch a channel's (or a session's) processed video.

``start`` POSTs a ``recvonly`` (or ``sendrecv``) video offer to a WHEP URL such as
``http://host:port/whep/<channel>`` and applies the answer; a task then reads every frame
(aiortc's receive queue never grows) and keeps the newest in ``latest`` and a count in
``frames``. ``delete`` ends the resource (DELETE; the status is returned), ``close`` closes
the peer connection and the HTTP session. Used by the tests and ``benchmarks/whep_viewers.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from ..rtc.teardown import break_peer_cycles

__all__ = ["WHEPViewer"]


class WHEPViewer:
    """One viewer: one peer connection, one HTTP session, the newest received frame."""

    def __init__(self, url: str, codec: str | None = None, sendrecv: bool = False) -> None:
        self.url, self.codec = url, codec
        self.direction = "sendrecv" if sendrecv else "recvonly"
        self.pc: RTCPeerConnection = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.http = aiohttp.ClientSession()
        self.location: str | None = None
        self.etag: str | None = None
        self.latest: av.VideoFrame | None = None
        self.frames = 0
        self._reader: asyncio.Task[None] | None = None
        self.pc.on("track", self._on_track)

    def _on_track(self, track: Any) -> None:
        self._reader = asyncio.ensure_future(self._read(track))

    async def _read(self, track: Any) -> None:
        try:
            while True:
                self.latest = await track.recv()
                self.frames += 1
        except (MediaStreamError, asyncio.CancelledError):
            pass

    async def start(self) -> aiohttp.ClientResponse:
        """POST the offer; on 201 the answer is applied. Returns the (read) response."""
        transceiver = self.pc.addTransceiver("video", direction=self.direction)
        if self.codec:
            caps = RTCRtpReceiver.getCapabilities("video").codecs
            wanted = (f"video/{self.codec}".lower(), "video/rtx")
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
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        await self.pc.close()
        break_peer_cycles(self.pc)
        await self.http.close()
