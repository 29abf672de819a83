"""Processed video going back out over WebRTC: WHEP viewers, the sendrecv echo option and
ComfyStream ``/offer``'s return video all use ``ProcessedVideoTrack``.

Flow (one ``Feed`` per watched channel or session, shared by all its viewers)::

    Session.processor worker thread --Session.subscribe_frames (one call_soon_threadsafe)-->
      Feed._on_frame (event loop) --> SharedEncoder per negotiated codec: encodes the
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

Timestamps: pts are re-stamped from a monotonic clock in 1/90000 (``PtsClock``), so a new
publisher (whose pts restart) or a paused one never makes RTP time go backwards.

Following: a channel feed watches the channel's newest live publisher (``whip``/``offer``)
session through the core's event bus; when it leaves, the next newest takes over, and with
none the viewers wait (their senders simply send nothing) until one arrives. A session feed
ends with its session. Frame subscriptions end when a feed switches or closes, and a feed
forgets the frame of a source that left.

Per server: ``Egress`` holds the feeds of one ``WhipCore`` and attaches the echo when a
``sendrecv`` WHIP offer arrives (an ``OFFERED`` event); ``ServerConfig.shared_encoding``
chooses the encoder path for new viewers.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import av
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from ..rtc.lifecycle import SessionEvent, SessionEventType, SessionKind, Subscription
from ..rtc.sdp import section_codec
from .audio_egress import AudioFeed, ProcessedAudioTrack
from .processor import ProcessedFrame

if TYPE_CHECKING:
    from ..rtc.sessions import Session
    from ..server_state import WhipCore

__all__ = [
    "Egress",
    "Feed",
    "ProcessedVideoTrack",
    "PtsClock",
    "SharedEncoder",
    "private_yuv",
]

logger = logging.getLogger(__name__)

VIDEO_CLOCK = 90000
TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
KEYFRAME_INTERVAL_S = 2.0
DEFAULT_BITRATE = 1_000_000
SHARED_CODECS = ("vp8", "h264")

REFORMAT_LOCK = threading.Lock()
"""PyAV caches one swscale context per frame object; see ``private_yuv``. A lock, not
mutable state: every thread converting a shared frame must take the same one."""

SizeGetter = Callable[[], "tuple[int, int] | None"]


def private_yuv(frame: av.VideoFrame, size: tuple[int, int] | None = None) -> av.VideoFrame:
    """A yuv420p copy we may stamp (processed frames are shared, and may be the input),
    scaled to ``size`` when given; runs on an executor thread.

    PyAV caches one swscale context per frame object (``VideoFrame.reformatter``), so two
    threads converting the same frame at once corrupt it or hang (seen with two per-viewer
    encoders); the lock serialises conversions, which are short next to an encode.
    """
    width, height = size or (frame.width & ~1, frame.height & ~1)
    with REFORMAT_LOCK:
        out = frame.reformat(width=width, height=height, format="yuv420p")
        if out is frame:  # PyAV returns the same object when nothing changes
            out = av.VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")
    return out


class PtsClock:
    """Strictly increasing 90 kHz pts from a monotonic clock started at creation."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        """Also the origin of the feed's audio clock (``audio_egress``)."""
        self._last = -1

    def next(self) -> int:
        pts = max(self._last + 1, round((time.monotonic() - self.t0) * VIDEO_CLOCK))
        self._last = pts
        return pts


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
        yuv = private_yuv(frame)
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
        egress: Egress,
        *,
        channel_id: str | None = None,
        session: Session | None = None,
        bitrate: int = DEFAULT_BITRATE,
    ) -> None:
        self.egress, self.channel_id, self.fixed, self.bitrate = (
            egress,
            channel_id,
            session,
            bitrate,
        )
        self.key = feed_key(channel_id, session)
        self.loop = asyncio.get_running_loop()
        self.source: Session | None = None
        self.latest: ProcessedFrame | None = None
        self.tracks: set[ProcessedVideoTrack] = set()
        self.encoders: dict[str, SharedEncoder] = {}
        self.closed = False
        self._cancel_frames: Callable[[], None] | None = None
        self.clock = PtsClock()
        self.audio = AudioFeed(self)
        self._events: Subscription = egress.core.events.subscribe(self._on_event, session=session)
        self._follow(self._pick())

    # -- following the source -------------------------------------------------------------
    def _pick(self) -> Session | None:
        if self.fixed is not None:
            return None if self.fixed.closed else self.fixed
        live = [
            s
            for s in self.egress.core.sessions.values()
            if s.kind.publishes and s.channel_id == self.channel_id and not s.closed
        ]
        return max(live, key=lambda s: s.created_mono) if live else None

    def _on_event(self, event: SessionEvent) -> None:
        if self.closed or event.type not in (SessionEventType.CREATED, SessionEventType.CLOSED):
            return
        session = event.session
        if self.fixed is not None:
            if event.type is SessionEventType.CLOSED:
                self.end()
        elif session.kind.publishes and session.channel_id == self.channel_id:
            self._follow(self._pick())

    def _follow(self, session: Session | None) -> None:
        if session is self.source:
            return
        self._detach()
        self.source, self.latest = session, None  # never keep an ended source's frame
        self.audio.follow(session)
        if session is None:
            return
        self._cancel_frames = session.subscribe_frames(self._on_frame)
        logger.info("WHIP: egress %s:%s follows session %s", *self.key, session.id[:8])
        for encoder in self.encoders.values():
            encoder.force_keyframe = True
        latest = session.processor.latest()
        if latest is not None:
            self._on_frame(latest)

    def _detach(self) -> None:
        cancel, self._cancel_frames = self._cancel_frames, None
        if cancel is not None:
            cancel()

    # -- frames ---------------------------------------------------------------------------
    def _on_frame(self, processed: ProcessedFrame) -> None:
        if self.closed:
            return
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
                        None, encoder.encode, processed.frame, self.clock.next(), keyframe
                    )
                except Exception:
                    logger.exception("WHIP: egress %s encoder failed", encoder.codec)
                    encoder.force_keyframe = True
                    continue
                finally:
                    del processed
                if encoded is None:
                    continue
                if encoded.keyframe:
                    encoder.last_keyframe = now
                for track in list(self.tracks):
                    if track.codec == encoder.codec:
                        track.offer_packet(encoded)
        finally:
            encoder.task = None
            encoder.pending = None

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
        self.track_removed()

    def track_removed(self) -> None:
        """The feed ends with its last video or audio track."""
        if not self.tracks and not self.audio.tracks:
            self.close()

    def end(self) -> None:
        """The watched session is gone: end every viewer track."""
        for track in list(self.tracks):
            track.source_ended = True
            track.stop()
        self.audio.end()
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._detach()
        self._events.cancel()
        self.audio.close()
        self.source = self.latest = self.fixed = None
        for encoder in self.encoders.values():
            encoder.pending = None
        self.egress.forget(self)


