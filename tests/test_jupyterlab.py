"""A real JupyterLab (and Notebook 7) + headless Chromium runs notebooks/01_quickstart.ipynb.

Checks what only a browser can: every cell runs without error, the dashboard's WHEP player
plays the processed video in the page at full rate while a cell blocks the kernel for 10 s
(counted with ``requestVideoFrameCallback``, colour-checked against an inverting prompt),
the JPEG preview takes over when the page cannot reach the server, and the quickstart never
leaves a cell stuck "running" (ten runs in a row). Saves docs/dashboard.png on request.

JupyterLab runs on 127.0.0.1 with a token and notebook windowing off (so off-screen outputs
stay in the DOM). Chromium is Debian's (/usr/bin/chromium), never a downloaded one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
NOTEBOOK = "01_quickstart.ipynb"
#: the README's screenshot is refreshed only when asked (a test run leaves the tree clean)
README_SCREENSHOT = ROOT / "docs" / "dashboard.png"
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
    "--autoplay-policy=no-user-gesture-required",
]
#: the page's WHEP player must not wait for the kernel: measured while a cell sleeps
MIN_PLAYER_FPS = 25.0
PUBLISH_FPS = 30
SOLID = (200, 40, 40)  # published colour; the quickstart's invert prompt makes it cyan
FALLBACK_NOTEBOOK = """
from comfywhip_nb import WHIPClient, WhipServer
server = WhipServer(port=0).start()
client = WHIPClient(server.whip_url)
await client.publish("testsrc", width=320, height=240, fps=15)
await client.wait_connected()
# a wrong advertised address: the page cannot reach the server there
dash = server.dashboard(url="http://127.0.0.1:9", max_fps=15)
dash
"""

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240)]


def _skip_reason() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install -y --no-install-recommends chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright (PyPI) is not installed"
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        return "jupyterlab is not installed"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_settings(settings: Path) -> None:
    """Windowing off (off-screen outputs stay in the DOM) and no news/update checks."""
    files = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
    }
    for name, value in files.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


def _write_fallback_notebook(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(FALLBACK_NOTEBOOK)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, path)


def _serve(tmp_path: Path, app: str = "jupyterlab") -> Iterator[tuple[str, str]]:
    """A JupyterLab (or Notebook 7) server on 127.0.0.1 serving the test notebooks."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, root / NOTEBOOK)
    _write_fallback_notebook(root / "fallback.ipynb")
    _write_settings(tmp_path / "settings")
    port, token = _free_port(), "comfywhip-test-token"
    env = dict(os.environ)
    env.update(
        JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    log = (tmp_path / "jupyterlab.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            app,
            "--no-browser",
            "--allow-root",
            f"--port={port}",
            "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={token}",
            "--ServerApp.port_retries=0",
            "--expose-app-in-browser",
            f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=",
            "--ServerApp.open_browser=False",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: ended below, with its kernels
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    tail = (tmp_path / "jupyterlab.log").read_text(errors="replace")[-3000:]
                    pytest.fail(f"JupyterLab did not start:\n{tail}")
                time.sleep(0.3)
        yield base, token
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        log.close()


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[tuple[str, str]]:
    yield from _serve(tmp_path)


@pytest.fixture
def notebook7(tmp_path: Path) -> Iterator[tuple[str, str]]:
    try:
        import notebook  # noqa: F401
    except ImportError:
        pytest.skip("notebook (Notebook 7, PyPI) is not installed")
    yield from _serve(tmp_path, "notebook")


NOTEBOOK_STATE_JS = """
() => {
  const panel = window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.sessionContext) return null;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const cells = [];
  for (const cell of panel.content.widgets) {
    const model = cell.model;
    const json = model.toJSON();
    cells.push({
      type: model.type,
      count: model.type === 'code' ? model.executionCount : null,
      errors: (json.outputs || []).filter(o => o.output_type === 'error')
                                 .map(o => o.ename + ': ' + o.evalue),
      source: (Array.isArray(json.source) ? json.source.join('') : json.source).slice(0, 60),
    });
  }
  return {kernel: kernel ? kernel.status : null, cells};
}
"""


KERNEL_PRINT_JS = """async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({code, silent: false, store_history: false});
  let out = '';
  future.onIOPub = (msg) => {
    if (msg.header.msg_type === 'stream') out += msg.content.text;
    if (msg.header.msg_type === 'error') out += msg.content.ename + ': ' + msg.content.evalue;
  };
  const timeout = new Promise((resolve) => setTimeout(() => resolve('(kernel busy)'), 10000));
  return Promise.race([future.done.then(() => out), timeout]);
}"""
DIAGNOSE = (
    "p = dash.preview; f = p.flow; "
    "print(dict(sent=p.frames_sent, in_flight=f.in_flight(), probes=f.probes_sent, "
    "seq=f.seq.value, ack=f.ack.value, shown=p.shown, views=p.image._view_count, "
    "reported=p._shown.reported, live=p.live.value, alive=dash.refresher.alive, "
    "errors=list(dash.refresher.errors), status=p.status.value))"
)


def _wait(page, predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        page.wait_for_timeout(250)


MEASURE_JS = """async ([code, seconds]) => {
  const video = document.querySelector('video.comfywhip-player-video');
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  kernel.requestExecute({code, silent: false, store_history: false});
  const t0 = performance.now();
  while (kernel.status !== 'busy' && performance.now() - t0 < 5000) {
    await new Promise((r) => setTimeout(r, 20));
  }
  await new Promise((r) => setTimeout(r, 300));
  let frames = 0, first = null, last = null, running = true;
  const step = (now, meta) => {
    frames += 1;
    if (first === null) first = meta.mediaTime;
    last = meta.mediaTime;
    if (running) video.requestVideoFrameCallback(step);
  };
  video.requestVideoFrameCallback(step);
  const q0 = video.getVideoPlaybackQuality();
  const start = performance.now();
  const statuses = new Set();
  while (performance.now() - start < seconds * 1000) {
    statuses.add(kernel.status);
    await new Promise((r) => setTimeout(r, 100));
  }
  running = false;
  const elapsed = (performance.now() - start) / 1000;
  const q1 = video.getVideoPlaybackQuality();
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth; canvas.height = video.videoHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(video, 0, 0);
  const px = ctx.getImageData(canvas.width >> 1, canvas.height >> 1, 1, 1).data;
  return {frames, elapsed, fps: frames / elapsed, media_span: last - first,
          decoded: q1.totalVideoFrames - q0.totalVideoFrames,
          dropped: q1.droppedVideoFrames - q0.droppedVideoFrames,
          statuses: [...statuses], pixel: [px[0], px[1], px[2]],
          size: [video.videoWidth, video.videoHeight]};
}"""
PLAYER_STATE_JS = """() => {
  const video = document.querySelector('video.comfywhip-player-video');
  if (!video) return null;
  const el = video.closest('[data-state]');
  const line = document.querySelector('.comfywhip-player-status');
  return {state: el ? el.dataset.state : null, frames: el ? Number(el.dataset.frames || 0) : 0,
          text: line ? line.textContent : '', width: video.videoWidth};
}"""
CENTRE_PIXEL_JS = """() => {
  const video = document.querySelector('video.comfywhip-player-video');
  if (!video || !video.videoWidth) return null;
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth; canvas.height = video.videoHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(video, 0, 0);
  return Array.from(ctx.getImageData(canvas.width >> 1, canvas.height >> 1, 1, 1).data);
}"""


def _near(pixel: list[int], expected: list[int], tolerance: int = 40) -> bool:
    """Within ``tolerance`` per channel: VP8 and the colour conversions move a solid colour."""
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


class Publisher:
    """A solid-colour WHIP publisher in this (pytest) process, on its own loop and thread:
    it keeps publishing whatever the notebook's kernel does."""

    def __init__(self, whip_url: str, fps: int = PUBLISH_FPS) -> None:
        import asyncio
        import threading

        from comfywhip_nb.client import WHIPClient
        from comfywhip_nb.client.sources import TestPatternTrack

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = WHIPClient(whip_url)
        track = TestPatternTrack(640, 360, fps, solid_color=SOLID)
        self._run(self.client.publish(track))
        self._run(self.client.wait_connected(30))

    def _run(self, coro, timeout: float = 40):  # type: ignore[no-untyped-def]
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self.client.unpublish(), 15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def _open(page, base: str, token: str, name: str, app: str = "lab") -> list[str]:  # type: ignore[no-untyped-def]
    console: list[str] = []
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    path = f"/lab/tree/{name}" if app == "lab" else f"/notebooks/{name}"
    page.goto(f"{base}{path}?token={token}", timeout=60_000)
    page.wait_for_function(
        "() => window.jupyterapp && window.jupyterapp.shell && "
        "window.jupyterapp.shell.currentWidget && "
        "window.jupyterapp.shell.currentWidget.sessionContext",
        timeout=60_000,
    )
    _wait(
        page,
        lambda: (s := page.evaluate(NOTEBOOK_STATE_JS)) and s["kernel"] == "idle",
        90,
        "kernel idle",
    )
    return console


def _run_cells(page, command: str, index: int, upto: int, timeout: float) -> None:  # type: ignore[no-untyped-def]
    """Run ``command`` with cell ``index`` active; wait until code cells [0, upto) ran and
    the kernel is idle (a stuck cell fails here), with no error output anywhere."""
    page.evaluate(
        "([i, command]) => { const panel = window.jupyterapp.shell.currentWidget;"
        " panel.content.activeCellIndex = i;"
        " window.jupyterapp.commands.execute(command); return true; }",
        [index, command],
    )

    def done() -> bool:
        s = page.evaluate(NOTEBOOK_STATE_JS)
        errors = [e for c in s["cells"] for e in c["errors"]]
        assert not errors, f"a cell errored: {errors}"
        cells = [c for c in s["cells"][:upto] if c["type"] == "code"]
        return s["kernel"] == "idle" and all(c["count"] is not None for c in cells)

    try:
        _wait(page, done, timeout, f"{command}: cells did not finish (stuck?)")
    except AssertionError as exc:
        s = page.evaluate(NOTEBOOK_STATE_JS)
        counts = [
            (i, c["count"], c["source"][:30])
            for i, c in enumerate(s["cells"])
            if c["type"] == "code"
        ]
        probe = page.evaluate(KERNEL_PRINT_JS, "print('kernel answers')")
        raise AssertionError(
            f"{exc}; kernel {s['kernel']}; cells {counts}; probe: {probe}"
        ) from None


def _launch(p):  # type: ignore[no-untyped-def]
    return p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)


def _stop_index(page) -> int:  # type: ignore[no-untyped-def]
    cells = page.evaluate(NOTEBOOK_STATE_JS)["cells"]
    index = max(i for i, c in enumerate(cells) if c["type"] == "code")
    assert "unpublish" in cells[index]["source"], cells[index]
    return index


def test_quickstart_player_plays_while_a_cell_blocks(
    jupyterlab: tuple[str, str], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    base, token = jupyterlab
    with sync_playwright() as p:
        browser = _launch(p)
        publisher = None
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1150})
            console = _open(page, base, token, NOTEBOOK)
            stop_index = _stop_index(page)
            _run_cells(page, "notebook:run-all-above", stop_index, stop_index, 150)

            player = lambda: page.evaluate(PLAYER_STATE_JS)  # noqa: E731
            _wait(
                page,
                lambda: (s := player()) and s["state"] == "playing" and s["frames"] > 5,
                30,
                f"the WHEP player did not play ({player()}; console {console[-10:]})",
            )
            # WHEP works from this page, so the JPEG fallback stays hidden and idle
            assert not page.locator("img.comfywhip-preview-image").first.is_visible()

            # a publisher that does not live on the kernel's loop (a blocking cell stops that)
            whip_url = page.evaluate(KERNEL_PRINT_JS, "print(server.whip_url)").strip()
            assert whip_url.startswith("http://127.0.0.1:"), whip_url
            publisher = Publisher(whip_url)
            inverted = [255 - c for c in SOLID]

            def shows_inverted() -> bool:
                px = page.evaluate(CENTRE_PIXEL_JS)
                return bool(px) and _near(px[:3], inverted)

            _wait(
                page,
                shows_inverted,
                30,
                f"the player never showed the inverted colour "
                f"{inverted} ({page.evaluate(CENTRE_PIXEL_JS)}, {player()})",
            )

            # the player has just switched to this publisher's stream: measure the steady
            # state, after the browser's playout delay has settled on the new stream
            page.wait_for_timeout(3000)
            result = page.evaluate(MEASURE_JS, ["import time; time.sleep(10)", 8.5])
            print("player during a 10 s blocking cell:", result)
            assert "busy" in result["statuses"], result  # measured while the cell ran
            assert _near(result["pixel"], inverted), result
            assert result["media_span"] > 0.8 * result["elapsed"], result  # it advanced
            assert result["fps"] >= MIN_PLAYER_FPS, (
                f"{result['fps']:.1f} fps in the page while {PUBLISH_FPS} fps are published: "
                f"{result}"
            )
            _wait(
                page,
                lambda: page.evaluate(NOTEBOOK_STATE_JS)["kernel"] == "idle",
                30,
                "kernel idle after the sleeping cell",
            )
            publisher.close()
            publisher = None

            table = page.locator(".comfywhip-sessions").first
            assert "connected" in table.inner_text()

            # The README screenshot: side panels closed, the dashboard's cell at the top.
            screenshot = (
                README_SCREENSHOT
                if os.environ.get("COMFYWHIP_UPDATE_SCREENSHOT")
                else tmp_path / "dashboard.png"
            )
            page.evaluate(
                "() => { const shell = window.jupyterapp.shell;"
                " shell.collapseLeft(); shell.collapseRight();"
                " const cell = document.querySelector('.comfywhip-dashboard').closest('.jp-Cell');"
                " cell.scrollIntoView({block: 'start'});"
                " const outer = cell.closest('.jp-WindowedPanel-outer');"
                " if (outer) outer.scrollTop -= 64; }"
            )
            page.wait_for_timeout(2500)  # a couple of plot refreshes
            page.screenshot(path=str(screenshot))
            assert screenshot.stat().st_size > 50_000  # a real page, not a blank one

            # Now the last cell: unpublish and stop; the dashboard must say so.
            _run_cells(page, "notebook:run-cell", stop_index, stop_index + 1, 60)
            card = page.locator(".comfywhip-dashboard .comfywhip-status").first
            _wait(page, lambda: "stopped" in card.inner_text(), 10, "the card did not say stopped")
            _wait(
                page,
                lambda: player()["state"] == "ended",
                10,
                f"the player did not say ended ({player()})",
            )
        finally:
            if publisher is not None:
                publisher.close()
            browser.close()


def test_fallback_to_the_jpeg_preview_when_the_page_cannot_reach_the_server(
    jupyterlab: tuple[str, str],
) -> None:
    from playwright.sync_api import sync_playwright

    base, token = jupyterlab
    with sync_playwright() as p:
        browser = _launch(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            _open(page, base, token, "fallback.ipynb")
            started = time.monotonic()
            _run_cells(page, "notebook:run-all-cells", 0, 1, 90)
            reason = page.locator(".comfywhip-live-reason").first
            _wait(
                page,
                lambda: "cannot reach http://127.0.0.1:9" in reason.inner_text(),
                20,
                "the widget did not say why it fell back",
            )
            fell_back_after = time.monotonic() - started
            image = page.locator("img.comfywhip-preview-image").first
            _wait(page, image.is_visible, 10, "the JPEG preview was not shown")
            sources: list[str] = []
            t0 = time.monotonic()
            while time.monotonic() - t0 < 4.0:
                src = image.get_attribute("src") or ""
                if not sources or sources[-1] != src:
                    sources.append(src)
                page.wait_for_timeout(40)
            assert len(sources) - 1 >= 5, f"preview changed {len(sources) - 1} times in 4 s"
            after_ms = page.evaluate(
                "() => document.querySelector('[data-fallback-ms]')?.dataset.fallbackMs ?? null"
            )
            print(
                f"fell back {after_ms} ms after the player appeared "
                f"({fell_back_after:.1f} s after running the cell)"
            )
        finally:
            browser.close()


def test_quickstart_runs_in_notebook7(notebook7: tuple[str, str]) -> None:
    from playwright.sync_api import sync_playwright

    base, token = notebook7
    with sync_playwright() as p:
        browser = _launch(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1150})
            console = _open(page, base, token, NOTEBOOK, app="notebook")
            cells = page.evaluate(NOTEBOOK_STATE_JS)["cells"]
            _run_cells(page, "notebook:run-all-cells", 0, len(cells), 180)
            state = page.evaluate(PLAYER_STATE_JS)
            assert state is not None, f"no player in Notebook 7 ({console[-10:]})"
        finally:
            browser.close()


@pytest.mark.timeout(1500)
def test_quickstart_ten_times_without_a_stuck_cell(jupyterlab: tuple[str, str]) -> None:
    """Each run: restart the kernel, run every cell; a cell left "running" fails the wait."""
    from playwright.sync_api import sync_playwright

    base, token = jupyterlab
    with sync_playwright() as p:
        browser = _launch(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1150})
            _open(page, base, token, NOTEBOOK)
            cells = len(page.evaluate(NOTEBOOK_STATE_JS)["cells"])
            durations = []
            for run in range(10):
                if run:
                    page.evaluate(
                        "() => window.jupyterapp.shell.currentWidget.sessionContext"
                        ".session.kernel.restart()"
                    )
                    _wait(
                        page,
                        lambda: page.evaluate(NOTEBOOK_STATE_JS)["kernel"] == "idle",
                        60,
                        "kernel idle after restart",
                    )
                    page.evaluate(
                        "() => { for (const c of window.jupyterapp.shell.currentWidget.content"
                        ".widgets) if (c.model.type === 'code') c.model.executionCount = null; }"
                    )
                t0 = time.monotonic()
                _run_cells(page, "notebook:run-all-cells", 0, cells, 150)
                durations.append(round(time.monotonic() - t0, 1))
            print("ten quickstart runs, seconds each:", durations)
        finally:
            browser.close()
