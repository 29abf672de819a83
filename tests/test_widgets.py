"""Widgets without a browser: flow control, threads, and the trace recorder.

A "front end" here is simulated the way jupyter_rfb's tests do it: nothing acknowledges
(frozen front end) or a callback acknowledges each ``seq`` as the jsdlink would.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import av
import numpy as np
import pytest
from aiohttp import ClientSession, web
from helpers import async_wait_until, wait_until

import comfywhip_nb.server as server_module
from comfywhip_nb.client.whip_client import WHIPClient
from comfywhip_nb.http.trace import TraceRecorder, annotate_sdp, trace_middleware
from comfywhip_nb.pipeline import frames
from comfywhip_nb.rtc.sessions import SessionInfo
from comfywhip_nb.server import WhipServer
from comfywhip_nb.widgets import (
    Dashboard,
    FrameFlow,
    FramePreview,
    PromptEditor,
    StatsPlot,
    status_card_html,
)
from comfywhip_nb.widgets.preview import placeholder_jpeg


# -- a server stand-in that produces frames as fast as asked, without WebRTC ----------------
@dataclass(frozen=True)
class FakeProcessed:
    frame: av.VideoFrame
    input_frame: av.VideoFrame
    index: int


class FakeServer:
    """Enough of WhipServer for a preview: a session and an ever-newer processed frame."""

    def __init__(self, fps: float = 200.0) -> None:
        self.running = True
        self.whip_url = "http://127.0.0.1:1/whip"
        self.url = "http://127.0.0.1:1"
        self.started = time.monotonic()
        self.fps = fps
        pixels = np.zeros((120, 160, 3), np.uint8)
        pixels[:, :80] = (255, 0, 0)
        self.frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        self.info = SessionInfo(
            id="fake-session-id-0123",
            kind="whip",
            created_at=time.time(),
            connection_state="connected",
            has_video=True,
            has_audio=False,
            channel_id="default",
            prompt_source="default",
            width=160,
            height=120,
        )
        self.latest_calls = 0

    @property
    def sessions(self) -> MappingProxyType[str, SessionInfo]:
        if not self.running:
            return MappingProxyType({})
        return MappingProxyType({self.info.id: self.info})

    def latest_frame(self, session_id: str | None = None, kind: str = "pil") -> Any:
        assert kind == "processed"
        self.latest_calls += 1
        index = int((time.monotonic() - self.started) * self.fps) + 1
        pixels = np.zeros((120, 160, 3), np.uint8)
        pixels[:, : index % 160] = (255, 0, 0)  # every frame looks different
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        return FakeProcessed(frame, frame, index)


def counting(widget: Any) -> list[int]:
    """Record every ``value`` change of a widget (each one is a message to the front end)."""
    sizes: list[int] = []
    widget.observe(lambda change: sizes.append(len(change["new"])), names="value")
    return sizes


def live_front_end(flow: FrameFlow) -> None:
    """Acknowledge every seq at once, as the jsdlink in a live front end does."""
    flow.seq.observe(lambda change: flow.acknowledge(change["new"]), names="value")


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.running = False


def dashboard_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("comfywhip-dashboard")]


# -- flow control ---------------------------------------------------------------------------
def test_flow_counts_frames_in_flight_and_clamps_acks() -> None:
    flow = FrameFlow(2)
    assert flow.ready()
    flow.mark_sent()
    flow.mark_sent()
    assert flow.in_flight() == 2 and not flow.ready()
    flow.acknowledge(1)
    assert flow.in_flight() == 1
    flow.acknowledge(99)  # an ack for something never sent acknowledges only what was sent
    assert flow.in_flight() == 0
    flow.mark_sent()
    assert flow.in_flight() == 1 and flow.seq.value == 3


def test_flow_probes_back_off_while_stalled() -> None:
    flow = FrameFlow(1, probe_min=1.0, probe_max=4.0)
    flow.mark_sent()
    now = time.monotonic()
    delays = []
    acks = [flow.ack]
    for _ in range(6):
        now += 10.0  # long after any probe was due
        delays.append(flow.maybe_probe(now))
        acks.append(flow.ack)
    assert flow.probes_sent == 6
    assert delays == [2.0, 4.0, 4.0, 4.0, 4.0, 4.0]  # doubles, capped at probe_max
    assert flow.in_flight() == 1  # a probe is not a frame
    # each probe re-arms the ack path with a fresh model the link now targets
    assert len({id(a) for a in acks}) == 7 and flow.link.target == (flow.ack, "value")
    assert all(a.comm is None for a in acks[:-1])  # the old ones are closed
    flow.ack.value = flow.seq.value  # the front end answers on the new model
    assert flow.ready() and flow.maybe_probe(now) == float("inf")


def test_a_late_ack_on_an_old_model_still_counts() -> None:
    flow = FrameFlow(1, probe_min=0.0)
    flow.mark_sent()
    old = flow.ack
    flow.maybe_probe(time.monotonic() + 1)
    old.value = 1  # the stuck model's update finally arrives
    assert flow.ready()


def test_ack_widget_round_trip_acknowledges() -> None:
    """The front end's link sets ``ack``; the kernel-side observer must count it."""
    flow = FrameFlow(2)
    flow.mark_sent()
    flow.ack.value = flow.seq.value
    assert flow.in_flight() == 0