def feed_key(channel_id: str | None, session: Session | None) -> tuple[str, Any]:
    return ("session", session.id) if session is not None else ("channel", channel_id)


class Egress:
    """The feeds of one server, and the echo of ``sendrecv`` WHIP offers (loop thread)."""

    def __init__(self, core: WhipCore) -> None:
        self.core = core
        self.feeds: dict[tuple[str, Any], Feed] = {}
        self._events = core.events.subscribe(self._on_event)

    def feed(self, *, channel_id: str | None = None, session: Session | None = None) -> Feed:
        """The live feed for a channel or a session, created on first use."""
        key = feed_key(channel_id, session)
        feed = self.feeds.get(key)
        if feed is None or feed.closed:
            feed = self.feeds[key] = Feed(self, channel_id=channel_id, session=session)
        return feed

    def forget(self, feed: Feed) -> None:
        if self.feeds.get(feed.key) is feed:
            del self.feeds[feed.key]

    def viewer_track(
        self,
        pc: RTCPeerConnection,
        *,
        channel_id: str | None = None,
        session: Session | None = None,
        shared: bool | None = None,
        size: SizeGetter | None = None,
    ) -> ProcessedVideoTrack:
        """A track for ``pc`` following a channel's newest publisher or one session."""
        if (channel_id is None) == (session is None):
            raise ValueError("give exactly one of channel_id and session")
        shared = self.core.config.shared_encoding if shared is None else shared
        feed = self.feed(channel_id=channel_id, session=session)
        return ProcessedVideoTrack(feed, pc, shared, size)

    def audio_track(
        self,
        pc: RTCPeerConnection,
        *,
        channel_id: str | None = None,
        session: Session | None = None,
    ) -> ProcessedAudioTrack:
        """An audio track for ``pc``: the same source as the feed's video, encoded once."""
        if (channel_id is None) == (session is None):
            raise ValueError("give exactly one of channel_id and session")
        return ProcessedAudioTrack(self.feed(channel_id=channel_id, session=session).audio, pc)

    def _on_event(self, event: SessionEvent) -> None:
        if event.type is SessionEventType.OFFERED:
            self._maybe_echo(event.session)

    def _maybe_echo(self, session: Session) -> None:
        """Send ``session`` its own processed video: the video transceiver of a sendrecv WHIP
        offer becomes sendrecv (runs between setRemoteDescription and createAnswer)."""
        offer = session.offer
        if (
            session.kind is not SessionKind.WHIP
            or not self.core.config.echo_processed
            or offer is None
            or not offer.wants_media_back
            or not any(t.kind == "video" for t in session.pc.getTransceivers())
        ):
            return
        session.send(self.viewer_track(session.pc, session=session))
        if any(m.kind == "audio" and m.direction == "sendrecv" for m in offer.media):
            session.send(self.audio_track(session.pc, session=session))
        session.log(logging.INFO, "echoing processed media back (sendrecv offer)")

    def close(self) -> None:
        self._events.cancel()
        for feed in list(self.feeds.values()):
            feed.close()


