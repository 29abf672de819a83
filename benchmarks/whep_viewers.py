"""What each WHEP viewer costs the server: one shared encode per frame vs one per viewer.

    .venv/bin/python benchmarks/whep_viewers.py [--quick] [--viewers 0,1,2,4] [--json PATH]

Two parts:

1. Micro: the per-frame work a viewer adds, timed on the same 640x480 frames. Per-viewer
   encoding (aiortc's default) costs one ``Vp8Encoder.encode`` per viewer and frame; with
   the shared encoder (``egress.SharedEncoder``) a viewer costs one ``Vp8Encoder.pack``
   (RTP packetization of the shared packet), and the encode is paid once per frame.
2. End to end over loopback WebRTC: a server (this process, ImageInvert) with a publisher and
   N aiortc WHEP viewers in a child process, so the viewers' decoding is not billed to the
   server. Server CPU (``time.process_time``) is measured over a window once every viewer
   receives, for ``egress.SHARED_ENCODING`` True and False. The marginal cost of a viewer is
   the CPU above the 0-viewer run divided by N. Numbers are machine-specific: compare the
   two modes within one run, never across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from fractions import Fraction
from typing import Any

import aioice.ice
import av
import numpy as np

from comfywhip_nb.pipeline import egress

INVERT = {
    "1": {"class_type": "LoadTensor", "inputs": {}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
}


def loopback_only() -> None:
    """ICE on 127.0.0.1 only, as in the tests (no STUN, no other interface)."""
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"]


# -- part 1: micro ---------------------------------------------------------------------
def pattern_frames(count: int, width: int = 640, height: int = 480) -> list[av.VideoFrame]:
    from comfywhip_nb.client.sources import TestPatternTrack

    source = TestPatternTrack(width, height, 30)
    out = []
    for n in range(count):
        frame = av.VideoFrame.from_ndarray(source.render(n), format="rgb24")
        frame.pts, frame.time_base = n * 3000, Fraction(1, 90000)
        out.append(frame)
    return out


def micro(frames: list[av.VideoFrame]) -> dict[str, float]:
    from aiortc.codecs.vpx import Vp8Encoder

    encoder = Vp8Encoder()
    encoder.target_bitrate = egress.DEFAULT_BITRATE
    started = time.process_time()
    for frame in frames:
        encoder.encode(frame)
    per_viewer_encode = (time.process_time() - started) / len(frames)

    shared = egress.SharedEncoder("vp8")
    packets = []
    started = time.process_time()
    for n, frame in enumerate(frames):
        encoded = shared.encode(frame, n * 3000, n == 0)
        if encoded is not None:
            packets.append(encoded.packet)
    shared_encode = (time.process_time() - started) / len(frames)

    packer = Vp8Encoder()
    started = time.process_time()
    for packet in packets:
        packer.pack(packet)
    pack = (time.process_time() - started) / max(1, len(packets))
    return {
        "per_viewer_encode_ms": per_viewer_encode * 1e3,
        "shared_encode_ms": shared_encode * 1e3,
        "shared_pack_per_viewer_ms": pack * 1e3,
    }


# -- part 2: end to end ----------------------------------------------------------------
async def run_clients(url: str, viewers: int, duration: float, fps: float) -> None:
    """Child process: one publisher and ``viewers`` WHEP viewers; prints JSON lines."""
    import aiohttp
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError

    from comfywhip_nb.client.sources import TestPatternTrack
    from comfywhip_nb.client.whip_client import WHIPClient

    loopback_only()
    publisher = WHIPClient(f"{url}/whip")
    await publisher.publish(TestPatternTrack(640, 480, fps))
    counts = [0] * viewers
    pcs: list[Any] = []

    async def read(track: Any, index: int) -> None:
        with_error = (MediaStreamError, asyncio.CancelledError)
        try:
            while True:
                await track.recv()
                counts[index] += 1
        except with_error:
            pass

    async with aiohttp.ClientSession() as http:
        for index in range(viewers):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTransceiver("video", direction="recvonly")
            pc.on("track", lambda t, i=index: asyncio.ensure_future(read(t, i)))
            await pc.setLocalDescription(await pc.createOffer())
            async with http.post(
                f"{url}/whep/default",
                data=pc.localDescription.sdp,
                headers={"Content-Type": "application/sdp"},
            ) as resp:
                assert resp.status == 201, await resp.text()
                answer = await resp.text()
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            pcs.append(pc)
        deadline = time.monotonic() + 20
        while not all(counts) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        print(json.dumps({"ready": True}), flush=True)
        start_counts, started = list(counts), time.monotonic()
        await asyncio.sleep(duration)
        elapsed = time.monotonic() - started
        fps_each = [(c - s) / elapsed for c, s in zip(counts, start_counts, strict=True)]
        print(json.dumps({"viewer_fps": fps_each}), flush=True)
    for pc in pcs:
        await pc.close()
    await publisher.unpublish()


def measure(viewers: int, shared: bool, window: float, warmup: float, fps: float) -> dict:
    from comfywhip_nb.server import WhipServer

    egress.SHARED_ENCODING = shared
    with WhipServer(port=0, prompts=INVERT) as server:
        child = subprocess.Popen(
            [sys.executable, __file__, "--clients", server.url, str(viewers),
             str(warmup + window + 2), str(fps)],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert child.stdout is not None
            assert json.loads(child.stdout.readline()).get("ready"), "clients did not start"
            time.sleep(warmup)
            before = server.stats()
            cpu0, wall0 = time.process_time(), time.monotonic()
            time.sleep(window)
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
            after = server.stats()
            viewer_fps = json.loads(child.stdout.readline())["viewer_fps"]
            child.wait(30)
        finally:
            if child.poll() is None:
                child.kill()
        sid = next(s for s, info in after.items() if info["kind"] == "whip")
        processed = after[sid]["frames_processed"] - before[sid]["frames_processed"]
        feed = egress._FEEDS.get(server.core, {}).get(("channel", "default"))
        encoders = {c: e.frames_encoded for c, e in feed.encoders.items()} if feed else {}
    return {
        "viewers": viewers,
        "mode": "shared" if shared else "per-viewer",
        "server_cpu_pct": 100 * cpu / wall,
        "cpu_ms_per_frame": 1e3 * cpu / max(1, processed),
        "fps_processed": processed / wall,
        "viewer_fps_mean": float(np.mean(viewer_fps)) if viewer_fps else 0.0,
        "shared_frames_encoded": encoders,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="viewers 0,2; 3 s windows")
    parser.add_argument("--viewers", default="0,1,2,4", help="comma-separated viewer counts")
    parser.add_argument("--fps", type=float, default=15.0, help="publisher frame rate")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--clients", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.clients:
        url, viewers, duration, fps = args.clients
        asyncio.run(run_clients(url, int(viewers), float(duration), float(fps)))
        return 0
    loopback_only()
    counts = [0, 2] if args.quick else [int(v) for v in args.viewers.split(",")]
    window, warmup = (3.0, 2.0) if args.quick else (6.0, 3.0)

    micro_result = micro(pattern_frames(30 if args.quick else 120))
    print("per-frame work one viewer adds (640x480 VP8, process CPU):")
    for key, value in micro_result.items():
        print(f"  {key:28s} {value:8.3f} ms")

    rows = []
    print(f"\nserver CPU with N viewers ({args.fps:g} fps publisher, ImageInvert, {window:g} s):")
    print(f"  {'mode':10s} {'N':>2s} {'cpu %':>7s} {'ms/frame':>9s} {'fps':>6s} "
          f"{'viewer fps':>10s} {'per viewer ms/frame':>20s}")  # fmt: skip
    for shared in (True, False):
        base = None
        for n in counts:
            row = measure(n, shared, window, warmup, args.fps)
            base = row["cpu_ms_per_frame"] if n == 0 else base
            marginal = (row["cpu_ms_per_frame"] - base) / n if n and base is not None else 0.0
            row["marginal_ms_per_viewer_frame"] = marginal
            rows.append(row)
            print(f"  {row['mode']:10s} {n:2d} {row['server_cpu_pct']:7.1f} "
                  f"{row['cpu_ms_per_frame']:9.2f} {row['fps_processed']:6.1f} "
                  f"{row['viewer_fps_mean']:10.1f} {marginal:20.2f}")  # fmt: skip
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"micro": micro_result, "end_to_end": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
