#!/usr/bin/python3
"""A WHIP publisher built on GStreamer's webrtcbin, driven through GObject introspection.

Debian's GStreamer 1.22 has webrtcbin but no WHIP sink (gst-plugins-rs is not packaged), and
Debian's simple-whip-client aborts at start, so this script does the WHIP HTTP exchange
(RFC 9725) itself with the standard library: POST the offer, set the answer, optionally
trickle candidates with PATCH, run, then DELETE. It needs only Debian's ``python3-gi`` and
the GStreamer packages listed in ``scripts/install-gstreamer.sh``; run it with
``/usr/bin/python3`` (a venv of another Python cannot import ``gi``).

    /usr/bin/python3 scripts/gst_whip_publish.py http://127.0.0.1:8889/whip \
        --video vp8 --audio opus --trickle --duration 5

It prints one JSON object per line on stdout (``resource``, ``state``, ``delete``, ...) so a
test can follow it, and exits 0 only when the peer connection reached ``connected`` and the
DELETE was answered 2xx. Note that libnice never gathers loopback addresses: on a machine
with only ``lo`` it has no candidate at all (the tests run it inside a network namespace with
a veth pair).
"""

from __future__ import annotations

import argparse
import json
import queue
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import Gst, GstSdp, GstWebRTC  # noqa: E402

VIDEO_BRANCHES = {
    # the server waits for a keyframe before the first processed frame
    "vp8": (
        "vp8enc name=venc deadline=1 cpu-used=8 keyframe-max-dist={gop} ! rtpvp8pay pt=96 ! "
        "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000"
    ),
    "h264": (
        "x264enc name=venc tune=zerolatency speed-preset=ultrafast key-int-max={gop} ! "
        "video/x-h264,profile=constrained-baseline ! "
        "rtph264pay pt=102 config-interval=-1 aggregate-mode=zero-latency ! "
        "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000"
    ),
}
AUDIO_BRANCHES = {
    "opus": (
        "audiotestsrc is-live=true wave=sine freq=440 ! audioconvert ! audioresample ! "
        "opusenc ! rtpopuspay pt=111 ! "
        "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000"
    ),
}


def emit(event: str, **fields: object) -> None:
    """One JSON line on stdout for whoever runs this script."""
    print(json.dumps({"event": event, **fields}), flush=True)


