"""GStreamer 1.22 webrtcbin (Debian's packages) publishes to the server over real WHIP.

The publisher is ``scripts/gst_whip_publish.py`` run by Debian's ``/usr/bin/python3`` (the
only Python with ``python3-gi``) as its own process. It and the server share a throwaway
network namespace with a veth pair (``tests/netns.py``), because libnice ignores loopback.
Without the server's ECDHE-RSA DTLS suites (``comfywhip_nb/dtls.py``) every case here fails:
GStreamer's DTLS certificate is RSA and the handshake ends with "no shared cipher".
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
from helpers import wait_until
from netns import NetNamespace, unavailable_reason

from comfywhip_nb.server import WhipServer

ROOT = Path(__file__).resolve().parents[1]
PUBLISHER = ROOT / "scripts" / "gst_whip_publish.py"
DEBIAN_PYTHON = "/usr/bin/python3"
ELEMENTS = ("webrtcbin", "vp8enc", "x264enc", "opusenc", "nicesrc", "dtlsenc", "rtpvp8pay")


def _gstreamer_missing() -> str | None:
    """Why the GStreamer publisher cannot run here (run scripts/install-gstreamer.sh)."""
    if not os.path.exists(DEBIAN_PYTHON):
        return f"{DEBIAN_PYTHON} not found"
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstWebRTC', '1.0');"
        "from gi.repository import Gst; Gst.init(None);"
        f"print(' '.join(e for e in {ELEMENTS!r} if Gst.ElementFactory.find(e) is None))"
    )
    try:
        out = subprocess.run(
            [DEBIAN_PYTHON, "-c", probe], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {DEBIAN_PYTHON}: {exc}"
    if out.returncode != 0:
        return f"python3-gi / GStreamer GI bindings missing: {out.stderr.strip()[-200:]}"
    if out.stdout.strip():
        return f"GStreamer elements missing: {out.stdout.strip()}"
    return None


_REASON = _gstreamer_missing() or unavailable_reason()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_REASON is not None, reason=f"GStreamer publisher: {_REASON}"),
]


class PublisherProcess:
    """The GStreamer publisher as a child process, its JSON event lines collected."""

    def __init__(self, args: list[str]) -> None:
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (no full pipe)
        self.proc = subprocess.Popen(
            [DEBIAN_PYTHON, str(PUBLISHER), *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            start_new_session=True,
        )
        self.events: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                continue

    def seen(self, event: str) -> dict | None:
        return next((e for e in self.events if e["event"] == event), None)

    @property
    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()

    def stop_and_wait(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the script DELETEs, then exits
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.kill()
        self._reader.join(timeout=5)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def netns(real_host_addresses: None):
    with NetNamespace() as ns:
        yield ns
    assert not ns.exists(), "the namespace was not removed"


@pytest.mark.parametrize("trickle", [False, True], ids=["full-offer", "trickle"])
@pytest.mark.parametrize("video", ["vp8", "h264"])
def test_webrtcbin_publishes_video_and_opus(
    netns: NetNamespace, video: str, trickle: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with WhipServer(port=0, media_timeout=10.0) as server:
        args = [server.whip_url, "--video", video, "--audio", "opus", "--duration", "60"]
        publisher = PublisherProcess([*args, "--trickle"] if trickle else args)
        try:
            wait_until(
                lambda: publisher.seen("connected") or publisher.proc.poll() is not None,
                timeout=40,
            )
            assert publisher.seen("connected"), (publisher.events, publisher.stderr[-2000:])
            info = wait_until(
                lambda: next(
                    (
                        i
                        for i in server.sessions.values()
                        if i.frames_processed >= 5 and i.audio_frames_in >= 5
                    ),
                    None,
                ),
                timeout=40,
            )
            assert info.has_video and info.has_audio
            rc = publisher.stop_and_wait()
        finally:
            publisher.kill()
        assert rc == 0, (rc, publisher.events, publisher.stderr[-2000:])
        statuses = [e["status"] for e in publisher.events if e["event"] == "http"]
        assert all(s < 500 for s in statuses), statuses
        if trickle:
            assert publisher.seen("trickled")["candidates"] >= 1
            assert 204 in statuses  # the PATCHes
        assert publisher.seen("delete")["status"] == 200
        wait_until(lambda: info.id not in server.sessions, timeout=10)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert re.search(rf"WHIP: {info.id[:8]} ended \(delete\)", logged), logged[-3000:]
