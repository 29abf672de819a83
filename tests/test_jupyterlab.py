"""A real JupyterLab + headless Chromium runs notebooks/01_quickstart.ipynb.

Checks what only a browser can: every cell runs without error in JupyterLab, the preview
``<img>`` changes many times within seconds (frames flow and acknowledgements come back from a
real front end), and the session table shows a connected session. Saves docs/dashboard.png.

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
]

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


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A JupyterLab server on 127.0.0.1 serving a copy of the quickstart notebook."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, root / NOTEBOOK)
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
            "jupyterlab",
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


def test_quickstart_runs_in_jupyterlab(jupyterlab: tuple[str, str], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    base, token = jupyterlab
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=CHROMIUM_FLAGS,  # playwright gives it a fresh temporary profile
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1150})
            console: list[str] = []
            page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
            page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}", timeout=60_000)
            page.wait_for_function(
                "() => window.jupyterapp && window.jupyterapp.shell", timeout=60_000
            )

            def state() -> dict:  # type: ignore[type-arg]
                return page.evaluate(NOTEBOOK_STATE_JS)

            _wait(page, lambda: (s := state()) and s["kernel"] == "idle", 90, "kernel idle")
            cells = state()["cells"]
            stop_index = max(i for i, c in enumerate(cells) if c["type"] == "code")
            assert (
                "server.stop()" in cells[stop_index]["source"]
                or "unpublish" in cells[stop_index]["source"]
            ), cells[stop_index]

            # Run everything above the last cell (which stops the server), then look.
            page.evaluate(
                "(i) => { const panel = window.jupyterapp.shell.currentWidget;"
                " panel.content.activeCellIndex = i;"
                " window.jupyterapp.commands.execute('notebook:run-all-above'); return true; }",
                stop_index,
            )

            def done() -> bool:
                s = state()
                above = [c for c in s["cells"][:stop_index] if c["type"] == "code"]
                errors = [e for c in s["cells"] for e in c["errors"]]
                assert not errors, f"a cell errored: {errors}"
                return s["kernel"] == "idle" and all(c["count"] is not None for c in above)

            _wait(page, done, 150, "cells above the stop cell did not finish")

            # The preview image changes many times within seconds.
            image = page.locator("img.comfywhip-preview-image").first
            image.wait_for(state="attached", timeout=30_000)
            sources: list[str] = []
            started = time.monotonic()
            while time.monotonic() - started < 4.0:
                src = image.get_attribute("src") or ""
                if not sources or sources[-1] != src:
                    sources.append(src)
                page.wait_for_timeout(40)
            changes = len(sources) - 1
            if changes < 10:
                diagnosis = page.evaluate(KERNEL_PRINT_JS, DIAGNOSE)
                pytest.fail(
                    f"preview changed only {changes} times in 4 s; kernel: {diagnosis}; "
                    f"browser console: {console[-15:]}"
                )

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
            page.evaluate(
                "(i) => { const panel = window.jupyterapp.shell.currentWidget;"
                " panel.content.activeCellIndex = i;"
                " window.jupyterapp.commands.execute('notebook:run-cell'); return true; }",
                stop_index,
            )
            _wait(
                page,
                lambda: (
                    (s := state())["kernel"] == "idle"
                    and s["cells"][stop_index]["count"] is not None
                ),
                60,
                "the stop cell did not finish",
            )
            errors = [e for c in state()["cells"] for e in c["errors"]]
            assert not errors, f"a cell errored: {errors}"
            card = page.locator(".comfywhip-dashboard .comfywhip-status").first
            _wait(page, lambda: "stopped" in card.inner_text(), 10, "the card did not say stopped")
        finally:
            browser.close()