# -- the preview ------------------------------------------------------------------------------
def test_frozen_front_end_gets_a_bounded_number_of_frames(fake: FakeServer) -> None:
    preview = FramePreview(fake, max_fps=100, max_in_flight=2)
    images = counting(preview.image)
    preview.mark_displayed()
    try:
        time.sleep(1.5)  # 200 fps of new frames, nobody acknowledges
        assert preview.frames_sent == 2
        assert len(images) == 2
        assert preview.flow.probes_sent <= 2  # probes back off (1 s, then 2 s)
        assert fake.latest_calls <= 3  # not even polling for frames while stalled
    finally:
        preview.close()


def test_live_front_end_gets_frames_at_the_capped_rate(fake: FakeServer) -> None:
    preview = FramePreview(fake, max_fps=20, max_in_flight=2)
    live_front_end(preview.flow)
    images = counting(preview.image)
    preview.mark_displayed()
    try:
        time.sleep(1.0)
        sent = preview.frames_sent
        assert 10 <= sent <= 22, sent  # about max_fps per second, never more
        assert len(images) == sent
        assert preview.frames_skipped > 0  # newest frame wins: the fake makes 200 fps
        assert preview.updated_from == {preview._refresher.name}
        assert "frame #" in preview.status.value
        jpeg = preview.image.value
        assert jpeg[:2] == b"\xff\xd8" and jpeg != placeholder_jpeg()
    finally:
        preview.close()


