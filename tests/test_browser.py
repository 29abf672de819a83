"""Real headless Chromium (Debian's, driven by Playwright) with the fake camera.

1. The built-in page at ``GET /`` publishes over WHIP (same origin) with the invert preset and
   shows the processed video over WHEP: the server processes frames, and the page's WHEP
   ``<video>`` plays (``videoWidth`` > 0, ``currentTime`` advancing) with the inverted colours
   of its own camera.
2. With the fake microphone (a beep), the page's WHEP peer receives the server's audio: the
   processed ``<video>`` holds a live audio track, a Web Audio analyser on that stream hears
   signal, and the Mute button flips ``video.muted``.
3. npm ``whip-whep`` (medooze) publishes and views from a page on a second origin (another
   aiohttp server), so every request goes through CORS.

Skipped with a reason when /usr/bin/chromium, Playwright or ``tests/browser/node_modules`` is
missing (``npm ci --prefix tests/browser`` installs the latter).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from graphs import INVERT
from helpers import wait_until

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
WHIP_WHEP = Path(__file__).parent / "browser" / "node_modules" / "whip-whep"
SCREENSHOT_DIR = Path(os.environ.get("COMFYWHIP_SCREENSHOTS", "/tmp"))
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
# mean colour of a <video> (64x48 canvas), or null before its first frame
MEAN_RGB = """(id) => {
  const v = document.getElementById(id);
  if (!v || !v.videoWidth) return null;
  const c = document.createElement("canvas"); c.width = 64; c.height = 48;
  const g = c.getContext("2d"); g.drawImage(v, 0, 0, 64, 48);
  const d = g.getImageData(0, 0, 64, 48).data; const s = [0, 0, 0];
  for (let i = 0; i < d.length; i += 4) { s[0] += d[i]; s[1] += d[i + 1]; s[2] += d[i + 2]; }
  return s.map((x) => x / (d.length / 4));
}"""
PLAYING = """(id) => { const v = document.getElementById(id);
  return v.videoWidth > 0 ? [v.videoWidth, v.videoHeight, v.currentTime] : null; }"""
LIVE_AUDIO = """() => { const s = document.getElementById("processed").srcObject;
  return !!s && s.getAudioTracks().some((t) => t.readyState === "live" && t.enabled); }"""
# RMS of the received stream's audio, in windows of 2048 samples every 20 ms for ``seconds``
# (Chromium's fake microphone beeps briefly, so the windows overlap to miss no beep)
AUDIO_RMS = """async (seconds) => {
  const stream = document.getElementById("processed").srcObject;
  const context = new AudioContext();
  await context.resume();
  const analyser = context.createAnalyser();
  analyser.fftSize = 2048;
  context.createMediaStreamSource(stream).connect(analyser);
  const data = new Float32Array(analyser.fftSize);
  const values = [];
  const end = performance.now() + seconds * 1000;
  while (performance.now() < end) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    analyser.getFloatTimeDomainData(data);
    let sum = 0;
    for (const x of data) sum += x * x;
    values.push(Math.sqrt(sum / data.length));
  }
  await context.close();
  return { max: Math.max(...values), windows: values.length,
           loud: values.filter((v) => v > 0.01).length };
}"""
MUTE_STATE = """() => [document.getElementById("processed").muted,
  document.getElementById("mute").getAttribute("aria-pressed"),
  document.getElementById("mute-label").textContent]"""

WHIP_WHEP_PAGE = """<!doctype html><meta charset="utf-8"><title>whip-whep interop</title>
<video id="local" autoplay muted playsinline></video>
<video id="processed" autoplay muted playsinline></video>
<script type="module">
import { WHIPClient } from "./whip.js";
import { WHEPClient } from "./whep.js";
window.run = async (whipUrl, whepUrl) => {
  const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  document.getElementById("local").srcObject = stream;
  const pc = new RTCPeerConnection();
  for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendonly" });
  window.whip = new WHIPClient();
  await window.whip.publish(pc, whipUrl);
  const vpc = new RTCPeerConnection();
  vpc.addTransceiver("video", { direction: "recvonly" });
  vpc.ontrack = (e) => {
    document.getElementById("processed").srcObject = e.streams[0] || new MediaStream([e.track]);
  };
  window.whep = new WHEPClient();
  await window.whep.view(vpc, whepUrl);
  return String(window.whip.resourceURL);
};
window.stopAll = async () => { await window.whep.stop(); await window.whip.stop(); };
</script>"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    manager = sync_api.sync_playwright().start()
    instance = None
    try:
        instance = manager.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield instance
    finally:
        if instance is not None:
            instance.close()
        manager.stop()


def _close_enough(a: list[float], b: list[float], tolerance: float = 30) -> bool:
    return max(abs(x - y) for x, y in zip(a, b, strict=True)) < tolerance


def _wait_page(page: Any, expression: str, arg: Any = None, timeout: float = 15) -> Any:
    return wait_until(lambda: page.evaluate(expression, arg), timeout=timeout, interval=0.2)


