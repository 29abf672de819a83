"""``SessionInfo``: the frozen copy of one session's state that crosses to the kernel thread
and becomes its ``/whip-stats`` entry (video, audio, network and end counters)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["SessionInfo"]


@dataclass(frozen=True)
class SessionInfo:
    """A copy of one session's state, safe to hand to the kernel thread."""

    id: str
    kind: str
    """``whip`` (publisher), ``whep`` (viewer) or ``offer`` (ComfyStream-style send-receive)."""
    created_at: float
    connection_state: str
    has_video: bool
    has_audio: bool
    channel_id: str
    prompt_source: str
    """Where the running prompt comes from: ``session``, ``channel`` or ``default``."""
    frames_in: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    audio_frames_in: int = 0
    audio_frames_out: int = 0
    audio_buffers_dropped: int = 0
    audio_latency_ms: float = 0.0
    """p50 of a buffer's first input frame -> its processed output (buffering included)."""
    audio_latency_p95_ms: float = 0.0
    audio_level_in_db: float = -120.0
    audio_level_out_db: float = -120.0
    audio_buffer_ms: float = 0.0
    """Audio per prompt run (``LoadAudioTensor.buffer_size``); 0 when audio passes through."""
    audio_sample_rate: int = 0
    audio_last_error: str | None = None
    fps_in: float = 0.0
    fps_out: float = 0.0
    latency_ms: float = 0.0
    latency_p95_ms: float = 0.0
    prompt_version: int = 0
    last_error: str | None = None
    width: int = 0
    height: int = 0
    node_ms: dict[str, float] = field(default_factory=dict)
    minute_fps: tuple[float, ...] = ()
    video_state: str = ""
    """``connecting``, ``waiting for keyframe``, ``receiving``; empty without video."""
    first_frame_ms: float | None = None
    """Milliseconds from ``connected`` to the first decoded video frame."""
    end_reason: str | None = None
    """Why the session ended (an ``EndReason`` value); None while it runs."""
    end_detail: str | None = None
    network: dict[str, int] = field(default_factory=dict)
    """RTP packets lost, NACKs and PLIs sent, gaps skipped (``netstats.RtpCounters``)."""

    def to_dict(self) -> dict[str, Any]:
        """The ``/whip-stats`` entry for this session."""
        return {
            "created_at": self.created_at,
            "kind": self.kind,
            "connection_state": self.connection_state,
            "has_video": self.has_video,
            "has_audio": self.has_audio,
            "channel_id": self.channel_id,
            "prompt_source": self.prompt_source,
            "frames_in": self.frames_in,
            "frames_processed": self.frames_processed,
            "frames_dropped": self.frames_dropped,
            "audio_frames_in": self.audio_frames_in,
            "audio_frames_out": self.audio_frames_out,
            "audio_buffers_dropped": self.audio_buffers_dropped,
            "audio_latency_ms": round(self.audio_latency_ms, 2),
            "audio_latency_p95_ms": round(self.audio_latency_p95_ms, 2),
            "audio_level_in_db": round(self.audio_level_in_db, 1),
            "audio_level_out_db": round(self.audio_level_out_db, 1),
            "audio_buffer_ms": round(self.audio_buffer_ms, 1),
            "audio_sample_rate": self.audio_sample_rate,
            "audio_last_error": self.audio_last_error,
            "fps_in": round(self.fps_in, 2),
            "fps_out": round(self.fps_out, 2),
            "latency_ms": round(self.latency_ms, 2),
            "latency_p95_ms": round(self.latency_p95_ms, 2),
            "prompt_version": self.prompt_version,
            "last_error": self.last_error,
            "width": self.width,
            "height": self.height,
            "node_ms": {k: round(v, 3) for k, v in self.node_ms.items()},
            "video_state": self.video_state,
            "first_frame_ms": None if self.first_frame_ms is None else round(self.first_frame_ms),
            "end_reason": self.end_reason,
            "end_detail": self.end_detail,
            **self.network,
        }