def test_preview_encodes_nothing_until_shown(fake: FakeServer, monkeypatch) -> None:
    calls = []
    original = frames.encode_preview_jpeg
    monkeypatch.setattr(
        frames, "encode_preview_jpeg", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    preview = FramePreview(fake, max_fps=50)
    live_front_end(preview.flow)
    try:
        time.sleep(0.5)
        assert calls == [] and preview.frames_sent == 0  # created but never displayed
        preview.mark_displayed()
        wait_until(lambda: preview.frames_sent >= 3, timeout=5)
        preview.live.value = False  # paused by the user
        time.sleep(0.2)
        paused_at = preview.frames_sent
        time.sleep(0.5)
        assert preview.frames_sent == paused_at
        # a front end that reports no views means hidden, even though the kernel displayed it
        preview.live.value = True
        preview.image._view_count = 0
        preview._shown.reported = True
        time.sleep(0.3)
        hidden_at = preview.frames_sent
        time.sleep(0.5)
        assert preview.frames_sent == hidden_at
    finally:
        preview.close()


def test_preview_side_by_side_sends_the_input_frame(fake: FakeServer) -> None:
    preview = FramePreview(fake, max_fps=30, show_input=True)
    live_front_end(preview.flow)
    inputs = counting(preview.input_image)
    preview.mark_displayed()
    try:
        wait_until(lambda: len(inputs) >= 2, timeout=5)
        assert preview._input_box.layout.display == "flex"
        preview.show_input.value = False
        assert preview._input_box.layout.display == "none"
    finally:
        preview.close()


def test_widgets_survive_concurrent_user_actions(fake: FakeServer) -> None:
    """Kernel-thread events while the refresher writes: no errors, values stay valid."""
    preview = FramePreview(fake, max_fps=60)
    live_front_end(preview.flow)
    preview.mark_displayed()
    try:
        for i in range(200):
            preview.live.value = i % 7 != 0
            preview.show_input.value = i % 2 == 0
            preview.chooser.value = preview.chooser.options[i % len(preview.chooser.options)][1]
            time.sleep(0.002)
        assert not preview._refresher.errors
        assert preview._refresher.alive
    finally:
        preview.close()


# -- threads ------------------------------------------------------------------------------------
def test_refresher_stops_when_the_server_stops(fake: FakeServer) -> None:
    preview = FramePreview(fake)
    plot = StatsPlot(fake)
    threads = [preview._refresher, plot._refresher]
    assert all(r.alive for r in threads)
    fake.running = False
    wait_until(lambda: not any(r.alive for r in threads), timeout=5)
    assert "server stopped" in preview.status.value
    preview.close()
    plot.close()


def test_no_thread_leak_after_ten_dashboards(server: WhipServer) -> None:
    before = {t.ident for t in threading.enumerate()}
    for _ in range(10):
        dash = Dashboard(server)
        assert dash.running
        dash._repr_mimebundle_()
        time.sleep(0.05)
        dash.close()
        assert not dash.running
    leaked = [t.name for t in threading.enumerate() if t.ident not in before]
    assert leaked == [], leaked
    assert dashboard_threads() == []


def test_a_new_dashboard_replaces_the_previous_one(server: WhipServer) -> None:
    first = Dashboard(server)
    second = Dashboard(server)
    try:
        assert not first.running and second.running
        third = Dashboard(server, replace=False)
        assert second.running and third.running
        third.close()
    finally:
        second.close()
        first.close()  # idempotent
    assert dashboard_threads() == []


# -- the real thing: a WHIP publisher, a dashboard, the trace -----------------------------------
@pytest.fixture
def traced_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[WhipServer]:
    """A server whose HTTP exchanges are traced (installs the middleware if server.py
    does not yet)."""
    srv = WhipServer(port=0, media_timeout=10.0)
    if not hasattr(srv, "trace"):
        recorder = TraceRecorder()
        original = server_module.middlewares
        monkeypatch.setattr(
            server_module, "middlewares", lambda core: [trace_middleware(recorder), *original(core)]
        )
        srv.trace = recorder  # type: ignore[attr-defined]
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


async def test_dashboard_with_a_real_publisher(traced_server: WhipServer) -> None:
    server = traced_server
    dash = Dashboard(server, max_fps=30, mode="jpeg")
    live_front_end(dash.preview.flow)
    dash._repr_mimebundle_()
    client = WHIPClient(server.whip_url, trickle=True)
    try:
        await client.publish("testsrc", width=320, height=240, fps=30)
        await client.wait_connected()
        await async_wait_until(lambda: dash.preview.frames_sent >= 5, timeout=15)
        await async_wait_until(lambda: dash.sessions_table.rows, timeout=5)
        ((session_id, row),) = dash.sessions_table.rows
        assert "connected" in row and "320x240" in row
        await async_wait_until(lambda: dash.plot.renders >= 1, timeout=5)
        assert dash.preview.updated_from == {dash.refresher.name}

        # the inspector shows the session's POST and PATCH, annotated
        await async_wait_until(lambda: "PATCH" in dash.inspector.body.value, timeout=5)
        body = dash.inspector.body.value
        assert "201 Created" in body and "ICE username fragment" in body

        # an invalid prompt changes nothing and names the node; a valid one swaps
        assert dash.editor.apply('{"1": {"class_type": "NoSuchNode", "inputs": {}}}') is None
        assert "NoSuchNode" in dash.editor.message.value
        assert server.sessions[session_id].prompt_version == 0
        version = dash.editor.apply(
            '{"1": {"class_type": "LoadTensor", "inputs": {}},'
            ' "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},'
            ' "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}}}'
        )
        assert version and server.sessions[session_id].prompt_version == version

        # the row's stop button closes the session
        row_widget = next(r for r in dash.sessions_table._rows if r.session_id == session_id)
        await asyncio.get_running_loop().run_in_executor(None, row_widget.stop.click)
        await async_wait_until(lambda: session_id not in server.sessions, timeout=5)
        await async_wait_until(lambda: not dash.sessions_table.rows, timeout=5)
        assert not dash.refresher.errors
    finally:
        await client.unpublish()
        dash.close()


def test_status_card_for_running_and_stopped_servers(server: WhipServer) -> None:
    card = status_card_html(server)
    assert "running at" in card and server.whip_url in card
    server.stop()
    assert "stopped" in status_card_html(server)


def test_prompt_editor_loads_presets_and_targets(server: WhipServer) -> None:
    editor = PromptEditor(server, autostart=False)
    try:
        editor.presets.value = "invert"
        assert '"ImageInvert"' in editor.editor.value
        version = editor.apply()
        assert version == server.core.prompts.channel_entry(None).version
        editor.editor.value = '{"bad json'
        assert editor.apply() is None and "JSON" in editor.message.value
    finally:
        editor.close()


# -- the trace recorder ---------------------------------------------------------------------------
async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def test_trace_middleware_leaves_the_body_to_the_handler() -> None:
    recorder = TraceRecorder(max_body=20, max_capture=1000)
    seen: list[bytes] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(await request.content.read(5000))
        response = web.Response(status=201, text="v=0\r\nanswer")
        response.headers["Location"] = "/whip/abc123"
        return response

    app = web.Application(middlewares=[trace_middleware(recorder)])
    app.router.add_post("/whip", handler)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/health", health)
    runner, base = await _serve(app)
    try:
        async with ClientSession() as http:
            headers = {"Content-Type": "application/sdp", "Authorization": "Bearer secret"}
            async with http.post(f"{base}/whip", data="v=0\r\n" + "x" * 100, headers=headers):
                pass
            async with http.post(f"{base}/whip", data="y" * 3000, headers=headers):
                pass  # larger than max_capture: not read by the trace, still by the handler
            async with http.get(f"{base}/health"):
                pass  # not a traced path
    finally:
        await runner.cleanup()
    assert seen == [b"v=0\r\n" + b"x" * 100, b"y" * 3000]
    entries = recorder.entries("abc123")
    assert [e.status for e in entries] == [201, 201]
    first, second = entries
    assert (
        first.request_body.startswith("v=0\r\nxxxxxxxxxxxxxxx")
        and "more characters" in first.request_body
    )
    assert first.truncated == ("request",)
    assert first.header("Authorization", response=False) == "Bearer ***"
    assert first.header("Location") == "/whip/abc123"
    assert "not captured" in second.request_body
    assert len(recorder) == 2


def test_trace_recorder_is_bounded() -> None:
    recorder = TraceRecorder(max_sessions=3, max_entries=4)

    def entry(session: str | None) -> Any:
        from comfywhip_nb.http.trace import TraceEntry

        return TraceEntry(time.time(), 1.0, "PATCH", "/whip/x", 204, (), "", (), "", session)

    for i in range(10):
        for _ in range(6):
            recorder.record(entry(f"s{i}"))
        recorder.record(entry(None))
    assert recorder.session_ids() == ["s7", "s8", "s9"]
    assert len(recorder.entries("s9")) == 4
    assert len(recorder.unassigned()) == 4
    assert recorder.entries() == recorder.entries("s9")


async def test_annotate_sdp_explains_a_real_offer() -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection

    from comfywhip_nb.client.sources import TestPatternTrack

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(TestPatternTrack(64, 48), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    notes = dict(annotate_sdp(pc.localDescription.sdp))
    await pc.close()
    by_prefix = {
        prefix: next(n for line, n in notes.items() if line.startswith(prefix))
        for prefix in (
            "m=video",
            "a=rtpmap",
            "a=ice-ufrag",
            "a=candidate",
            "a=fingerprint",
            "a=setup",
            "a=sendonly",
            "a=mid",
        )
    }
    assert "video media section" in by_prefix["m=video"] and "VP8" in by_prefix["m=video"]
    assert "VP8" in by_prefix["a=rtpmap"] or "H264" in by_prefix["a=rtpmap"]
    assert "ICE username" in by_prefix["a=ice-ufrag"]
    assert "ICE candidate: UDP" in by_prefix["a=candidate"]
    assert "DTLS certificate fingerprint" in by_prefix["a=fingerprint"]
    assert "actpass" in by_prefix["a=setup"]
    assert "only sends" in by_prefix["a=sendonly"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "m=",
        "a=candidate:1",
        "m=video 0 UDP/TLS/RTP/SAVPF 96\na=fmtp:96 apt=97",
        "a=rtpmap:\na=rtcp-fb:* nack\x00",
        "\r\n\r\n",
    ],
)
def test_annotate_sdp_never_raises(text: str) -> None:
    for line, note in annotate_sdp(text):
        assert isinstance(line, str) and isinstance(note, str)
