"""Scenario (h): the audio latency a live audio prompt adds, against a passthrough.

The publisher sends a 440 Hz sine (Opus, 20 ms frames, paced as a microphone is) and no
video. The project receiver records every processed audio buffer through
``WhipServer.add_audio_hook`` (called on the session's audio worker thread): the buffer's
``received_at`` (its first input frame reached the audio worker's inbox, after aiortc's
jitter buffer and Opus decoder) to ``processed_at`` (the prompt's output is ready). Leg A runs
no audio prompt (the worker passes each frame through); leg B runs LoadAudioTensor
(``buffer_size`` 20 ms, one Opus frame) -> the built-in ``LiveAudioGain`` (-6 dB; the
ComfyUI engine registers it too) -> SaveAudioTensor. Network and
decoding are the same in both legs, so B - A is what the audio prompt path adds.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .procs import cpu_seconds

__all__ = [
    "AUDIO_BUFFER_MS",
    "AudioRecorder",
    "audio_leg_metrics",
    "audio_prompt",
]

TONE_RATE, TONE_FRAME = 48000, 960
"""The publisher's ``TimedSine``: 48 kHz, 20 ms frames."""
AUDIO_BUFFER_MS = 20.0
"""LoadAudioTensor's buffer_size in (h): one 20 ms Opus frame, the smallest useful buffer."""
GAIN_DB = -6.0


def audio_prompt(buffer_ms: float = AUDIO_BUFFER_MS) -> dict[str, Any]:
    """LoadAudioTensor -> LiveAudioGain -> SaveAudioTensor (node ids apart from video's)."""
    return {
        "101": {"class_type": "LoadAudioTensor", "inputs": {"buffer_size": buffer_ms}},
        "102": {
            "class_type": "LiveAudioGain",
            "inputs": {"audio": ["101", 0], "gain_db": GAIN_DB},
        },
        "103": {"class_type": "SaveAudioTensor", "inputs": {"audio": ["102", 0]}},
    }


AudioRecord = tuple[int, int, float, float, float, float, int, int]
"""(session, index, received_at, processed_at, seconds, rms, pts, sample_rate) of a buffer."""


class AudioRecorder:
    """Records processed audio buffers per session (called on audio worker threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: list[AudioRecord] = []
        self.sessions: dict[str, int] = {}

    def reset(self) -> None:
        with self._lock:
            self.records = []
            self.sessions = {}

    def on_chunk(self, session_id: str, chunk: Any) -> None:
        now = time.monotonic()
        samples = chunk.samples
        rms = float(np.sqrt(np.mean(np.square(samples)))) if samples.size else 0.0
        with self._lock:
            session = self.sessions.setdefault(session_id, len(self.sessions))
        self.records.append(
            (
                session,
                chunk.index,
                chunk.received_at,
                now,
                chunk.duration_s,
                rms,
                chunk.pts,
                chunk.sample_rate,
            )
        )

    def measure(
        self,
        sessions: int,
        warmup: float,
        duration: float,
        counters: Callable[[], dict[str, Any]],
        start_timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Wait until every session delivered audio, ``warmup`` seconds, then a window."""
        deadline = time.monotonic() + start_timeout
        while len(self.sessions) < sessions:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {len(self.sessions)} of {sessions} sessions delivered audio "
                    f"within {start_timeout:g} s"
                )
            time.sleep(0.01)
        time.sleep(warmup)
        before, cpu0, t0 = counters(), cpu_seconds(), time.monotonic()
        time.sleep(duration)
        t1, cpu1, after = time.monotonic(), cpu_seconds(), counters()
        records = [r for r in self.records if t0 <= r[3] <= t1]
        return {
            "t0": t0,
            "t1": t1,
            "cpu_s": cpu1 - cpu0,
            "audio_records": records,
            "counters_before": before,
            "counters_after": after,
        }


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def _send_time(record: AudioRecord, send_times: list[list[float]]) -> float | None:
    """When the publisher sent the buffer's first sample. aiortc's receiver counts pts from
    the first RTP timestamp it got, and the publisher's first frame has pts 0, so the pts
    maps straight to the publisher's frame index (at 48 kHz, 20 ms frames)."""
    session, pts, rate = record[0], record[6], record[7]
    if session >= len(send_times) or not rate:
        return None
    frame = pts * TONE_RATE // rate // TONE_FRAME
    times = send_times[session]
    return times[frame] if 0 <= frame < len(times) else None


def audio_leg_metrics(
    spec: Any, measure: dict[str, Any], send_times: list[list[float]]
) -> dict[str, Any]:
    """One audio leg in the keys video legs use (``fps`` is buffers per second, ``p50_ms``
    and ``p95_ms`` the receive -> processed latency, ``dropped`` whole buffers dropped), plus
    ``e2e_*``: publisher send -> processed (Opus, network, jitter buffer, decode, worker)."""
    span = max(measure["t1"] - measure["t0"], 1e-6)
    records = measure["audio_records"]
    latencies = [(r[3] - r[2]) * 1e3 for r in records]
    e2e: list[float] = []
    misread = 0
    for record in records:
        sent = _send_time(record, send_times)
        # sent after it arrived, or a second early: the pts did not map (a lost first packet)
        if sent is None or not 0.0 <= record[2] - sent < 1.0:
            misread += 1
        else:
            e2e.append((record[3] - sent) * 1e3)
    seconds = sum(r[4] for r in records)
    before, after = measure["counters_before"], measure["counters_after"]
    buffers = len(records)
    gaps = [b[3] - a[3] for a, b in itertools.pairwise(records) if a[0] == b[0]]
    return {
        "spec": spec.__dict__,
        "window_s": round(span, 3),
        "fps": round(buffers / span / max(spec.sessions, 1), 2),
        "frames": buffers,
        "audio_seconds": round(seconds, 3),
        "p50_ms": _percentile(latencies, 0.5),
        "p95_ms": _percentile(latencies, 0.95),
        "max_ms": round(max(latencies), 2) if latencies else None,
        "e2e_p50_ms": _percentile(e2e, 0.5),
        "e2e_p95_ms": _percentile(e2e, 0.95),
        "misread": misread,
        "mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
        "cpu_ms_per_frame": round(measure["cpu_s"] * 1e3 / buffers, 2) if buffers else None,
        "cpu_share": measure["cpu_s"] / span,
        "max_gap_ms": round(max(gaps) * 1e3, 2) if gaps else None,
        "rms": round(statistics.fmean(r[5] for r in records), 4) if records else None,
        "dropped": after.get("audio_buffers_dropped", 0) - before.get("audio_buffers_dropped", 0),
        "frames_in": after.get("audio_frames_in", 0) - before.get("audio_frames_in", 0),
        "queue_growth": 0,
        "lost": 0,
        "sessions_before": before.get("sessions"),
        "sessions_after": after.get("sessions"),
        "errors": after.get("errors", []),
        "latency_series": [
            [round(r[3] - measure["t0"], 4), round((r[3] - r[2]) * 1e3, 2)]
            for r in records[:: max(1, len(records) // 200)]
        ],
    }
