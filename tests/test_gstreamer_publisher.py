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
        return self.wait_exit(timeout)

    def wait_exit(self, timeout: float) -> int:
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


def _run_until_frames(server: WhipServer, publisher: PublisherProcess, frames: int = 5):
    """Wait for the publisher to connect and the server to process ``frames`` frames."""
    wait_until(lambda: publisher.seen("connected") or publisher.proc.poll() is not None, timeout=40)
    assert publisher.seen("connected"), (publisher.events, publisher.stderr[-2000:])
    return wait_until(
        lambda: next((i for i in server.sessions.values() if i.frames_processed >= frames), None),
        timeout=40,
    )


def test_without_the_rsa_suites_dtls_fails_and_the_log_says_so(
    netns: NetNamespace, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiortc's own cipher list (ECDSA only): GStreamer's RSA certificate finds no shared
    cipher. The session's end names DTLS and the alert, not ICE, and the publisher's DELETE
    of the session that just ended still gets 200."""
    from comfywhip_nb.rtc import dtls

    monkeypatch.setattr(dtls, "SERVER_DTLS_CIPHERS", dtls.SERVER_DTLS_CIPHERS.split(":E")[0])
    with WhipServer(port=0) as server:
        publisher = PublisherProcess([server.whip_url, "--video", "vp8", "--duration", "5"])
        try:
            rc = publisher.wait_exit(timeout=60)  # it gives up by itself
        finally:
            publisher.kill()
    assert rc == 3, (rc, publisher.events, publisher.stderr[-2000:])
    assert publisher.seen("delete")["status"] == 200
    location = publisher.seen("resource")["location"]
    session_id = location.rsplit("/", 1)[1]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert re.search(
        rf"WHIP: {session_id[:8]} ended \(dtls_failed\): DTLS handshake failed: "
        r"publisher sent alert handshake_failure",
        logged,
    ), logged[-3000:]
    assert "ice_failed" not in logged


def test_a_publisher_that_ignores_keyframe_requests_gets_one_clear_log_line(
    netns: NetNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    """Like OBS: no keyframe on request, the next one only after its interval. Instead of a
    decode warning per frame, the log says once what to set; stats show the wait."""
    with WhipServer(port=0, media_timeout=10.0) as server:
        publisher = PublisherProcess(
            [server.whip_url, "--video", "h264", "--audio", "none", "--duration", "60",
             "--keyframe-interval", "3", "--ignore-keyframe-requests",
             "--drop-until-connected"]
        )  # fmt: skip
        try:
            info = _run_until_frames(server, publisher)
            assert publisher.stop_and_wait() == 0, publisher.events
        finally:
            publisher.kill()
    assert info.video_state == "receiving"
    assert info.first_frame_ms is not None and info.first_frame_ms > 0
    mine = [r for r in caplog.records if info.id[:8] in r.getMessage()]
    waits = [r for r in mine if "waiting for a keyframe" in r.getMessage()]
    assert len(waits) == 1, [r.getMessage() for r in mine]
    assert "keyframe interval" in waits[0].getMessage()
    noisy = [r.getMessage() for r in caplog.records if "failed to decode" in r.getMessage()]
    assert noisy == [], noisy
