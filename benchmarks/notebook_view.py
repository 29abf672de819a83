"""The kernel's CPU with the dashboard's WHEP player on screen vs with the JPEG preview.

    .venv/bin/python benchmarks/notebook_view.py [--size 1280x720] [--fps 30] [--leg 10]
                                                [--reps 2] [--json PATH]

One run: a real JupyterLab with headless Chromium (/usr/bin/chromium) shows a notebook whose
kernel runs a ``WhipServer`` (ImageInvert on every frame) and its dashboard; a moving test
pattern is published at the given size and rate from *this* process (so its encoding is not
billed to the kernel). Legs, interleaved ``reps`` times: no dashboard (baseline), the
dashboard in mode ``"whep"`` (the page plays the processed video; the server encodes it as
VP8 for the page) and in mode ``"jpeg"`` (the kernel JPEG-encodes frames and sends them as
widget messages, at most 15 fps and two unacknowledged frames). Kernel CPU is read from
/proc (utime+stime of the kernel process) over each leg; the page reports what it showed.
Compare the modes within one run (ratios), never across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
TOKEN = "comfywhip-bench"
SETUP = """
import os
from comfywhip_nb import WhipServer
from comfywhip_nb.prompts import load_preset
server = WhipServer(port=0, prompts=load_preset("invert")).start()
print(os.getpid(), server.whip_url)
"""
EXECUTE_JS = """async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({code, silent: false, store_history: false});
  let out = '';
  future.onIOPub = (msg) => {
    if (msg.header.msg_type === 'stream') out += msg.content.text;
    if (msg.header.msg_type === 'error') out += msg.content.ename + ': ' + msg.content.evalue;
  };
  await future.done;
  return out;
}"""
PAGE_JS = """() => {
  const video = document.querySelector('video.comfywhip-player-video');
  const el = video && video.closest('[data-state]');
  const img = document.querySelector('img.comfywhip-preview-image');
  return {player_frames: el ? Number(el.dataset.frames || 0) : 0,
          player_state: el ? el.dataset.state : null, jpeg_src: img ? img.src.length : 0};
}"""


def kernel_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def jupyterlab(root: Path):  # type: ignore[no-untyped-def]
    settings = root / "settings"
    path = settings / "@jupyterlab/notebook-extension/tracker.jupyterlab-settings"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"windowingMode": "none"}))
    port = free_port()
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings))
    env["JUPYTER_RUNTIME_DIR"] = str(root / "runtime")
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}",
         "--ServerApp.port_retries=0", "--expose-app-in-browser",
         f"--ServerApp.root_dir={root}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
                break
            time.sleep(0.3)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)


class Publisher:
    """A moving test pattern published from this process, on its own loop."""

    def __init__(self, whip_url: str, width: int, height: int, fps: int) -> None:
        from comfywhip_nb.client import WHIPClient
        from comfywhip_nb.client.sources import TestPatternTrack

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = WHIPClient(whip_url)
        self._run(self.client.publish(TestPatternTrack(width, height, fps)))
        self._run(self.client.wait_connected(30))

    def _run(self, coro: Any, timeout: float = 40) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self.client.unpublish(), 15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--leg", type=float, default=10.0, help="measured seconds per leg")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    import nbformat
    from playwright.sync_api import sync_playwright

    root = Path(tempfile.mkdtemp(prefix="comfywhip-bench-"))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("# benchmark")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, root / "bench.ipynb")
    legs: list[dict[str, Any]] = []
    publisher = None
    try:
        with jupyterlab(root) as base, sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--headless=new", "--no-sandbox", "--disable-gpu",
                      "--autoplay-policy=no-user-gesture-required"],
            )  # fmt: skip
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"{base}/lab/tree/bench.ipynb?token={TOKEN}", timeout=60_000)
            page.wait_for_function(
                "() => window.jupyterapp && window.jupyterapp.shell.currentWidget &&"
                " window.jupyterapp.shell.currentWidget.sessionContext.session &&"
                " window.jupyterapp.shell.currentWidget.sessionContext.session.kernel &&"
                " window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                ".status === 'idle'",
                timeout=90_000,
            )
            pid_text, whip_url = page.evaluate(EXECUTE_JS, SETUP).split()
            pid = int(pid_text)
            publisher = Publisher(whip_url, width, height, args.fps)
            # the dashboard is displayed as a cell output, as a user would see it
            page.evaluate(
                "() => { const nb = window.jupyterapp.shell.currentWidget;"
                " nb.content.activeCellIndex = 0;"
                " nb.content.activeCell.model.sharedModel.setSource("
                "'dash = server.dashboard(mode=\"whep\")\\ndash');"
                " window.jupyterapp.commands.execute('notebook:run-cell'); }"
            )
            page.wait_for_selector("video.comfywhip-player-video", timeout=60_000)
            for rep in range(args.reps):
                for mode in ("none", "whep", "jpeg"):
                    code = (
                        "dash.layout.display = 'none'; dash.live.mode.value = 'jpeg'; "
                        "dash.live.preview.live.value = False"
                        if mode == "none"
                        else f"dash.layout.display = None; dash.live.mode.value = {mode!r}"
                    )
                    page.evaluate(EXECUTE_JS, code)
                    page.wait_for_timeout(4000)  # settle: WHEP connects, preview starts
                    before_page = page.evaluate(PAGE_JS)
                    before = page.evaluate(
                        EXECUTE_JS,
                        "import json; print(json.dumps([dash.preview.frames_sent, "
                        "next(iter(server.sessions.values())).fps_out]))",
                    )
                    cpu0, t0 = kernel_cpu(pid), time.monotonic()
                    page.wait_for_timeout(args.leg * 1000)
                    cpu1, t1 = kernel_cpu(pid), time.monotonic()
                    after_page = page.evaluate(PAGE_JS)
                    after = page.evaluate(
                        EXECUTE_JS,
                        "print(json.dumps([dash.preview.frames_sent, "
                        "next(iter(server.sessions.values())).fps_out]))",
                    )
                    span = t1 - t0
                    sent0, _ = json.loads(before)
                    sent1, fps_out = json.loads(after)
                    player = after_page["player_frames"] - before_page["player_frames"]
                    leg = {
                        "rep": rep,
                        "mode": mode,
                        "kernel_cpu_pct": round(100 * (cpu1 - cpu0) / span, 1),
                        "player_fps": round(player / span, 1) if mode == "whep" else 0.0,
                        "jpeg_fps": round((sent1 - sent0) / span, 1),
                        "server_fps_out": round(fps_out, 1),
                        "load": os.getloadavg()[0],
                    }
                    legs.append(leg)
                    print(json.dumps(leg), flush=True)
            browser.close()
    finally:
        if publisher is not None:
            publisher.close()
        shutil.rmtree(root, ignore_errors=True)
    summary: dict[str, Any] = {"size": args.size, "fps": args.fps, "legs": legs}
    for mode in ("none", "whep", "jpeg"):
        values = [leg["kernel_cpu_pct"] for leg in legs if leg["mode"] == mode]
        summary[f"{mode}_cpu_pct"] = round(sum(values) / len(values), 1)
    base = summary["none_cpu_pct"] or 1.0
    summary["whep_over_none"] = round(summary["whep_cpu_pct"] / base, 2)
    summary["jpeg_over_none"] = round(summary["jpeg_cpu_pct"] / base, 2)
    summary["whep_over_jpeg"] = round(summary["whep_cpu_pct"] / (summary["jpeg_cpu_pct"] or 1), 2)
    print(json.dumps({k: v for k, v in summary.items() if k != "legs"}))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