def fail(message: str, code: int = 1) -> None:
    emit("error", message=message)
    print(f"gst_whip_publish: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


class Http:
    """The WHIP HTTP exchange (RFC 9725 §4.2-4.3) with urllib."""

    def __init__(self, url: str, token: str | None, timeout: float = 10.0) -> None:
        self.url, self.token, self.timeout = url, token, timeout
        self.resource: str | None = None
        self.etag: str | None = None

    def request(
        self, method: str, url: str, body: str | None = None, headers: dict | None = None
    ) -> tuple[int, dict[str, list[str]], str]:
        all_headers = dict(headers or {})
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        data = body.encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                status, msg, text = resp.status, resp.headers, resp.read().decode()
        except urllib.error.HTTPError as err:
            status, msg, text = err.code, err.headers, err.read().decode(errors="replace")
        multi: dict[str, list[str]] = {}
        for name, value in msg.items():
            multi.setdefault(name.lower(), []).append(value)
        emit("http", method=method, status=status)
        return status, multi, text

    def post_offer(self, sdp: str) -> str:
        status, headers, text = self.request(
            "POST", self.url, sdp, {"Content-Type": "application/sdp"}
        )
        if status != 201:
            fail(f"POST answered {status}: {text[:200]}", 2)
        self.resource = urllib.parse.urljoin(self.url, headers["location"][0])
        self.etag = headers.get("etag", [None])[0]
        emit("resource", location=self.resource, etag=self.etag, links=headers.get("link", []))
        return text

    def patch(self, fragment: str) -> int:
        headers = {"Content-Type": "application/trickle-ice-sdpfrag"}
        if self.etag:
            headers["If-Match"] = self.etag
        status, _, text = self.request("PATCH", self.resource, fragment, headers)
        if status >= 300:
            fail(f"PATCH answered {status}: {text[:200]}", 2)
        return status

    def delete(self) -> int:
        status, _, _ = self.request("DELETE", self.resource)
        emit("delete", status=status)
        return status


def wait_promise(promise: Gst.Promise, what: str) -> Gst.Structure | None:
    if promise.wait() != Gst.PromiseResult.REPLIED:
        fail(f"{what}: promise not replied")
    return promise.get_reply()


class Publisher:
    """webrtcbin with a test video (and audio) source, send-only, max-bundle."""

    def __init__(self, args: argparse.Namespace) -> None:
        Gst.init(None)
        video = VIDEO_BRANCHES[args.video].format(gop=round(args.fps * args.keyframe_interval))
        desc = (
            "webrtcbin name=wb bundle-policy=max-bundle "
            f"videotestsrc is-live=true pattern=ball ! "
            f"video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1 ! "
            f"videoconvert ! queue ! {video} ! wb. "
        )
        if args.audio != "none":
            desc += f"{AUDIO_BRANCHES[args.audio]} ! queue ! wb. "
        self.pipeline = Gst.parse_launch(desc)
        self.wb = self.pipeline.get_by_name("wb")
        self.connected = threading.Event()
        encoded = self.pipeline.get_by_name("venc").get_static_pad("src")
        # behave like OBS and many hardware encoders: no keyframe on request, and no media
        # until the connection is up (so the first frames the server gets are delta frames)
        if args.ignore_keyframe_requests:
            encoded.add_probe(Gst.PadProbeType.EVENT_UPSTREAM, _drop_keyframe_requests)
        if args.drop_until_connected:
            encoded.add_probe(Gst.PadProbeType.BUFFER, self._drop_until_connected)
        self.negotiation_needed = threading.Event()
        self.candidates: queue.Queue[tuple[int, str]] = queue.Queue()
        self.wb.connect("on-negotiation-needed", lambda *_: self.negotiation_needed.set())
        self.wb.connect("on-ice-candidate", self._on_candidate)
        self.wb.connect("notify::connection-state", self._on_state)
        self.wb.connect("notify::ice-connection-state", self._on_state)

    def _on_candidate(self, _wb: Gst.Element, mline: int, candidate: str) -> None:
        self.candidates.put((mline, candidate))

    def _on_state(self, wb: Gst.Element, pspec: object) -> None:
        value = wb.get_property(pspec.name)
        emit("state", name=pspec.name, value=value.value_nick)
        if pspec.name == "connection-state" and value.value_nick == "connected":
            self.connected.set()

    def _drop_until_connected(self, _pad: Gst.Pad, _info: object) -> Gst.PadProbeReturn:
        if self.connected.is_set():
            return Gst.PadProbeReturn.OK
        return Gst.PadProbeReturn.DROP

    def connection_state(self) -> str:
        return self.wb.get_property("connection-state").value_nick

    def gathering_complete(self) -> bool:
        state = self.wb.get_property("ice-gathering-state")
        return state == GstWebRTC.WebRTCICEGatheringState.COMPLETE

    def start(self) -> None:
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            fail("pipeline failed to start")
        for index in range(8):
            transceiver = self.wb.emit("get-transceiver", index)
            if transceiver is None:
                break
            transceiver.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)

    def create_offer(self) -> str:
        """Create and set the local offer; its SDP text (no candidates yet)."""
        if not self.negotiation_needed.wait(20):
            fail("webrtcbin never asked for negotiation (caps not negotiated?)")
        promise = self._emit_promise("create-offer", None)
        reply = wait_promise(promise, "create-offer")
        # the offer belongs to the promise's reply: use it while the promise is alive
        offer = reply.get_value("offer")
        text = offer.sdp.as_text()
        self._emit_promise("set-local-description", offer).wait()
        del promise
        return text

    def set_answer(self, sdp: str) -> None:
        result, message = GstSdp.SDPMessage.new_from_text(sdp)
        if result != GstSdp.SDPResult.OK:
            fail("the answer is not SDP GStreamer can parse")
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, message)
        self._emit_promise("set-remote-description", answer).wait()

    def local_sdp(self) -> str:
        return self.wb.get_property("local-description").sdp.as_text()

    def _emit_promise(self, signal: str, arg: object) -> Gst.Promise:
        promise = Gst.Promise.new()
        self.wb.emit(signal, arg, promise)
        return promise

    def bus_error(self) -> str | None:
        """The first error on the bus; drains the other messages so none pile up."""
        bus = self.pipeline.get_bus()
        while (msg := bus.pop()) is not None:
            if msg.type == Gst.MessageType.ERROR:
                err, debug = msg.parse_error()
                return f"{err.message} ({debug})"
        return None

    def stop(self) -> None:
        self.pipeline.set_state(Gst.State.NULL)


