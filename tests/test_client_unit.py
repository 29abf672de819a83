"""client.py and testsrc.py without the real WhipServer: sources, errors, and the HTTP
exchange against a tiny aiohttp WHIP endpoint (real aiortc answerer) defined here."""

from __future__ import annotations

import asyncio
import fractions
import importlib.util
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aioice.ice
import av
import numpy as np
import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError
from PIL import Image

from comfywhip_nb.client.sources import (
    FileLoopTrack,
    ImageLoopTrack,
    SineAudioTrack,
    TestPatternTrack,
    open_source,
)
from comfywhip_nb.client.whip_client import (
    PublishError,
    WHIPClient,
    _prompts_param,
    run_publish,
    strip_candidates,
)
from comfywhip_nb.rtc.ice import IceServer, parse_sdpfrag

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gather only 127.0.0.1 so ICE never tries other interfaces (RECIPES.md)."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda *a, **k: ["127.0.0.1"])


# --- sources -------------------------------------------------------------------------------


async def test_pattern_frames_size_pts_and_motion() -> None:
    track = TestPatternTrack(width=320, height=240, fps=30)
    frames = [await track.recv() for _ in range(4)]
    assert {(f.width, f.height) for f in frames} == {(320, 240)}
    assert [f.pts for f in frames] == [0, 3000, 6000, 9000]
    assert frames[0].time_base == fractions.Fraction(1, 90000)
    arrays = [f.to_ndarray(format="rgb24") for f in frames]
    assert all(not np.array_equal(a, b) for a, b in itertools.pairwise(arrays))
    assert [TestPatternTrack.decode_frame_code(a) for a in arrays] == [0, 1, 2, 3]
    assert track.frames_sent == 4
    track.stop()


async def test_pattern_pacing_is_real_time() -> None:
    track = TestPatternTrack(64, 48, fps=50)
    loop = asyncio.get_running_loop()
    await track.recv()
    start = loop.time()
    for _ in range(5):
        frame = await track.recv()
    assert loop.time() - start >= 0.09
    assert frame.pts == 5 * 90000 // 50


async def test_solid_color_mode_and_live_change() -> None:
    track = TestPatternTrack(64, 48, solid_color=(10, 200, 30))
    first = (await track.recv()).to_ndarray(format="rgb24")
    assert first.shape == (48, 64, 3) and (first == (10, 200, 30)).all()
    track.set_color((255, 0, 128))
    assert ((await track.recv()).to_ndarray(format="rgb24") == (255, 0, 128)).all()
    with pytest.raises(ValueError, match=r"0\.\.255"):
        track.set_color((256, 0, 0))
    track.set_color(None)  # back to the moving pattern
    assert len(np.unique(track.render(3).reshape(-1, 3), axis=0)) > 3


@pytest.mark.parametrize("size", [(15, 16), (64, 47), (8, 8)])
def test_pattern_rejects_odd_or_tiny_sizes(size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="even"):
        TestPatternTrack(*size)


async def test_sine_audio_frames() -> None:
    track = SineAudioTrack()
    frames = [await track.recv() for _ in range(3)]
    assert [f.pts for f in frames] == [0, 960, 1920]
    assert {(f.samples, f.sample_rate, f.layout.name) for f in frames} == {(960, 48000, "mono")}
    samples = frames[1].to_ndarray()
    assert samples.dtype == np.int16 and 8000 < np.abs(samples).max() < 11000


async def test_image_source_loops(tmp_path: Path) -> None:
    still = tmp_path / "still.png"
    Image.new("RGB", (101, 51), (1, 2, 3)).save(still)
    track = ImageLoopTrack(still, fps=100)
    assert track.size == (100, 50) and track.frame_count == 1
    arrays = [(await track.recv()).to_ndarray(format="rgb24") for _ in range(3)]
    assert all((a == (1, 2, 3)).all() for a in arrays)

    gif = tmp_path / "anim.gif"
    pages = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    pages[0].save(gif, save_all=True, append_images=pages[1:], duration=40, loop=0)
    anim = ImageLoopTrack(gif, fps=100)
    colours = [tuple((await anim.recv()).to_ndarray(format="rgb24")[5, 5]) for _ in range(4)]
    assert anim.frame_count == 3 and colours[0] == colours[3] != colours[1]


