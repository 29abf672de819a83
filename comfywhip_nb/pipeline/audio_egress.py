"""Processed audio going back out over WebRTC: WHEP viewers, the sendrecv echo and
ComfyStream ``/offer``'s return audio all use ``ProcessedAudioTrack``.

Flow (one ``AudioFeed`` per video ``Feed``, i.e. per watched channel or session)::

    Session.audio_processor worker --Session.subscribe_audio (one call_soon_threadsafe)-->
      AudioFeed._on_chunk (event loop) --> SharedAudioEncoder per negotiated codec (Opus,
          PCMU, PCMA): every chunk, in order, on an executor thread, one in flight
      --> the same av.Packets to every ProcessedAudioTrack of that codec
      --> each viewer's RTCRtpSender only packetizes them (``Encoder.pack``).

What the viewers hear: the processor's chunks, which are the audio prompt's output when one
runs and the publisher's own audio (its channels, one input frame per chunk) when none does.
Audio is never "newest wins" like video: each chunk is encoded, and a track whose sender
falls more than ``TRACK_QUEUE_S`` behind loses its oldest packets (bounded latency).

Timestamps: each encoder stamps its packets on a continuous clock at the codec's RTP rate
(Opus 48 kHz, G.711 8 kHz) anchored to the feed's ``PtsClock.t0``, the origin of its video
pts, through each chunk's ``received_at`` (monotonic time its first input frame arrived). Within
``SLACK_S`` of that anchor the clock simply runs on (gapless RTP time across chunks); further
behind (a publisher switch, buffers dropped upstream) it jumps ahead, leaving a gap; further
ahead (a burst after a stall) the chunk is dropped, so latency never drifts. So is a chunk
that waited more than ``STALE_S`` for its encoder (a busy loop or executor). aiortc adds a
random offset per sender, so it is RTCP sender reports that tie audio to video time at a
receiver; both clocks run on monotonic time, so those reports agree.

Following: the video ``Feed`` calls ``follow`` when it switches source, so audio and video
always come from the same (newest live) publisher. With no publisher a viewer's sender sends
nothing (no packets, no silence): as for video, an idle feed costs nothing, and receivers
treat the first packet as the start of a talk spurt.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from .audio import AudioChunk
from .audio_frames import array_to_frames

if TYPE_CHECKING:
    from ..rtc.sessions import Session
    from .egress import Feed

__all__ = ["AUDIO_CODECS", "AudioFeed", "ProcessedAudioTrack", "SharedAudioEncoder"]

logger = logging.getLogger(__name__)

# codec -> (PyAV encoder, RTP clock rate, layout, samples per 20 ms packet)
AUDIO_CODECS: dict[str, tuple[str, int, str, int]] = {
    "opus": ("libopus", 48000, "stereo", 960),
    "pcmu": ("pcm_mulaw", 8000, "mono", 160),
    "pcma": ("pcm_alaw", 8000, "mono", 160),
}
OPUS_BITRATE = 96000  # aiortc's own (codecs/opus.py)
SLACK_S = 0.25
"""How far a chunk's anchor may be from the running clock before it jumps or drops."""
STALE_S = 0.3
"""A chunk that waited longer than this (after processing) for its encoder is dropped: a
busy loop or executor must not leave audio behind the video, which sends its newest frame."""
TRACK_QUEUE_S = 0.2
"""Packets waiting for a sender beyond this much audio (or twice the newest chunk, for
long buffers) are dropped, oldest first: a sender that falls behind (the loop was busy)
never lets its audio lag the video, which always sends the newest frame."""


