"""Sessions: one RTCPeerConnection each, their media consumers, state and snapshots.

Everything here runs on the server's event loop (see ``server.py``). The only thing handed
to other threads is a frozen ``SessionInfo`` copy. Media is consumed continuously: every
decoded video frame goes straight into the session's ``FrameProcessor`` mailbox (O(1)), so
aiortc's unbounded receive queue never grows; every decoded audio frame goes into the
session's ``AudioProcessor`` inbox the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from ..pipeline.audio import AudioChunk, AudioProcessor, AudioStats
from ..pipeline.processor import FrameProcessor, ProcessedFrame, ProcessingStats
from .audio_jitter import trim_audio_prefetch
from .end_reason import EndReason, SessionEnd
from .handoff import LoopHandoff
from .keyframe_wait import DECODE_WARNINGS, decoder_threads
from .lifecycle import SessionKind
from .netstats import RtpCounters
from .session_info import SessionInfo
from .teardown import break_peer_cycles

__all__ = [
    "AudioHook",
    "FrameHook",
    "Session",
    "SessionInfo",
    "SessionRegistry",
    "new_resource_id",
]

FrameHook = Callable[[ProcessedFrame], None]
AudioHook = Callable[[str, AudioChunk], None]
"""``hook(session_id, chunk)`` on the audio worker thread (the benchmark's audio probe)."""

logger = logging.getLogger(__name__)


def new_resource_id() -> str:
    """Unguessable resource id (RFC 9725 §4.2 leaves the URL to the server)."""
    return secrets.token_urlsafe(16)


def new_etag() -> str:
    """A strong entity-tag identifying one ICE session (RFC 9725 §4.3.1)."""
    return f'"{secrets.token_hex(8)}"'


class Session:
    """One WHIP resource: its peer connection, track consumers and frame processor.

    Processed frames leave the worker thread in one place, ``_on_worker_frame``: it calls the
    server's worker-thread hooks (``worker_hooks``, e.g. the benchmark's), then hands the frame
    to the loop with one ``call_soon_threadsafe`` for the loop-side ``subscribe_frames``
    subscribers (egress feeds, the ``/offer`` return track). ``close`` drops every reference
    the session holds (issue 17), so it is freed by reference counting.
    """

    def __init__(
        self,
        pc: RTCPeerConnection,
        *,
        channel_id: str,
        kind: SessionKind | str = SessionKind.WHIP,
        remote_ufrag: str | None = None,
        remote_pwd: str | None = None,
        frame_timeout: float = 2.0,
        worker_hooks: Callable[[], tuple[FrameHook, ...]] | None = None,
        audio_hooks: Callable[[], tuple[AudioHook, ...]] | None = None,
    ) -> None:
        self.id = new_resource_id()
        self.pc = pc
        self.kind = SessionKind(kind)
        self.channel_id = channel_id
        self.created_at = time.time()
        self.created_mono = time.monotonic()
        self.etag = new_etag()
        self.remote_ufrag = remote_ufrag
        self.remote_pwd = remote_pwd
        self.has_video = False
        self.has_audio = False
        self.last_media_at: float | None = None
        self.connected_at: float | None = None
        self.first_frame_at: float | None = None
        self._keyframe_wait_logged = False
        #: why the session ended; set once, by ``record_end``
        self.end: SessionEnd | None = None
        self.prompt_source = "default"
        #: a prompt that only this session runs (``?prompts=`` on POST), or None
        self.session_prompt: Any = None
        #: the control channel paused its prompts: frames pass through (``WhipCore`` applies)
        self.prompts_paused = False
        #: the checked offer (small: media sections, ICE credentials), for OFFERED handlers
        self.offer: Any = None
        self.closed = False
        self.loop = asyncio.get_running_loop()
        self._worker_hooks = worker_hooks
        self._audio_hooks = audio_hooks
        self._frames: LoopHandoff[ProcessedFrame] = LoopHandoff(self.loop, f"{self.id[:8]} frame")
        self._audio: LoopHandoff[AudioChunk] = LoopHandoff(self.loop, f"{self.id[:8]} audio")
        self.processor = FrameProcessor(
            self.id[:8], frame_timeout=frame_timeout, on_processed=self._on_worker_frame
        )
        self.audio_processor = AudioProcessor(
            self.id[:8], frame_timeout=frame_timeout, on_processed=self._on_worker_audio
        )
        self.rtp = RtpCounters()
        self._tasks: list[asyncio.Task[None]] = []
        self._outgoing: list[MediaStreamTrack] = []

    # -- logging helper: every protocol message names the session ------------------------
    def log(self, level: int, msg: str, *args: object) -> None:
        logger.log(level, "WHIP: %s " + msg, self.id[:8], *args)

    @property
    def connection_state(self) -> str:
        return "closed" if self.closed else self.pc.connectionState

    # -- processed media: the one worker -> loop crossing per stream ----------------------
    def _on_worker_frame(self, processed: ProcessedFrame) -> None:
        """Video worker thread: the server's hooks, then one hand-over to the loop."""
        hooks = self._worker_hooks() if self._worker_hooks is not None else ()
        for hook in hooks:
            try:
                hook(processed)
            except Exception:
                logger.exception("WHIP: %s frame hook failed", self.id[:8])
        if not self.closed:
            self._frames.deliver_soon(processed)

    def _on_worker_audio(self, chunk: AudioChunk) -> None:
        """Audio worker thread: the server's audio hooks, then one hand-over to the loop."""
        hooks = self._audio_hooks() if self._audio_hooks is not None else ()
        for hook in hooks:
            try:
                hook(self.id, chunk)
            except Exception:
                logger.exception("WHIP: %s audio hook failed", self.id[:8])
        if not self.closed:
            self._audio.deliver_soon(chunk)

    def subscribe_frames(self, subscriber: FrameHook) -> Callable[[], None]:
        """Call ``subscriber(processed)`` on the loop for each processed frame; returns the
        function that ends the subscription (closing the session ends it too)."""
        return self._frames.subscribe(subscriber)

    def subscribe_audio(self, subscriber: Callable[[AudioChunk], None]) -> Callable[[], None]:
        """Call ``subscriber(chunk)`` on the loop for each processed audio buffer; returns
        the function that ends the subscription (closing the session ends it too)."""
        return self._audio.subscribe(subscriber)

    @property
    def frame_subscribers(self) -> int:
        return len(self._frames)

    def send(self, track: MediaStreamTrack) -> None:
        """Add a track this session sends back; it is stopped when the session closes."""
        self.pc.addTrack(track)
        self._outgoing.append(track)

    def record_end(self, end: SessionEnd) -> bool:
        """Record why the session ends and log it; the first end wins. Loop thread."""
        if self.end is not None:
            return False
        self.end = end
        self.log(logging.INFO, "ended (%s): %s", end.reason.value, end.detail or "-")
        return True

    @property
    def video_state(self) -> str:
        if not self.has_video or not self.kind.publishes:  # a viewer receives no video
            return ""
        if self.first_frame_at is not None:
            return "receiving"
        return "waiting for keyframe" if self.connected_at is not None else "connecting"

    def _decoder_threads(self) -> list:
        return decoder_threads(self.pc)

    def _on_decode_failure(self) -> bool:
        """aiortc could not decode a frame (decoder thread): before the first frame, that
        is the wait for a keyframe; say so once and silence the per-frame warning."""
        if self.first_frame_at is not None:
            return False
        if not self._keyframe_wait_logged:
            self._keyframe_wait_logged = True
            self.log(
                logging.INFO,
                "waiting for a keyframe from the publisher; set its keyframe interval to 1-2 s",
            )
        return True

    def attach_track(self, track: MediaStreamTrack) -> None:
        """Start consuming ``track`` at once; called from aiortc's ``track`` event."""
        self.log(logging.INFO, "track received: %s", track.kind)
        for transceiver in self.pc.getTransceivers():  # ``track`` may be a relay's copy
            self.rtp.watch(transceiver.receiver)
        if track.kind == "video":
            self.has_video = True
            DECODE_WARNINGS.watch(self.id, self._decoder_threads, self._on_decode_failure)
            self.processor.start()
            task = asyncio.ensure_future(self._consume_video(track))
        else:
            self.has_audio = True
            trim_audio_prefetch(self.pc)  # 20 ms hold instead of aiortc's 80 (audio_jitter.py)
            self.audio_processor.start()
            task = asyncio.ensure_future(self._consume_audio(track))
        self._tasks.append(task)

    async def _consume_video(self, track: MediaStreamTrack) -> None:
        submit = self.processor.submit
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            frame = await track.recv()
            self._first_frame()
            while True:
                self.last_media_at = time.monotonic()
                submit(frame)
                frame = await track.recv()

    def _first_frame(self) -> None:
        self.first_frame_at = time.monotonic()
        DECODE_WARNINGS.unwatch(self.id)
        if self._keyframe_wait_logged:
            since = self.first_frame_at - (self.connected_at or self.first_frame_at)
            self.log(logging.INFO, "first video frame %.0f ms after connecting", since * 1000)

    async def _consume_audio(self, track: MediaStreamTrack) -> None:
        submit = self.audio_processor.submit
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                self.last_media_at = time.monotonic()
                submit(frame)

    def info(self) -> SessionInfo:
        stats: ProcessingStats = self.processor.stats()
        audio: AudioStats = self.audio_processor.stats()
        return SessionInfo(
            id=self.id,
            kind=self.kind.value,
            created_at=self.created_at,
            connection_state=self.connection_state,
            has_video=self.has_video,
            has_audio=self.has_audio,
            channel_id=self.channel_id,
            prompt_source=self.prompt_source,
            frames_in=stats.frames_in,
            frames_processed=stats.frames_processed,
            frames_dropped=stats.frames_dropped,
            audio_frames_in=audio.frames_in,
            audio_frames_out=audio.frames_out,
            audio_buffers_dropped=audio.buffers_dropped,
            audio_latency_ms=audio.latency_ms,
            audio_latency_p95_ms=audio.latency_p95_ms,
            audio_level_in_db=audio.level_in_db,
            audio_level_out_db=audio.level_out_db,
            audio_buffer_ms=audio.buffer_ms,
            audio_sample_rate=audio.sample_rate,
            audio_last_error=audio.last_error,
            fps_in=stats.fps_in,
            fps_out=stats.fps_out,
            latency_ms=stats.latency_ms,
            latency_p95_ms=stats.latency_p95_ms,
            prompt_version=stats.prompt_version,
            last_error=stats.last_error,
            width=stats.width,
            height=stats.height,
            node_ms=dict(stats.node_ms),
            minute_fps=tuple(stats.minute_fps),
            video_state=self.video_state,
            first_frame_ms=_first_frame_ms(self.connected_at, self.first_frame_at),
            end_reason=self.end.reason.value if self.end else None,
            end_detail=self.end.detail if self.end else None,
            network=self.rtp.as_dict(),
        )

    async def close(self, end: SessionEnd | None = None) -> None:
        """Close the peer connection, stop consumers, tracks sent back and the worker thread
        (then ``release`` drops what the session holds). Idempotent.

        ``end`` is recorded unless an earlier end was (``WhipCore.close_session`` records
        it before calling this)."""
        if self.closed:
            return
        self.closed = True
        self.record_end(end or SessionEnd(EndReason.CLOSED_BY_SERVER))
        DECODE_WARNINGS.unwatch(self.id)
        for task in self._tasks:
            task.cancel()
        for track in self._outgoing:
            track.stop()
        self.rtp.stop()
        with contextlib.suppress(Exception):
            await self.pc.close()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        # joining the torch worker may take up to one frame: never on the event loop
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            loop.run_in_executor(None, self.processor.stop),
            loop.run_in_executor(None, self.audio_processor.stop),
        )

    def release(self) -> None:
        """Drop every reference a closed session holds (frames, tracks, tasks, subscribers,
        aiortc's handlers) so that it and its peer connection are freed by reference
        counting, without waiting for the cycle collector (see ``rtc/teardown.py``)."""
        self._frames.clear()
        self._audio.clear()
        self._audio_hooks = None
        self._tasks.clear()
        self._outgoing.clear()
        self._worker_hooks = None
        self.session_prompt = None
        self.processor.release()
        self.audio_processor.release()
        break_peer_cycles(self.pc)


def _first_frame_ms(connected_at: float | None, first_frame_at: float | None) -> float | None:
    if connected_at is None or first_frame_at is None:
        return None
    return max(0.0, (first_frame_at - connected_at) * 1000.0)


class SessionRegistry:
    """The live sessions, keyed by resource id. Loop-thread only."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def add(self, session: Session) -> None:
        self._sessions[session.id] = session

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def pop(self, session_id: str) -> Session | None:
        return self._sessions.pop(session_id, None)

    def values(self) -> list[Session]:
        return list(self._sessions.values())

    def count(self, kind: SessionKind | str) -> int:
        return sum(1 for s in self._sessions.values() if s.kind == kind)

    def snapshot(self) -> dict[str, SessionInfo]:
        return {sid: s.info() for sid, s in self._sessions.items()}