async def test_video_file_loops_with_monotonic_paced_pts(tmp_path: Path) -> None:
    """Unlike MediaPlayer(loop=True), pts keep growing across the loop and pacing holds."""
    clip = tmp_path / "clip.mp4"
    _write_video(clip, frames=3)
    track = FileLoopTrack(clip)
    assert track.fps == 10
    loop = asyncio.get_running_loop()
    frames = [await track.recv()]
    start = loop.time()
    frames += [await track.recv() for _ in range(6)]
    assert loop.time() - start >= 0.55
    assert [f.pts for f in frames] == [i * 9000 for i in range(7)]
    levels = [int(f.to_ndarray(format="rgb24").mean()) for f in frames]
    assert levels[0:3] == levels[3:6] and levels[0] != levels[1]
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


def _write_video(path: Path, frames: int = 5) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            image = np.full((48, 64, 3), i * 40, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))


async def test_open_source_selection(tmp_path: Path) -> None:
    video, audio, player = open_source("testsrc", width=320, height=240, fps=15)
    assert isinstance(video, TestPatternTrack) and (video.width, video.fps) == (320, 15)
    assert audio is None and player is None
    assert isinstance(open_source("testsrc", audio=True)[1], SineAudioTrack)

    image = tmp_path / "pic.JPG"
    Image.new("RGB", (1000, 500)).save(image, format="JPEG")
    video, _, _ = open_source(image, width=640, height=480)
    assert isinstance(video, ImageLoopTrack) and video.size == (640, 320)

    clip = tmp_path / "clip.mp4"
    _write_video(clip)
    video, audio, player = open_source(str(clip), audio=True)
    assert isinstance(video, FileLoopTrack) and isinstance(audio, SineAudioTrack)
    assert player is None and (await video.recv()).width == 64

    own = VideoStreamTrack()
    assert open_source(own) == (own, None, None)
    tone = SineAudioTrack()
    assert open_source(tone) == (None, tone, None)

    with pytest.raises(ValueError, match="not 'testsrc'"):
        open_source(tmp_path / "missing.mp4")
    (tmp_path / "bad.mp4").write_text("not a video")
    with pytest.raises(ValueError, match="cannot open source"):
        open_source(tmp_path / "bad.mp4")


# --- pure helpers --------------------------------------------------------------------------


def test_whip_error_formatting() -> None:
    err = PublishError("POST", "http://h/whip", 415, "expected application/sdp")
    assert str(err) == (
        "WHIP POST http://h/whip failed: 415 Unsupported Media Type: expected application/sdp"
    )
    assert (err.status, err.message, err.reason) == (
        415,
        "expected application/sdp",
        "Unsupported Media Type",
    )
    assert (
        str(PublishError("DELETE", "http://h/x", 0, "refused"))
        == "WHIP DELETE http://h/x failed: refused"
    )
    assert str(PublishError("POST", "u", 599)) == "WHIP POST u failed: 599"


def test_prompts_param(tmp_path: Path) -> None:
    graph = {"1": {"class_type": "LoadTensor", "inputs": {}}}
    assert json.loads(_prompts_param(graph) or "") == graph
    path = tmp_path / "p.json"
    path.write_text(json.dumps(graph))
    assert json.loads(_prompts_param(path) or "") == graph
    assert json.loads(_prompts_param(str(path)) or "") == graph
    assert _prompts_param(' {"a": 1}') == ' {"a": 1}'
    assert _prompts_param(None) is None
    with pytest.raises(ValueError):
        _prompts_param("{broken")
    with pytest.raises(ValueError, match="neither JSON"):
        _prompts_param("no-such-file.json")


