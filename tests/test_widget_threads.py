"""Widget changes leave from the kernel's own thread; the plot keeps its record; LiveView modes.

The hand-off is checked in a real ipykernel (nbclient): the notebook wraps the kernel's
``session.send`` to record which thread sent each comm message, runs a dashboard against a
real server and publisher, blocks the kernel for 3 s, and reports what happened.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import nbformat
import pytest
from helpers import wait_until
from nbclient import NotebookClient
from PIL import Image
from test_widgets import FakeServer

from comfywhip_nb.widgets import KernelThread, LiveView, StatsPlot

SETUP = """
import asyncio, json, threading, time
from comfywhip_nb import WHIPClient, WhipServer

kernel = get_ipython().kernel
senders = []
_send = kernel.session.send
def send(stream, msg_or_type, *args, **kwargs):
    kind = msg_or_type if isinstance(msg_or_type, str) else msg_or_type["header"]["msg_type"]
    if kind.startswith("comm"):
        senders.append(threading.current_thread().name)
    return _send(stream, msg_or_type, *args, **kwargs)
kernel.session.send = send

async def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)

server = WhipServer(port=0).start()
client = WHIPClient(server.whip_url)
await client.publish("testsrc", width=160, height=120, fps=15)
await client.wait_connected()
dash = server.dashboard(mode="jpeg")
dash
"""
BLOCK = """
await wait_for(lambda: dash.sessions_table.rows and dash.preview.frames_sent >= 1
               and dash.plot.renders >= 1)
before = dash.refresher.batches
time.sleep(3)  # a blocking cell: the kernel's loop runs nothing meanwhile
during = dash.refresher.batches - before
pending = dash.refresher._pending
"""
REPORT = """
await asyncio.sleep(2.5)
caught_up = dash.refresher.batches - before - during
await client.unpublish()
server.stop()
await wait_for(lambda: not dash.running and "stopped" in dash.card.html.value, 10)
print(json.dumps(dict(
    during=during, pending=pending, caught_up=caught_up,
    main=threading.current_thread().name, senders=sorted(set(senders)),
    applied=sorted(dash.refresher.kernel.applied_from),
    preview=sorted(dash.preview.updated_from), plot=sorted(dash.plot.updated_from),
    errors=list(dash.refresher.errors), frozen=dash.plot.stopped_at is not None,
    history=len(dash.plot.history),
)))
"""


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_widget_messages_leave_from_the_kernel_thread_only() -> None:
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(code) for code in (SETUP, BLOCK, REPORT)]
    )
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    report = json.loads(text.strip().splitlines()[-1])
    main = report["main"]
    assert report["senders"] == [main], report  # every comm message: the kernel's thread
    assert report["applied"] == [main] and report["preview"] == [main], report
    assert report["plot"] == [main], report
    assert report["during"] == 0 and report["pending"], report  # waited for the kernel
    assert report["caught_up"] >= 1, report  # and caught up once it was free
    assert report["errors"] == [], report
    assert report["frozen"] and report["history"] == 1, report


def test_outside_a_kernel_hand_offs_run_inline() -> None:
    kernel = KernelThread.current()
    assert kernel.inline
    ran: list[str] = []
    assert kernel.call(lambda: ran.append(threading.current_thread().name))
    assert ran == [threading.current_thread().name]


def test_a_closed_kernel_loop_refuses_hand_offs() -> None:
    import asyncio

    loop = asyncio.new_event_loop()
    loop.close()
    assert KernelThread(loop).call(lambda: None) is False


def test_plot_keeps_its_history_after_the_server_stops(tmp_path: Path) -> None:
    fake = FakeServer()
    fake.info = dataclasses.replace(fake.info, fps_in=30.0, fps_out=29.0)
    plot = StatsPlot(fake, period=0.1)
    plot.mark_displayed()
    try:
        wait_until(lambda: plot.renders >= 2, timeout=10)
        sid = fake.info.id
        fake.info = dataclasses.replace(fake.info, id="second-session-id")
        wait_until(lambda: sid in plot.ended, timeout=5)  # ended, still in the record
        assert len(plot.history[sid]) >= 2
        fake.running = False
        wait_until(lambda: not plot._refresher.alive, timeout=5)
        wait_until(lambda: plot.stopped_at is not None, timeout=5)
        assert set(plot.history) == {sid, "second-session-id"}
        assert plot.ended == set(plot.history)
        frozen = plot.image.value
        time.sleep(0.3)
        assert plot.image.value == frozen  # nothing redraws a stopped server's plot
        path = plot.save(tmp_path / "run.png")
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 200
    finally:
        plot.close()


def test_live_view_falls_back_when_the_front_end_says_so() -> None:
    fake = FakeServer()
    view = LiveView(fake, mode="auto", autostart=False)
    try:
        assert not view.using_jpeg and not view.preview.live.value
        assert view.preview.layout.display == "none"
        # what player.js reports when the browser cannot reach the server
        view.player.status = "this browser cannot reach http://10.9.9.9:1 (Failed to fetch)"
        view.player.active = "jpeg"
        assert view.using_jpeg and view.preview.live.value
        assert view.preview.layout.display == "flex"
        assert "cannot reach" in view.reason.value
        view.mode.value = "whep"  # the user picks WHEP explicitly: no fallback
        assert view.player.mode == "whep" and not view.using_jpeg
        assert not view.preview.live.value and view.reason.value == ""
        view.mode.value = "jpeg"
        assert view.using_jpeg and view.preview.live.value
    finally:
        view.close()
    with pytest.raises(ValueError, match="mode must be one of"):
        LiveView(fake, mode="mjpeg", autostart=False)


async def test_preview_endpoint_serves_the_input_frame_for_the_players_side_by_side() -> None:
    """``/preview/{id}.jpg?kind=input`` (what the player polls) is the unprocessed frame."""
    import io

    import aiohttp
    import numpy as np
    from helpers import async_wait_until

    from comfywhip_nb import WHIPClient, WhipServer
    from comfywhip_nb.client.sources import TestPatternTrack
    from comfywhip_nb.prompts import load_preset

    colour = (200, 40, 40)
    server = WhipServer(port=0, prompts=load_preset("invert")).start()
    client = WHIPClient(server.whip_url)
    try:
        await client.publish(TestPatternTrack(64, 48, fps=30, solid_color=colour))
        await client.wait_connected(timeout=10)
        await async_wait_until(lambda: server.latest_frame() is not None, timeout=10)
        session_id = next(iter(server.sessions))

        async def centre(http: aiohttp.ClientSession, query: str) -> np.ndarray:
            resp = await http.get(f"{server.url}/preview/{session_id}.jpg?{query}")
            assert resp.status == 200 and resp.content_type == "image/jpeg"
            pixels = np.asarray(Image.open(io.BytesIO(await resp.read())).convert("RGB"))
            return pixels[20:28, 28:36].reshape(-1, 3).mean(0)

        async with aiohttp.ClientSession() as http:
            raw = await centre(http, "kind=input")
            processed = await centre(http, "kind=processed")
            assert np.abs(raw - colour).max() < 25, raw
            assert np.abs(processed - [255 - c for c in colour]).max() < 25, processed
            resp = await http.get(f"{server.url}/preview/{session_id}.jpg?kind=raw")
            assert resp.status == 400 and "kind must be" in await resp.text()
    finally:
        await client.unpublish()
        server.stop()