class SharedAudioEncoder:
    """One audio encoder of a feed for one codec. ``encode`` runs on an executor thread,
    never twice at once; ``pending``/``task`` belong to the loop."""

    def __init__(self, codec: str, t0: float) -> None:
        if codec not in AUDIO_CODECS:
            raise ValueError(f"codec must be one of {tuple(AUDIO_CODECS)}, got {codec!r}")
        self.codec, self.t0 = codec, t0
        self.name, self.rate, self.layout, self.frame_size = AUDIO_CODECS[codec]
        self.time_base = fractions.Fraction(1, self.rate)
        self.frames_encoded = 0
        """Packets made (20 ms each)."""
        self.chunks_encoded = 0
        self.chunks_dropped = 0
        """Chunks dropped: ahead of the clock, or waiting too long for the encoder."""
        self.gaps = 0
        """Times the clock jumped ahead (a new source, buffers dropped upstream)."""
        self.encode_seconds = 0.0
        self.next_pts: int | None = None
        self._ctx: Any = None
        self._resampler: av.AudioResampler | None = None
        self._input: int | None = None
        # loop side
        self.pending: deque[AudioChunk] = deque()
        self.task: asyncio.Task[None] | None = None

    def _open(self) -> None:
        ctx = av.CodecContext.create(self.name, "w")
        ctx.format, ctx.layout, ctx.sample_rate = "s16", self.layout, self.rate
        ctx.time_base = self.time_base
        if self.codec == "opus":
            ctx.bit_rate = OPUS_BITRATE
            ctx.options = {"application": "voip"}
        self._ctx = ctx
        self._resampler = av.AudioResampler(
            format="s16", layout=self.layout, rate=self.rate, frame_size=self.frame_size
        )

    def _start_pts(self, chunk: AudioChunk) -> int | None:
        """The first packet's pts for ``chunk``, or None to drop it (see the module doc)."""
        anchor = round((chunk.received_at - self.t0) * self.rate)
        slack = round(SLACK_S * self.rate)
        if self.next_pts is None or self.next_pts < anchor - slack:
            if self.next_pts is not None:
                self.gaps += 1
            self.next_pts = max(anchor, self.next_pts or 0)
        elif self.next_pts > anchor + slack:
            self.chunks_dropped += 1
            return None
        return self.next_pts

    def encode(self, chunk: AudioChunk) -> list[av.Packet]:
        """Packets for one chunk, stamped on the feed's clock (executor thread)."""
        started = time.perf_counter()
        if time.monotonic() - chunk.processed_at > STALE_S:
            self.chunks_dropped += 1
            return []
        if self._start_pts(chunk) is None:
            return []
        samples = _to_layout(chunk.samples, self.layout)
        if self._ctx is None or self._input != chunk.sample_rate:
            self._open()  # a new input rate: a fresh resampler (and encoder state)
            self._input = chunk.sample_rate
        assert self._resampler is not None
        packets: list[av.Packet] = []
        for frame in array_to_frames(samples, chunk.sample_rate, 0, samples.shape[1]):
            frame.pts = None  # the resampler re-times; packets are stamped below
            for resampled in self._resampler.resample(frame):
                packets += self._ctx.encode(resampled)
        for packet in packets:
            packet.pts, packet.time_base = self.next_pts, self.time_base
            self.next_pts = (self.next_pts or 0) + self.frame_size
        self.frames_encoded += len(packets)
        self.chunks_encoded += 1
        self.encode_seconds += time.perf_counter() - started
        return packets


def _to_layout(samples: np.ndarray, layout: str) -> np.ndarray:
    """``samples`` with the codec's channels, at the same level: mono is copied to both
    sides (swresample's upmix would cost 3 dB), stereo or more is averaged to mono."""
    channels = samples.shape[0]
    if layout == "stereo":
        if channels == 1:
            return np.repeat(samples, 2, axis=0)
        return (
            samples if channels == 2 else np.stack([samples[0::2].mean(0), samples[1::2].mean(0)])
        )
    return samples if channels == 1 else samples.mean(axis=0, keepdims=True)