def test_client_argument_validation() -> None:
    with pytest.raises(ValueError, match="http"):
        WHIPClient("ftp://h/whip")
    with pytest.raises(ValueError, match="VP8, H264"):
        WHIPClient("http://h/whip", video_codec="AV1")


def test_strip_candidates_for_trickle() -> None:
    offer = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 40000 UDP/TLS/RTP/SAVPF 97\r\n"
        "c=IN IP4 127.0.0.1\r\na=mid:0\r\na=candidate:1 1 udp 1 127.0.0.1 40000 typ host\r\n"
        "a=end-of-candidates\r\n"
    )
    stripped = strip_candidates(offer)
    assert "a=candidate" not in stripped and "end-of-candidates" not in stripped
    assert "m=video 9 UDP/TLS/RTP/SAVPF 97\r\n" in stripped and "c=IN IP4 0.0.0.0" in stripped
    assert "t=0 0\r\na=ice-options:trickle\r\n" in stripped


# --- against a tiny WHIP endpoint ----------------------------------------------------------


class TinyWhip:
    """A minimal WHIP endpoint: records requests, answers per ``mode`` with a real aiortc peer."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests: list[dict[str, Any]] = []
        self.pc: RTCPeerConnection | None = None
        self.frames = 0
        self.deleted = False

    async def record(self, request: web.Request) -> str:
        body = await request.text()
        self.requests.append(
            {
                "method": request.method,
                "headers": dict(request.headers),
                "query": dict(request.query),
                "body": body,
            }
        )
        return body

    async def post(self, request: web.Request) -> web.Response:
        offer = await self.record(request)
        if self.mode == "415":
            return web.Response(status=415, text="expected application/sdp")
        if self.mode == "400":
            problem = {"title": "Bad Request", "detail": "unknown node 7 (class Nope)"}
            return web.json_response(problem, status=400, content_type="application/problem+json")
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.on("track", lambda track: asyncio.ensure_future(self.consume(track)))
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        headers = {"Location": "/whip/abc", "ETag": '"tag1"'}
        response = web.Response(
            status=201,
            text=pc.localDescription.sdp,
            headers=headers,
            content_type="application/sdp",
        )
        response.headers.add("Link", '<stun:stun.example.net>; rel="ice-server"')
        response.headers.add(
            "Link", '<turn:t:3478>; rel="ice-server"; username="u"; credential="p=="'
        )
        return response

    async def consume(self, track: Any) -> None:
        while True:
            try:
                await track.recv()
            except Exception:
                return
            self.frames += 1

    async def patch(self, request: web.Request) -> web.Response:
        fragment = parse_sdpfrag(await self.record(request))
        assert self.pc is not None
        for candidate in fragment.candidates:
            await self.pc.addIceCandidate(candidate.to_rtc())
        if fragment.end_of_candidates:
            await self.pc.addIceCandidate(None)
        return web.Response(status=204)

    async def delete(self, request: web.Request) -> web.Response:
        await self.record(request)
        if self.deleted:
            return web.Response(status=404)
        self.deleted = True
        if self.pc is not None:
            await self.pc.close()
        return web.Response(status=200)


@pytest.fixture
async def whip() -> AsyncIterator[tuple[TinyWhip, str]]:
    endpoint = TinyWhip()
    app = web.Application()
    app.router.add_post("/whip", endpoint.post)
    app.router.add_patch("/whip/abc", endpoint.patch)
    app.router.add_delete("/whip/abc", endpoint.delete)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield endpoint, f"http://127.0.0.1:{port}/whip"
    if endpoint.pc is not None:
        await endpoint.pc.close()
    await runner.cleanup()


@pytest.mark.parametrize(
    ("mode", "status", "message"),
    [("415", 415, "expected application/sdp"), ("400", 400, "unknown node 7 (class Nope)")],
)
async def test_post_error_raises_whip_error_and_sends_headers(
    whip: tuple[TinyWhip, str], mode: str, status: int, message: str
) -> None:
    endpoint, url = whip
    endpoint.mode = mode
    client = WHIPClient(url, token="s3cret", channel_id="cam 1", prompts={"1": {"x": "&?"}})
    with pytest.raises(PublishError) as info:
        await client.publish(TestPatternTrack(64, 48))
    assert (info.value.status, info.value.message) == (status, message)
    assert str(info.value).startswith(f"WHIP POST {url} failed: {status} ")
    (request,) = endpoint.requests
    assert request["headers"]["Content-Type"] == "application/sdp"
    assert request["headers"]["Authorization"] == "Bearer s3cret"
    assert request["query"]["channelId"] == "cam 1"
    assert json.loads(request["query"]["prompts"]) == {"1": {"x": "&?"}}
    assert request["body"].startswith("v=0") and "a=candidate:" in request["body"]
    assert client.pc is None and client.connection_state == "closed"


@pytest.mark.parametrize("trickle", [False, True], ids=["full-offer", "trickle"])
async def test_publish_connect_and_unpublish(whip: tuple[TinyWhip, str], trickle: bool) -> None:
    endpoint, url = whip
    states: list[str] = []
    async with WHIPClient(url, trickle=trickle, on_state=states.append) as client:
        await client.publish(TestPatternTrack(160, 120, fps=30))
        assert client.resource_url == url.replace("/whip", "/whip/abc")
        assert client.etag == '"tag1"'
        assert client.ice_servers == [
            IceServer("stun:stun.example.net"),
            IceServer("turn:t:3478", "u", "p=="),
        ]
        assert client.answer_sdp and client.answer_sdp.startswith("v=0")
        await client.wait_connected(timeout=10)
        for _ in range(50):
            if endpoint.frames >= 3:
                break
            await asyncio.sleep(0.1)
        assert endpoint.frames >= 3
    methods = [r["method"] for r in endpoint.requests]
    assert methods == (["POST", "PATCH", "DELETE"] if trickle else ["POST", "DELETE"])
    assert ("a=candidate:" in (client.offer_sdp or "")) is not trickle
    if trickle:
        patch = endpoint.requests[1]
        assert patch["headers"]["Content-Type"] == "application/trickle-ice-sdpfrag"
        assert patch["headers"]["If-Match"] == '"tag1"'
        fragment = parse_sdpfrag(patch["body"])
        assert fragment.end_of_candidates and fragment.candidates and fragment.mid == "0"
    assert states[-1] == "closed" and "connected" in states
    await client.unpublish()  # idempotent: no second DELETE
    assert len(endpoint.requests) == len(methods)


async def test_video_codec_preference(whip: tuple[TinyWhip, str]) -> None:
    _, url = whip
    async with WHIPClient(url, video_codec="h264") as client:
        await client.publish(TestPatternTrack(64, 48))
        rtpmaps = [line for line in (client.offer_sdp or "").splitlines() if "a=rtpmap" in line]
        assert rtpmaps and all("H264" in r or "rtx" in r for r in rtpmaps)


async def test_run_publish_exit_codes(whip: tuple[TinyWhip, str], tmp_path: Path) -> None:
    endpoint, url = whip
    assert await run_publish(url, duration=1.5) == 0
    assert [r["method"] for r in endpoint.requests] == ["POST", "DELETE"]
    assert await run_publish(url, source=str(tmp_path / "missing.png")) == 2
    assert await run_publish("ftp://nowhere") == 2
    endpoint.mode = "415"
    assert await run_publish(url, duration=1) == 1


def test_example_help(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location(
        "whip_client_example", ROOT / "examples" / "whip_client_example.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as info:
        module.main(["--help"])
    assert info.value.code == 0 and "--trickle" in capsys.readouterr().out
