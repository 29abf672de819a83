"""Per-session audio processing: an inbox, a worker thread that buffers and runs the audio
prompt, levels, stats and the last seconds of processed audio.

Protocol, as for video (``processor.py``):

* ``submit(frame)`` runs on the event loop for every decoded audio frame: O(1), under a lock
  held only for bookkeeping. The inbox holds at most ``INBOX_S`` of audio; older frames are
  dropped and counted (only while a prompt hangs, the worker drains it every buffer).
* The worker ``comfywhip-audio-<name>`` converts frames to float32 ``[channels, samples]``
  (``audio_frames.py``) and buffers ``buffer_size`` ms, the prompt's ``LoadAudioTensor`` input
  (with no audio prompt: whatever has arrived, one 20 ms frame as a rule). The prompt's audio
  part runs on a ``PromptRunner`` thread, at most ``frame_timeout`` long.
* Bounded latency, no drift: when two whole buffers or more wait and the oldest waiting
  sample arrived more than two buffers ago (processing is slower than real time, not a
  burst), the oldest whole buffers are dropped and counted, so the output stays within about
  two buffers of the input. Output timestamps follow the input's (a dropped buffer leaves a
  gap of its length), so audio stays aligned with video.
* A prompt that raises, times out or returns something other than AUDIO costs no audio: that
  buffer passes through unchanged, ``last_error`` says why, and the prompt is benched until
  ``set_prompt`` (as video does).
* Each ``AudioChunk`` goes to ``on_processed`` on the worker thread (the session hands it to
  the loop) and into a ring of the last ``history_s`` seconds (``recent``).
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import av
import numpy as np
import torch

from .audio_buffer import SampleBuffer
from .audio_frames import (
    FRAME_MS,
    SILENCE_DB,
    audio_from_prompt,
    frame_to_array,
    level_db,
    to_prompt_audio,
)
from .processor import PromptRunner, Stopped, configure_torch_threads, describe_error

__all__ = ["AudioChunk", "AudioProcessor", "AudioStats"]

logger = logging.getLogger(__name__)

INBOX_S = 2.0
LATENCY_SAMPLES = 100
DEFAULT_BUFFER_MS = 500.0
"""``LoadAudioTensor``'s own default (ComfyStream's)."""


@dataclass(frozen=True, eq=False)
class AudioChunk:
    """One processed buffer. ``samples`` is float32 ``[channels, samples]`` in -1..1."""

    samples: np.ndarray
    sample_rate: int
    pts: int
    """First sample, in ``1/sample_rate``; follows the input's timeline."""
    received_at: float
    """``time.monotonic()`` when the buffer's first input frame arrived."""
    processed_at: float
    index: int

    @property
    def waveform(self) -> torch.Tensor:
        """ComfyUI's AUDIO waveform layout ``[1, channels, samples]`` (shares memory)."""
        return torch.from_numpy(self.samples).unsqueeze(0)

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        return self.samples.shape[1] / self.sample_rate


