"""Processed video going back out over WebRTC (WHEP viewers and the sendrecv echo option).

Flow (one ``Feed`` per watched channel or session, shared by all its viewers)::

    Session.processor worker thread --frame_listeners--> loop.call_soon_threadsafe
      --> Feed._on_frame (event loop) --> SharedEncoder per negotiated codec: encodes the
          newest frame on an executor thread, one in flight, a newer frame replaces a waiting
          one --> the same av.Packet to every ProcessedVideoTrack of that codec
      --> each viewer's RTCRtpSender only packetizes it.

Encoded once per frame for all viewers: aiortc builds one encoder per ``RTCRtpSender`` for a
track that returns ``av.VideoFrame``s (N viewers, N encodes), but only packetizes a track's
``av.Packet``s (``Encoder.pack``, its ``MediaPlayer(decode=False)`` path). So one
libvpx/libx264 context per codec and feed serves every viewer. What sharing costs:

* one bitrate for all viewers: per-viewer REMB estimates are not applied;
* a viewer's PLI/FIR only sets a flag in aiortc's per-sender encoder, which packet tracks do
  not use; instead a keyframe is made when a viewer starts, when one resyncs, and every
  ``KEYFRAME_INTERVAL_S``;
* a viewer whose sender has not taken the previous packet drops it and waits for the next
  keyframe (it never receives old frames and never decodes a broken reference chain).

``shared=False`` keeps aiortc's per-viewer encoder (own bitrate and PLI, one encode per viewer:
about 5 ms CPU per 640x480 frame, vs 0.01 ms to packetize; ``benchmarks/whep_viewers.py``).
It is also the fallback for a codec the shared encoder does not know.

Timestamps: pts are re-stamped from a monotonic clock in 1/90000, so a new publisher (whose
pts restart) or a paused one never makes RTP time go backwards.

Following: a channel feed watches the channel's newest live publisher (``whip``/``offer``)
session through ``WhipCore.listeners``; when it leaves, the next newest takes over, and with
none the viewers wait (their senders simply send nothing) until one arrives. A session feed
ends with its session. Frame listeners are detached when a feed switches or closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import av
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import SessionDescription

from .processor import ProcessedFrame

if TYPE_CHECKING:
    from ..rtc.sessions import Session
    from ..server_state import WhipCore

__all__ = ["Feed", "ProcessedVideoTrack", "SharedEncoder", "attach_echo", "viewer_track"]

logger = logging.getLogger(__name__)

PUBLISHER_KINDS = ("whip", "offer")
VIDEO_CLOCK = 90000
TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
KEYFRAME_INTERVAL_S = 2.0
DEFAULT_BITRATE = 1_000_000
SHARED_CODECS = ("vp8", "h264")
SHARED_ENCODING = True
"""Default for new viewers; False makes aiortc encode per viewer (benchmarks compare both)."""


REFORMAT_LOCK = threading.Lock()


def _private_yuv(frame: av.VideoFrame) -> av.VideoFrame:
    """A yuv420p copy we may stamp: processed frames are shared (and may be the input).

    PyAV caches one swscale context per frame object (``VideoFrame.reformatter``), so two
    threads converting the same frame at once corrupt it or hang (seen with two per-viewer
    encoders); the lock serialises conversions, which are short next to an encode.
    """
    with REFORMAT_LOCK:
        out = frame.reformat(width=frame.width & ~1, height=frame.height & ~1, format="yuv420p")
        if out is frame:  # PyAV returns the same object when nothing changes
            out = av.VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")
    return out


@dataclass(frozen=True)
class EncodedFrame:
    packet: av.Packet
    keyframe: bool


class SharedEncoder:
    """One encoder context per codec of a feed. ``encode`` runs on an executor thread, never
    twice at once; the other members belong to the event loop."""

    def __init__(self, codec: str, bitrate: int = DEFAULT_BITRATE) -> None:
        if codec not in SHARED_CODECS:
            raise ValueError(f"codec must be one of {SHARED_CODECS}, got {codec!r}")
        self.codec, self.bitrate = codec, bitrate
        self.frames_encoded = 0
        self.encode_seconds = 0.0
        self._ctx: Any = None
        self._size = (0, 0)
        # loop side
        self.pending: ProcessedFrame | None = None
        self.task: asyncio.Task[None] | None = None
        self.force_keyframe = True
        self.last_keyframe = 0.0

    def _open(self, width: int, height: int) -> Any:
        if self.codec == "vp8":  # aiortc's realtime libvpx settings (codecs/vpx.py)
            ctx = av.CodecContext.create("libvpx", "w")
            ctx.gop_size, ctx.qmin, ctx.qmax = 3000, 2, 56
            rate = str(self.bitrate)
            ctx.options = {
                "bufsize": rate, "cpu-used": "-6", "deadline": "realtime",
                "lag-in-frames": "0", "minrate": rate, "maxrate": rate,
                "noise-sensitivity": "4", "overshoot-pct": "15", "partitions": "0",
                "static-thresh": "1", "undershoot-pct": "100",
            }  # fmt: skip
        else:  # aiortc's libx264 settings (codecs/h264.py): Annex B, SPS/PPS on keyframes
            ctx = av.CodecContext.create("libx264", "w")
            ctx.options = {"level": "31", "tune": "zerolatency"}
            ctx.profile = "Baseline"
        ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
        ctx.bit_rate = self.bitrate
        ctx.time_base = TIME_BASE
        ctx.framerate = fractions.Fraction(30, 1)
        ctx.thread_count = 2 if width * height >= 1280 * 720 else 1
        return ctx

    def encode(self, frame: av.VideoFrame, pts: int, keyframe: bool) -> EncodedFrame | None:
        started = time.perf_counter()
        yuv = _private_yuv(frame)
        if self._ctx is None or (yuv.width, yuv.height) != self._size:
            self._ctx, keyframe = self._open(yuv.width, yuv.height), True
            self._size = (yuv.width, yuv.height)
        yuv.pts, yuv.time_base = pts, TIME_BASE
        yuv.pict_type = (
            av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        )
        packets = self._ctx.encode(yuv)
        self.encode_seconds += time.perf_counter() - started
        if not packets:
            return None
        is_key = any(p.is_keyframe for p in packets)
        packet = packets[0] if len(packets) == 1 else av.Packet(b"".join(bytes(p) for p in packets))
        packet.pts, packet.time_base = pts, TIME_BASE
        self.frames_encoded += 1
        return EncodedFrame(packet, is_key)


class Feed:
    """The processed video of one channel (or one session) for all of its viewers."""

    def __init__(
        self,
        core: WhipCore,
        *,
        channel_id: str | None = None,
        session: Session | None = None,
        bitrate: int = DEFAULT_BITRATE,
    ) -> None:
        self.core, self.channel_id, self.fixed, self.bitrate = core, channel_id, session, bitrate
        self.key = ("session", session.id) if session is not None else ("channel", channel_id)
        self.loop = asyncio.get_running_loop()
        self.source: Session | None = None
        self.latest: ProcessedFrame | None = None
        self.tracks: set[ProcessedVideoTrack] = set()
        self.encoders: dict[str, SharedEncoder] = {}
        self.closed = False
        self._listener: Any = None
        self._t0 = time.monotonic()
        self._last_pts = -1
        core.listeners.append(self._on_event)
        self._follow(self._pick())

    # -- following the source -------------------------------------------------------------
    def _pick(self) -> Session | None:
        if self.fixed is not None:
            return None if self.fixed.closed else self.fixed
        live = [
            s
            for s in self.core.sessions.values()
            if s.kind in PUBLISHER_KINDS and s.channel_id == self.channel_id and not s.closed
        ]
        return max(live, key=lambda s: s.created_mono) if live else None

    def _on_event(self, event: str, session: Session) -> None:
        if self.closed or event not in ("created", "closed"):
            return
        if self.fixed is not None:
            if session is self.fixed and event == "closed":
                self.end()
        elif session.kind in PUBLISHER_KINDS and session.channel_id == self.channel_id:
            self._follow(self._pick())

    def _follow(self, session: Session | None) -> None:
        if session is self.source:
            return
        self._detach()
        self.source = session
        if session is None:
            return
        loop = self.loop

        def listener(processed: ProcessedFrame) -> None:  # worker thread: hand over only
            with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
                loop.call_soon_threadsafe(self._on_frame, session, processed)

        self._listener = listener
        session.frame_listeners.append(listener)
        logger.info("WHIP: egress %s:%s follows session %s", *self.key, session.id[:8])
        for encoder in self.encoders.values():
            encoder.force_keyframe = True
        latest = session.processor.latest()
        if latest is not None:
            self._on_frame(session, latest)

    def _detach(self) -> None:
        if self.source is not None and self._listener is not None:
            with contextlib.suppress(ValueError):
                self.source.frame_listeners.remove(self._listener)
        self._listener = None

    # -- frames ---------------------------------------------------------------------------
    def next_pts(self) -> int:
        """Monotonic 90 kHz pts from the feed's own clock (strictly increasing)."""
        pts = max(self._last_pts + 1, round((time.monotonic() - self._t0) * VIDEO_CLOCK))
        self._last_pts = pts
        return pts

    def _on_frame(self, session: Session, processed: ProcessedFrame) -> None:
        if self.closed or session is not self.source:
            return  # a frame from a source we already left
        self.latest = processed
        for track in list(self.tracks):
            if track.subscribed and track.codec is None:
                track.offer_frame(processed)
        for encoder in self.encoders.values():
            self._submit(encoder, processed)

    def _submit(self, encoder: SharedEncoder, processed: ProcessedFrame) -> None:
        encoder.pending = processed  # newer frames replace one still waiting
        if encoder.task is None:
            encoder.task = asyncio.ensure_future(self._pump(encoder))

    async def _pump(self, encoder: SharedEncoder) -> None:
        try:
            while encoder.pending is not None and not self.closed:
                processed, encoder.pending = encoder.pending, None
                now = time.monotonic()
                keyframe = (
                    encoder.force_keyframe or now - encoder.last_keyframe > KEYFRAME_INTERVAL_S
                )
                encoder.force_keyframe = False
                try:
                    encoded = await self.loop.run_in_executor(
                        None, encoder.encode, processed.frame, self.next_pts(), keyframe
                    )
                except Exception:
                    logger.exception("WHIP: egress %s encoder failed", encoder.codec)
                    encoder.force_keyframe = True
                    continue
                if encoded is None:
                    continue
                if encoded.keyframe:
                    encoder.last_keyframe = now
                for track in list(self.tracks):
                    if track.codec == encoder.codec:
                        track.offer_packet(encoded)
        finally:
            encoder.task = None

    def request_keyframe(self, codec: str) -> None:
        encoder = self.encoders.get(codec)
        if encoder is not None:
            encoder.force_keyframe = True

    # -- viewers --------------------------------------------------------------------------
    def subscribe(self, track: ProcessedVideoTrack) -> None:
        """Start delivering to ``track`` (at its first ``recv``, when its codec is known)."""
        if track.codec is None:
            if self.latest is not None:
                track.offer_frame(self.latest)
            return
        encoder = self.encoders.get(track.codec)
        if encoder is None:
            encoder = self.encoders[track.codec] = SharedEncoder(track.codec, self.bitrate)
        encoder.force_keyframe = True
        if self.latest is not None:  # a paused source still gives a joiner a picture
            self._submit(encoder, self.latest)

    def remove_track(self, track: ProcessedVideoTrack) -> None:
        self.tracks.discard(track)
        codecs = {t.codec for t in self.tracks}
        for codec in [c for c in self.encoders if c not in codecs]:
            del self.encoders[codec]  # a running pump finishes its frame, then stops
        if not self.tracks:
            self.close()

    def end(self) -> None:
        """The watched session is gone: end every viewer track."""
        for track in list(self.tracks):
            track.source_ended = True
            track.stop()
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._detach()
        self.source = self.latest = None
        with contextlib.suppress(ValueError):
            self.core.listeners.remove(self._on_event)
        feeds = _FEEDS.get(self.core)
        if feeds is not None and feeds.get(self.key) is self:
            del feeds[self.key]