def _drop_keyframe_requests(_pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
    """Swallow the force-key-unit events webrtcbin sends upstream when the server asks (PLI)."""
    structure = info.get_event().get_structure()
    if structure is not None and structure.get_name() == "GstForceKeyUnit":
        return Gst.PadProbeReturn.DROP
    return Gst.PadProbeReturn.OK


def ice_credentials(sdp: str) -> tuple[str, str, str]:
    """(ufrag, pwd, first mid) of an SDP, for the trickle fragments."""
    ufrag = pwd = mid = ""
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:") and not ufrag:
            ufrag = line.split(":", 1)[1].strip()
        elif line.startswith("a=ice-pwd:") and not pwd:
            pwd = line.split(":", 1)[1].strip()
        elif line.startswith("a=mid:") and not mid:
            mid = line.split(":", 1)[1].strip()
    return ufrag, pwd, mid or "0"


def sdpfrag(ufrag: str, pwd: str, mid: str, candidates: list[str], end: bool) -> str:
    """An RFC 8840 trickle-ice-sdpfrag body for the bundled (first) media section."""
    lines = [f"a=ice-ufrag:{ufrag}", f"a=ice-pwd:{pwd}", "m=audio 9 UDP/TLS/RTP/SAVPF 0"]
    lines.append(f"a=mid:{mid}")
    lines += [c if c.startswith("a=") else f"a={c}" for c in candidates]
    if end:
        lines.append("a=end-of-candidates")
    return "\r\n".join(lines) + "\r\n"


def trickle(pub: Publisher, http: Http, offer_sdp: str, deadline: float) -> None:
    """PATCH the candidates gathered so far, then end-of-candidates once gathering is done."""
    ufrag, pwd, mid = ice_credentials(offer_sdp)
    sent = 0
    while time.monotonic() < deadline:
        done = pub.gathering_complete()
        batch = []
        while not pub.candidates.empty():
            batch.append(pub.candidates.get_nowait()[1])
        if batch or done:
            http.patch(sdpfrag(ufrag, pwd, mid, batch, end=done))
            sent += len(batch)
        if done:
            emit("trickled", candidates=sent)
            return
        time.sleep(0.05)
    fail("ICE gathering did not complete")


def run(args: argparse.Namespace) -> int:
    pub = Publisher(args)
    http = Http(args.url, args.token)
    pub.start()
    offer_text = pub.create_offer()
    deadline = time.monotonic() + args.connect_timeout
    if args.trickle:
        offer_sdp = offer_text  # no candidates yet: they follow in PATCHes
    else:
        while not pub.gathering_complete() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not pub.gathering_complete():
            fail("ICE gathering did not complete")
        offer_sdp = pub.local_sdp()
    emit("offer", candidates=offer_sdp.count("a=candidate:"), trickle=args.trickle)
    pub.set_answer(http.post_offer(offer_sdp))
    if args.trickle:
        trickle(pub, http, offer_sdp, deadline)
    while pub.connection_state() != "connected" and time.monotonic() < deadline:
        if pub.connection_state() == "failed" or (error := pub.bus_error()):
            break
        time.sleep(0.05)
    state = pub.connection_state()
    if state != "connected":
        pub.stop()
        http.delete()
        fail(f"peer connection {state}: {pub.bus_error() or 'no pipeline error'}", 3)
    emit("connected")
    stop = threading.Event()  # SIGTERM / SIGINT end the publishing early, with a DELETE
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    end = time.monotonic() + args.duration
    while time.monotonic() < end and not stop.is_set():
        if error := pub.bus_error():
            fail(f"pipeline error: {error}", 4)
        time.sleep(0.1)
    if args.stop == "close-first":  # as OBS and medooze do: peer gone before the DELETE
        pub.stop()
        time.sleep(args.delete_delay)
        status = http.delete()
    else:
        status = http.delete()
        pub.stop()
    return 0 if 200 <= status < 300 else 5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="WHIP endpoint, e.g. http://127.0.0.1:8889/whip")
    parser.add_argument("--video", choices=sorted(VIDEO_BRANCHES), default="vp8")
    parser.add_argument("--audio", choices=[*sorted(AUDIO_BRANCHES), "none"], default="opus")
    parser.add_argument("--trickle", action="store_true", help="POST without candidates, PATCH")
    parser.add_argument("--token", help="Bearer token")
    parser.add_argument(
        "--duration", type=float, default=5.0, help="seconds to publish (SIGTERM ends earlier)"
    )
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--keyframe-interval", type=float, default=1.0, help="seconds")
    parser.add_argument(
        "--ignore-keyframe-requests",
        action="store_true",
        help="drop the server's keyframe requests (PLI), as OBS and hardware encoders do",
    )
    parser.add_argument(
        "--drop-until-connected",
        action="store_true",
        help="drop encoded video until the connection is up, as OBS does",
    )
    parser.add_argument("--connect-timeout", type=float, default=20.0)
    parser.add_argument(
        "--stop",
        choices=["delete-first", "close-first"],
        default="delete-first",
        help="close-first stops the pipeline before sending DELETE",
    )
    parser.add_argument("--delete-delay", type=float, default=0.5)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(run(parse_args()))