@dataclass(frozen=True)
class AudioStats:
    """A snapshot of one audio processor's counters; safe to hand to any thread."""

    frames_in: int = 0
    frames_out: int = 0
    """Output in 20 ms frames' worth of samples."""
    frames_dropped: int = 0
    """Input frames dropped from a full inbox (a prompt hung)."""
    buffers_processed: int = 0
    buffers_dropped: int = 0
    """Whole buffers dropped because processing was slower than real time."""
    latency_ms: float = 0.0
    """p50 of first input frame of a buffer -> its output (buffering included)."""
    latency_p95_ms: float = 0.0
    buffer_ms: float = 0.0
    sample_rate: int = 0
    channels: int = 0
    level_in_db: float = SILENCE_DB
    level_out_db: float = SILENCE_DB
    prompt_version: int = 0
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AudioProcessor:
    """Runs one session's audio through the audio part of its prompt on a worker thread."""

    def __init__(
        self,
        name: str,
        *,
        frame_timeout: float = 2.0,
        on_processed: Callable[[AudioChunk], None] | None = None,
        history_s: float = 30.0,
    ) -> None:
        self.name = name
        self.frame_timeout = frame_timeout
        self.history_s = history_s
        self._on_processed = on_processed
        self._tag = f"WHIP: {name}"
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._inbox: deque[tuple[av.AudioFrame, float]] = deque()
        self._inbox_limit = int(INBOX_S * 1000 / FRAME_MS)
        self._quit = False
        self._thread: threading.Thread | None = None
        self._runner: PromptRunner | None = None
        self._prompt: Any = None
        self._version = 0
        self._generation = 0
        self._benched_generation = -1
        self._frames_in = self._frames_dropped = 0
        self._samples_out = 0
        self._buffers = self._buffers_dropped = 0
        self._latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._buffer_ms = 0.0
        self._format = (0, 0)  # (sample_rate, channels) of the input
        self._level_in = self._level_out = SILENCE_DB
        self._last_error: str | None = None
        self._history: deque[AudioChunk] = deque()
        self._history_samples = 0

    # -- control (any thread) ---------------------------------------------------------------
    def start(self) -> None:
        """Start the daemon worker thread; a second call is a no-op."""
        with self._lock:
            if self._quit:
                raise RuntimeError(f"{self._tag} audio processor was stopped")
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name=f"comfywhip-audio-{self.name}", daemon=True
            )
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Idempotent: stop the worker and the prompt runner (a hung prompt is abandoned)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._quit = True
            runner, self._runner = self._runner, None
            self._work.notify_all()
        if runner is not None:
            runner.close()
        for thread in (self._thread, runner.thread if runner is not None else None):
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    logger.warning("%s %s still running after stop", self._tag, thread.name)

    def release(self) -> None:
        """After ``stop``: drop frames, audio, the prompt and the callback."""
        with self._lock:
            self._inbox.clear()
            self._history.clear()
            self._prompt = None
            self._on_processed = None
            self._thread = None

    def submit(self, frame: av.AudioFrame) -> None:
        """Queue a decoded frame (event loop; O(1), never blocks, no torch)."""
        now = time.monotonic()
        with self._lock:
            self._frames_in += 1
            if len(self._inbox) >= self._inbox_limit:
                self._inbox.popleft()
                self._frames_dropped += 1
            self._inbox.append((frame, now))
            self._work.notify()

    def set_prompt(self, prompt: Any, version: int) -> None:
        """Run ``prompt``'s audio part (None: pass through) from the next buffer on."""
        with self._lock:
            self._prompt = prompt
            self._version = version
            self._generation += 1
            self._last_error = None

    # -- readers (any thread) ---------------------------------------------------------------
    def stats(self) -> AudioStats:
        with self._lock:
            ordered = sorted(self._latencies)
            rate, channels = self._format
            frame_samples = max(1, rate * FRAME_MS // 1000) if rate else 1
            return AudioStats(
                frames_in=self._frames_in,
                frames_out=round(self._samples_out / frame_samples) if rate else 0,
                frames_dropped=self._frames_dropped,
                buffers_processed=self._buffers,
                buffers_dropped=self._buffers_dropped,
                latency_ms=_percentile_ms(ordered, 0.5),
                latency_p95_ms=_percentile_ms(ordered, 0.95),
                buffer_ms=self._buffer_ms,
                sample_rate=rate,
                channels=channels,
                level_in_db=self._level_in,
                level_out_db=self._level_out,
                prompt_version=self._version,
                last_error=self._last_error,
            )

    def latest(self) -> AudioChunk | None:
        with self._lock:
            return self._history[-1] if self._history else None

    def recent(self, seconds: float) -> tuple[np.ndarray, int] | None:
        """The last ``seconds`` of processed audio as float32 ``[channels, samples]`` and its
        rate (only chunks in the newest chunk's format); None before the first chunk."""
        with self._lock:
            chunks = list(self._history)
        if not chunks:
            return None
        last = chunks[-1]
        want = int(seconds * last.sample_rate)
        picked: list[np.ndarray] = []
        total = 0
        for chunk in reversed(chunks):
            if (chunk.sample_rate, chunk.channels) != (last.sample_rate, last.channels):
                break
            picked.append(chunk.samples)
            total += chunk.samples.shape[1]
            if total >= want:
                break
        joined = np.concatenate(picked[::-1], axis=1)
        return joined[:, max(0, joined.shape[1] - want) :], last.sample_rate

    # -- worker thread ----------------------------------------------------------------------
    def _run(self) -> None:
        configure_torch_threads()
        buffer = SampleBuffer()
        while True:
            with self._lock:
                self._work.wait_for(lambda: bool(self._inbox) or self._quit)
                if self._quit:
                    break
                arrived = list(self._inbox)
                self._inbox.clear()
                prompt, generation = self._prompt, self._generation
                benched = self._benched_generation == generation
            for frame, received_at in arrived:
                samples = frame_to_array(frame)
                if buffer.add(samples, frame.sample_rate, frame.pts, received_at):
                    with self._lock:
                        self._format = (frame.sample_rate, samples.shape[0])
            del arrived
            chosen = None if benched else prompt
            need = self._buffer_samples(chosen, buffer.sample_rate)
            try:
                self._drain(buffer, need, chosen, generation)
            except Stopped:
                break

    def _buffer_samples(self, prompt: Any, rate: int) -> int | None:
        """Samples per prompt run; None: take whatever is there (passthrough)."""
        if prompt is None or not rate:
            with self._lock:
                self._buffer_ms = 0.0
            return None
        ms = getattr(prompt, "audio_buffer_ms", None) or DEFAULT_BUFFER_MS
        ms = min(max(float(ms), 1.0), 60_000.0)
        with self._lock:
            self._buffer_ms = ms
        return max(1, round(rate * ms / 1000.0))

    def _drain(self, buffer: SampleBuffer, need: int | None, prompt: Any, generation: int) -> None:
        if need is None:
            if buffer.total:
                self._emit(*buffer.take(buffer.total), prompt=None, generation=generation)
            return
        while buffer.total >= need:
            while buffer.total >= 2 * need and self._behind(buffer, need):
                buffer.drop(need)  # behind real time: drop whole buffers, never drift
                with self._lock:
                    self._buffers_dropped += 1
            self._emit(*buffer.take(need), prompt=prompt, generation=generation)

    @staticmethod
    def _behind(buffer: SampleBuffer, need: int) -> bool:
        """The oldest waiting sample is more than two buffers old: processing is slower
        than real time (a burst after a network stall is not, and is caught up instead)."""
        arrived = buffer.head_received_at
        age = time.monotonic() - arrived if arrived is not None else 0.0
        return age > 2 * need / buffer.sample_rate

    def _emit(
        self, samples: np.ndarray, rate: int, pts: int, received_at: float, *, prompt: Any,
        generation: int,
    ) -> None:  # fmt: skip
        out, out_rate = samples, rate
        if prompt is not None:
            out, out_rate = self._run_prompt(prompt, samples, rate, generation)
        now = time.monotonic()
        out_pts = pts if out_rate == rate else pts * out_rate // rate
        with self._lock:
            self._buffers += 1
            chunk = AudioChunk(out, out_rate, out_pts, received_at, now, self._buffers)
            self._samples_out += round(out.shape[1] * (self._format[0] or out_rate) / out_rate)
            self._latencies.append(now - received_at)
            self._level_in, self._level_out = level_db(samples), level_db(out)
            self._history.append(chunk)
            self._history_samples += out.shape[1]
            self._trim_history(int(self.history_s * out_rate))
        callback = self._on_processed
        if callback is not None:
            try:
                callback(chunk)
            except Exception:
                logger.exception("%s audio subscriber failed", self._tag)

    def _trim_history(self, keep_samples: int) -> None:
        """Forget the oldest chunks beyond ``keep_samples`` (lock held)."""
        history = self._history
        while len(history) > 1 and self._history_samples - history[0].samples.shape[1] >= (
            keep_samples
        ):
            self._history_samples -= history.popleft().samples.shape[1]

    def _run_prompt(
        self, prompt: Any, samples: np.ndarray, rate: int, generation: int
    ) -> tuple[np.ndarray, int]:
        """The prompt's output for one buffer; on any failure the buffer itself."""
        with self._lock:
            if self._quit:
                raise Stopped()
            runner = self._runner = self._runner or PromptRunner(f"{self.name}-audio")
        job = functools.partial(prompt.run_audio, to_prompt_audio(samples, rate))
        try:
            return audio_from_prompt(runner.call(job, self.frame_timeout))
        except Stopped:
            raise
        except concurrent.futures.TimeoutError:
            with self._lock:  # leave the hung helper behind; a fresh one serves next
                hung, self._runner = self._runner, None
            if hung is not None:
                hung.close()
            message = f"audio prompt timed out after {self.frame_timeout:g} s"
        except Exception as exc:
            message = describe_error(exc)
        with self._lock:
            self._last_error = message
            if generation == self._generation:
                self._benched_generation = generation
            version = self._version
        logger.warning("%s audio prompt v%d failed: %s; audio passes through", self._tag,
                       version, message)  # fmt: skip
        return samples, rate


def _percentile_ms(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3 if ordered else 0.0
