"""The raw baseline receiver: aiortc + PyAV + torch, nothing from comfywhip_nb's runtime.

What a careful user would write by hand: an SDP POST answered by an ``RTCPeerConnection``
(signalling only: no sessions, no stats, no prompt engine), then per video track a loop
that awaits ``track.recv()`` and runs each frame on its own worker thread: decode to RGB,
to a float tensor, the op (``1 - image``, or that plus a sleep for the slow scenario), back
to uint8 and a video frame, then a 320-px JPEG preview. Frames are processed in order and
never dropped, so when processing is slower than input aiortc's receive queue grows.

It is a tuned baseline: the same conversion choices as ``frames.py`` (a cached single-thread
swscale context, numpy's uint8/float32 casts, a YUV-plane JPEG of an AREA-downscaled frame)
and the same torch intra-op thread count as the project's workers (half the CPUs), written
here with PyAV/numpy/torch directly. The ratio then measures the stack (sessions, mailbox,
prompt engine, threads), not conversion tricks a careful user would also find.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

import av
import numpy as np
import torch
from aiohttp import web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av.video.reformatter import VideoReformatter

from .procs import command_loop, loopback_only, quiet_logs
from .recorder import Recorder

try:
    import simplejpeg
except ImportError:  # pragma: no cover - Pillow fallback, as frames.py does
    simplejpeg = None

__all__ = ["baseline_main", "raw_process"]

TORCH_THREADS = max(1, (os.cpu_count() or 1) // 2)


_local = threading.local()


def _reformat(frame: av.VideoFrame, **kwargs: Any) -> av.VideoFrame:
    """A per-thread cached swscale context, single-threaded (decode shares the cores)."""
    reformatter = getattr(_local, "reformatter", None)
    if reformatter is None:
        reformatter = _local.reformatter = VideoReformatter()
    return reformatter.reformat(frame, threads=1, **kwargs)


def _jpeg_preview(frame: av.VideoFrame, width: int = 320) -> bytes:
    height = max(2, round(frame.height * width / frame.width) // 2 * 2)
    size = {"width": width, "height": height, "interpolation": "AREA"}
    if simplejpeg is None:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        rgb = _reformat(frame, format="rgb24", **size).to_ndarray()
        Image.fromarray(rgb).save(buffer, format="JPEG", quality=80)
        return buffer.getvalue()
    small = _reformat(frame, format="yuv420p", dst_color_range="JPEG", **size)
    y, u, v = (
        np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: plane.height, : plane.width]
        for plane in small.planes
    )
    return simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=80)


def raw_process(
    frame: av.VideoFrame, received_at: float, recorder: Recorder, delay: float, preview: bool
) -> None:
    """decode -> tensor -> op -> uint8 -> VideoFrame -> record -> JPEG preview."""
    if torch.get_num_threads() > TORCH_THREADS:
        torch.set_num_threads(TORCH_THREADS)
    rgb = _reformat(frame, format="rgb24").to_ndarray()
    image = torch.from_numpy(rgb.astype(np.float32)).unsqueeze(0).mul_(1.0 / 255.0)
    out = 1.0 - image
    if delay:
        time.sleep(delay)
    scaled = out[0].mul(255.0).add_(0.5).clamp_(0.0, 255.0)
    pixels = np.ascontiguousarray(scaled.numpy().astype(np.uint8))  # numpy's cast: faster
    out_frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
    out_frame.pts = frame.pts
    if frame.time_base is not None:
        out_frame.time_base = frame.time_base
    recorder.on_processed(out, received_at)
    if preview:
        _jpeg_preview(out_frame)


class _Baseline:
    """Owns the receiver's loop thread, its signalling endpoint and peer connections."""

    def __init__(self) -> None:
        self.recorder = Recorder()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-raw", daemon=True)
        self.thread.start()
        self.pcs: dict[str, RTCPeerConnection] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.tracks: list[MediaStreamTrack] = []
        self.executors: list[ThreadPoolExecutor] = []
        self.frames_in = 0
        self.processed = 0
        self.delay = 0.0
        self.preview = True
        self.runner: web.AppRunner | None = None
        self.port = self.run(self._serve(), 20.0)

    def run(self, coro: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _serve(self) -> int:
        app = web.Application()
        app.router.add_post("/offer", self._offer)
        app.router.add_delete("/offer/{id}", self._delete)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return int(self.runner.addresses[0][1])

    async def _offer(self, request: web.Request) -> web.Response:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        resource = secrets.token_urlsafe(8)
        self.pcs[resource] = pc
        pc.on("track", self._on_track)
        await pc.setRemoteDescription(RTCSessionDescription(await request.text(), "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.Response(
            status=201,
            text=pc.localDescription.sdp,
            content_type="application/sdp",
            headers={"Location": f"/offer/{resource}"},
        )

    async def _delete(self, request: web.Request) -> web.Response:
        pc = self.pcs.pop(request.match_info["id"], None)
        if pc is None:
            return web.Response(status=404)
        await pc.close()
        return web.Response(status=200)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            self.tracks.append(track)
            self.tasks.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        executor = ThreadPoolExecutor(1, thread_name_prefix="raw-proc")
        self.executors.append(executor)
        loop = asyncio.get_running_loop()
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                self.frames_in += 1
                received_at = time.monotonic()
                args = (frame, received_at, self.recorder, self.delay, self.preview)
                await loop.run_in_executor(executor, raw_process, *args)
                self.processed += 1

    async def _reset(self) -> None:
        pcs, self.pcs = list(self.pcs.values()), {}
        await asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks, self.tracks = [], []
        for executor in self.executors:
            executor.shutdown(wait=False, cancel_futures=True)
        self.executors = []

    def counters(self) -> dict[str, Any]:
        return {
            "frames_in": self.frames_in,
            "frames_processed": self.processed,
            "sessions": len(self.pcs),
            # aiortc's receive queue (private, unbounded): where an overloaded baseline waits
            "queued": sum(t._queue.qsize() for t in self.tracks),
        }

    def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        cmd = msg["cmd"]
        if cmd == "setup":
            self.recorder.reset()
            self.delay = float(msg.get("delay", 0.0))
            self.preview = msg.get("preview") == "frame"
            return {"url": f"http://127.0.0.1:{self.port}/offer"}
        if cmd == "measure":
            return self.recorder.measure(
                msg["sessions"],
                msg["warmup"],
                msg["duration"],
                self.counters,
                settle=float(msg.get("settle", 0.0)),
            )
        if cmd in ("reset", "quit"):
            self.run(self._reset(), 20.0)
            if cmd == "quit" and self.runner is not None:
                self.run(self.runner.cleanup(), 10.0)
                self.loop.call_soon_threadsafe(self.loop.stop)
            return {"ok": True}
        raise ValueError(f"unknown command {cmd!r}")


def baseline_main(conn: Connection) -> None:
    """Entry point of the baseline receiver child process."""
    loopback_only()
    quiet_logs()
    command_loop(conn, _Baseline().handle)