def negotiated_codec(pc: RTCPeerConnection, track: MediaStreamTrack) -> str | None:
    """``vp8``/``h264``: the codec the local answer chose for ``track``'s sender, else None."""
    description = pc.localDescription
    mids = [t.mid for t in pc.getTransceivers() if t.sender.track is track]
    if description is None or not mids or mids[0] is None:
        return None
    return section_codec(description.sdp, mids[0])


class ProcessedVideoTrack(MediaStreamTrack):
    """A video track carrying a feed's newest processed frames, for one peer connection.

    With a shared encoder (``codec`` set at the first ``recv``) it returns the feed's
    ``av.Packet``s; otherwise aiortc encodes the frames it returns, for this peer alone (its
    own bitrate and PLI), scaled to ``size()`` when that gives a size (``/offer``'s
    ``update_resolution``). Frames are copied only when actually sent.
    """

    kind = "video"

    def __init__(
        self,
        feed: Feed,
        pc: RTCPeerConnection | None = None,
        shared: bool = True,
        size: SizeGetter | None = None,
    ):
        super().__init__()
        self.feed, self.pc, self.shared, self.size = feed, pc, shared, size
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
        self._clock = PtsClock()
        feed.tracks.add(self)
        if feed.closed or (feed.fixed is not None and feed.fixed.closed):
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
            self.pc = None  # the connection holds this track: no reference back
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
        size = self.size() if self.size is not None else None
        frame = await asyncio.get_running_loop().run_in_executor(
            None, private_yuv, item.frame, size
        )
        frame.pts, frame.time_base = self._clock.next(), TIME_BASE
        return frame

    def stop(self) -> None:
        if self.readyState == "ended":
            return
        super().stop()  # emits "ended"
        self._wake.set()
        self._slot = self.pc = self.size = None
        self.feed.remove_track(self)
        self.remove_all_listeners()