_FEEDS: weakref.WeakKeyDictionary[Any, dict[tuple[str, Any], Feed]] = weakref.WeakKeyDictionary()


def get_feed(
    core: WhipCore, *, channel_id: str | None = None, session: Session | None = None
) -> Feed:
    """The live feed for a channel or a session, created on first use."""
    feeds = _FEEDS.setdefault(core, {})
    key = ("session", session.id) if session is not None else ("channel", channel_id)
    feed = feeds.get(key)
    if feed is None or feed.closed:
        feed = feeds[key] = Feed(core, channel_id=channel_id, session=session)
    return feed


def negotiated_codec(pc: RTCPeerConnection, track: MediaStreamTrack) -> str | None:
    """``vp8``/``h264``: the codec the local answer chose for ``track``'s sender, else None."""
    description = pc.localDescription
    mids = [t.mid for t in pc.getTransceivers() if t.sender.track is track]
    if description is None or not mids:
        return None
    try:
        parsed = SessionDescription.parse(description.sdp)
    except Exception:
        return None
    for media in parsed.media:
        if media.rtp.muxId == mids[0] and media.rtp.codecs:
            return media.rtp.codecs[0].mimeType.split("/")[-1].lower()
    return None


class ProcessedVideoTrack(MediaStreamTrack):
    """A video track carrying a feed's newest processed frames, for one peer connection."""

    kind = "video"

    def __init__(self, feed: Feed, pc: RTCPeerConnection | None = None, shared: bool = True):
        super().__init__()
        self.feed, self.pc, self.shared = feed, pc, shared
        self.codec: str | None = None
        """Codec of the shared encoder (``vp8``/``h264``), or None: aiortc encodes frames."""
        self.subscribed = False
        self.source_ended = False
        """True when the track stopped because the watched session ended."""
        self.frames_sent = 0
        self.frames_skipped = 0
        """Packets not sent: before the first keyframe, or dropped to resync."""
        self._slot: ProcessedFrame | EncodedFrame | None = None
        self._wake = asyncio.Event()
        self._need_keyframe = True
        self._t0 = time.monotonic()
        self._last_pts = -1
        feed.tracks.add(self)
        if pc is not None:  # stop with the connection even if it never sent anything
            pc.on("connectionstatechange", self._on_pc_state)
        if feed.closed or (feed.fixed is not None and feed.fixed.closed):
            self.stop()

    def _on_pc_state(self) -> None:
        if self.pc is not None and self.pc.connectionState in ("closed", "failed"):
            self.stop()

    def offer_frame(self, processed: ProcessedFrame) -> None:
        self._slot = processed  # newest only: an unsent older frame is simply replaced
        self._wake.set()

    def offer_packet(self, encoded: EncodedFrame) -> None:
        if self._slot is not None:  # the sender did not keep up: resync, never queue
            self._slot, self._need_keyframe = None, True
            self.frames_skipped += 1
            self.feed.request_keyframe(self.codec or "")
        if self._need_keyframe and not encoded.keyframe:
            self.frames_skipped += 1
            return
        self._slot, self._need_keyframe = encoded, False
        self._wake.set()

    async def recv(self) -> av.VideoFrame | av.Packet:
        if not self.subscribed and self.readyState == "live":
            self.subscribed = True
            if self.shared and self.pc is not None:
                codec = negotiated_codec(self.pc, self)
                self.codec = codec if codec in SHARED_CODECS else None
            self.feed.subscribe(self)
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            item, self._slot = self._slot, None
            if item is not None:
                break
            self._wake.clear()
            await self._wake.wait()
        self.frames_sent += 1
        if isinstance(item, EncodedFrame):
            return item.packet
        frame = await asyncio.get_running_loop().run_in_executor(None, _private_yuv, item.frame)
        pts = max(self._last_pts + 1, round((time.monotonic() - self._t0) * VIDEO_CLOCK))
        frame.pts, frame.time_base, self._last_pts = pts, TIME_BASE, pts
        return frame

    def stop(self) -> None:
        super().stop()
        self._wake.set()
        self.feed.remove_track(self)


def viewer_track(
    core: WhipCore,
    pc: RTCPeerConnection,
    *,
    channel_id: str | None = None,
    session: Session | None = None,
    shared: bool | None = None,
) -> ProcessedVideoTrack:
    """A track for ``pc`` following a channel's newest publisher or one session."""
    if (channel_id is None) == (session is None):
        raise ValueError("give exactly one of channel_id and session")
    shared = SHARED_ENCODING if shared is None else shared
    return ProcessedVideoTrack(get_feed(core, channel_id=channel_id, session=session), pc, shared)


def attach_echo(core: WhipCore, session: Session) -> ProcessedVideoTrack | None:
    """Send ``session`` its own processed video (call after setRemoteDescription of a
    sendrecv offer, before createAnswer); the video transceiver becomes sendrecv."""
    if not any(t.kind == "video" for t in session.pc.getTransceivers()):
        return None
    track = viewer_track(core, session.pc, session=session)
    session.pc.addTrack(track)  # reuses the offered video transceiver (recvonly -> sendrecv)
    session.add_close_callback(lambda _session: track.stop())
    session.log(logging.INFO, "echoing processed video back (sendrecv offer)")
    return track