class AudioFeed:
    """The processed audio of one video ``Feed``'s source for all of its audio tracks."""

    def __init__(self, feed: Feed) -> None:
        self.feed: Feed | None = feed
        """The video feed; None once closed (no cycle left for the collector)."""
        self.t0 = feed.clock.t0
        self.tracks: set[ProcessedAudioTrack] = set()
        self.encoders: dict[str, SharedAudioEncoder] = {}
        self.source: Session | None = None
        self.closed = False
        self._cancel: Callable[[], None] | None = None

    def follow(self, session: Session | None) -> None:
        """Take audio from ``session`` (the video feed's new source; None: nothing)."""
        if session is self.source and (session is None or self._cancel is not None):
            return
        self._detach()
        self.source = session
        for encoder in self.encoders.values():
            encoder.pending.clear()  # never send an ended source's audio late
        if session is not None and self.tracks and not self.closed:
            self._cancel = session.subscribe_audio(self._on_chunk)

    def _detach(self) -> None:
        cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel()

    def _on_chunk(self, chunk: AudioChunk) -> None:
        if self.closed:
            return
        for encoder in self.encoders.values():
            pending = encoder.pending
            pending.append(chunk)  # stale ones are dropped by ``encode``
            if encoder.task is None:
                encoder.task = asyncio.ensure_future(self._pump(encoder))

    async def _pump(self, encoder: SharedAudioEncoder) -> None:
        loop = asyncio.get_running_loop()
        try:
            while encoder.pending and not self.closed:
                chunk = encoder.pending.popleft()
                try:
                    packets = await loop.run_in_executor(None, encoder.encode, chunk)
                except Exception:
                    logger.exception("WHIP: audio egress %s encoder failed", encoder.codec)
                    continue
                finally:
                    del chunk
                for track in list(self.tracks):
                    if track.codec == encoder.codec:
                        track.offer_packets(packets)
        finally:
            encoder.task = None

    def subscribe(self, track: ProcessedAudioTrack) -> None:
        """Start delivering to ``track`` (at its first ``recv``, when its codec is known)."""
        if track.codec is not None and track.codec not in self.encoders:
            self.encoders[track.codec] = SharedAudioEncoder(track.codec, self.t0)
        if self._cancel is None:
            self.follow(self.source)

    def remove_track(self, track: ProcessedAudioTrack) -> None:
        self.tracks.discard(track)
        codecs = {t.codec for t in self.tracks}
        for codec in [c for c in self.encoders if c not in codecs]:
            self.encoders.pop(codec).pending.clear()  # a running pump finishes its chunk
        if not self.tracks:
            self._detach()
        if self.feed is not None:
            self.feed.track_removed()

    def end(self) -> None:
        for track in list(self.tracks):
            track.source_ended = True
            track.stop()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._detach()
        self.source = self.feed = None
        for encoder in self.encoders.values():
            encoder.pending.clear()


class ProcessedAudioTrack(MediaStreamTrack):
    """An audio track carrying a feed's encoded audio for one peer connection.

    Its codec is the one the answer negotiated for it (read at the first ``recv``); it
    returns the shared encoder's ``av.Packet``s, which aiortc only packetizes.
    """

    kind = "audio"

    def __init__(self, feed: AudioFeed, pc: RTCPeerConnection | None = None) -> None:
        super().__init__()
        self.feed, self.pc = feed, pc
        self.codec: str | None = None
        self.subscribed = False
        self.source_ended = False
        """True when the track stopped because the watched session ended."""
        self.packets_sent = 0
        self.packets_dropped = 0
        """Packets dropped because this viewer's sender fell ``TRACK_QUEUE_S`` behind."""
        self._queue: deque[av.Packet] = deque()
        self._wake = asyncio.Event()
        feed.tracks.add(self)
        fixed = feed.feed.fixed if feed.feed is not None else None
        if feed.closed or (fixed is not None and fixed.closed):
            self.stop()

    def offer_packets(self, packets: list[av.Packet]) -> None:
        if not packets or self.readyState != "live":
            return
        self._queue.extend(packets)
        limit = max(round(TRACK_QUEUE_S * 50), 2 * len(packets))  # 20 ms packets
        while len(self._queue) > limit:
            self._queue.popleft()
            self.packets_dropped += 1
        self._wake.set()

    async def recv(self) -> av.Packet:
        if not self.subscribed and self.readyState == "live":
            from .egress import negotiated_codec  # egress imports this module

            self.subscribed = True
            if self.pc is not None:
                codec = negotiated_codec(self.pc, self)
                self.codec = codec if codec in AUDIO_CODECS else None
                if self.codec is None:
                    logger.warning("WHIP: no shared audio encoder for codec %r", codec)
            self.pc = None  # the connection holds this track: no reference back
            self.feed.subscribe(self)
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            if self._queue:
                break
            self._wake.clear()
            await self._wake.wait()
        self.packets_sent += 1
        return self._queue.popleft()

    def stop(self) -> None:
        if self.readyState == "ended":
            return
        super().stop()  # emits "ended"
        self._wake.set()
        self._queue.clear()
        self.pc = None
        self.feed.remove_track(self)
        self.remove_all_listeners()