def _assert_playing_inverted(page: Any) -> None:
    width, height, first = _wait_page(page, PLAYING, "processed")
    assert width > 0 and height > 0
    _wait_page(
        page, f"(id) => document.getElementById(id).currentTime > {first + 0.5}", "processed"
    )

    def inverted() -> bool:
        local, processed = page.evaluate(MEAN_RGB, "local"), page.evaluate(MEAN_RGB, "processed")
        return bool(local and processed and _close_enough([255 - c for c in local], processed))

    # frames are not time-aligned, but the fake camera's mean colour barely moves
    wait_until(inverted, timeout=10, interval=0.2)


def _page(browser: Any, messages: list[str]) -> Any:
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.on("console", lambda msg: messages.append(f"{msg.type}: {msg.text}"))
    page.on("pageerror", lambda exc: messages.append(f"pageerror: {exc}"))
    return page


def _publishers(server: Any) -> list[dict[str, Any]]:
    return [s for s in server.stats().values() if s["kind"] == "whip"]


def test_builtin_page_publishes_and_watches(server: Any, browser: Any) -> None:
    messages: list[str] = []
    page = _page(browser, messages)
    try:
        page.goto(f"{server.url}/")
        page.wait_for_selector("body[data-ready]")
        page.select_option("#preset", "invert")
        page.click("#start")
        page.wait_for_function("window.comfywhip.whipState === 'connected'", timeout=15000)
        wait_until(lambda: any(s["frames_processed"] > 10 for s in _publishers(server)))
        page.wait_for_function("window.comfywhip.whepState === 'connected'", timeout=15000)
        _assert_playing_inverted(page)
        page.wait_for_function("window.comfywhip.stats && window.comfywhip.stats.frames_processed")
        assert page.evaluate("window.comfywhip.errors") == []
        page.screenshot(path=str(SCREENSHOT_DIR / "comfywhip_page.png"))
        page.click("#stop")  # DELETEs both resources
        wait_until(lambda: not server.sessions, timeout=10)
    except BaseException:
        print("\n".join(messages[-40:]))
        raise
    finally:
        page.close()


def test_builtin_page_plays_processed_audio_with_mute_toggle(server: Any, browser: Any) -> None:
    messages: list[str] = []
    page = _page(browser, messages)
    try:
        page.goto(f"{server.url}/")
        page.wait_for_selector("body[data-ready]")
        page.select_option("#microphone", "")  # the default (fake, beeping) microphone
        page.click("#start")
        page.wait_for_function("window.comfywhip.whepState === 'connected'", timeout=15000)
        wait_until(lambda: any(s["audio_frames_out"] > 50 for s in _publishers(server)))
        _wait_page(page, LIVE_AUDIO)
        assert page.evaluate("window.comfywhip.audioTracks") == 1
        # Start was a click and the browser allows autoplay: sound on, the button says Mute
        assert page.evaluate(MUTE_STATE) == [False, "false", "Mute"]
        heard = page.evaluate(AUDIO_RMS, 3.0)
        assert heard["windows"] > 50, heard
        assert heard["max"] > 0.02 and heard["loud"] >= 3, heard  # beeps, not silence
        page.click("#mute")
        assert page.evaluate(MUTE_STATE) == [True, "true", "Unmute"]
        page.screenshot(path=str(SCREENSHOT_DIR / "comfywhip_page_muted.png"))
        page.click("#mute")
        assert page.evaluate(MUTE_STATE) == [False, "false", "Mute"]
        assert page.evaluate("window.comfywhip.errors") == []
        page.click("#stop")
        wait_until(lambda: not server.sessions, timeout=10)
    except BaseException:
        print("\n".join(messages[-40:]))
        raise
    finally:
        page.close()


class StaticSite:
    """A second origin: an aiohttp server on its own thread serving a folder."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_static("/", str(self.folder))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def __enter__(self) -> StaticSite:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


def test_npm_whip_whep_cross_origin(server: Any, browser: Any, tmp_path: Path) -> None:
    if not (WHIP_WHEP / "whip.js").is_file():
        pytest.skip("tests/browser/node_modules is missing: run npm ci --prefix tests/browser")
    server.set_prompts(INVERT)
    for name in ("whip.js", "whep.js"):
        shutil.copy(WHIP_WHEP / name, tmp_path / name)
    (tmp_path / "index.html").write_text(WHIP_WHEP_PAGE)
    messages: list[str] = []
    with StaticSite(tmp_path) as site:
        page = _page(browser, messages)
        try:
            # another host name and port than the WHIP server: every request is cross-origin
            page.goto(f"http://localhost:{site.port}/index.html")
            page.wait_for_function("typeof window.run === 'function'")
            started = time.monotonic()
            resource = page.evaluate(
                "([a, b]) => window.run(a, b)", [server.whip_url, f"{server.url}/whep/default"]
            )
            assert resource.startswith(f"{server.url}/whip/")
            wait_until(lambda: any(s["frames_processed"] > 10 for s in _publishers(server)))
            _assert_playing_inverted(page)
            assert time.monotonic() - started < 30
            page.evaluate("window.stopAll()")
            wait_until(lambda: not server.sessions, timeout=10)
        except BaseException:
            print("\n".join(messages[-40:]))
            raise
        finally:
            page.close()
