"""Per-session frame processing: a one-slot mailbox, a torch worker thread, metrics, hot swap.

Protocol (who may block, what gets dropped):

* ``submit(frame)`` runs on the asyncio event loop for every decoded frame. It never blocks
  and never touches torch: under a lock held only for O(1) bookkeeping it overwrites the
  one-slot mailbox, stamps ``received_at`` and wakes the worker. A frame still in the slot
  when the next one arrives is dropped and counted, so latency stays bounded when
  processing is slower than input: only the newest frame ever waits.
* The worker thread ``comfywhip-proc-<name>`` is the only place that blocks. It takes the
  newest frame, converts it (frames.py), runs the prompt, converts back, publishes a
  ``ProcessedFrame`` into the ``latest`` slot and calls ``on_processed`` (on the worker).
* The prompt itself runs on a helper thread ``comfywhip-prompt-<name>`` and the worker waits
  at most ``frame_timeout`` for it. Python cannot kill a hung thread: on timeout the helper
  is abandoned (it exits whenever the prompt returns), a fresh helper serves later frames
  and the hung prompt is not run again until ``set_prompt`` is called.
* A prompt that raises, returns a non-IMAGE or times out costs that frame (counted as
  dropped) and sets ``last_error``; later frames use the last prompt that succeeded, or
  pass through, until ``set_prompt`` re-arms. ``set_prompt`` takes effect at the next
  frame boundary; the frame in progress finishes with the old prompt.
* Readers (``latest``, ``wait_processed``, ``stats``) may run on any thread and get
  immutable snapshots.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import av
import torch

from . import frames

__all__ = [
    "FrameProcessor",
    "ProcessedFrame",
    "ProcessingStats",
    "PromptOutputError",
    "RunnablePrompt",
    "describe_error",
]

logger = logging.getLogger(__name__)

FPS_WINDOW_S = 2.0
LATENCY_SAMPLES = 100
NODE_SAMPLES = 30
MINUTE_S = 60


@runtime_checkable
class RunnablePrompt(Protocol):
    """What the worker needs from a prompt (``comfywhip_nb.prompts.Prompt`` fits)."""

    def run_timed(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """IMAGE [B,H,W,3] -> (IMAGE, seconds per node keyed ``"<id>:<ClassType>"``)."""
        ...


class PromptOutputError(ValueError):
    """A prompt returned something that is not an IMAGE tensor."""


_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
TORCH_THREADS = max(1, (_CPUS or 1) // 2)
"""Intra-op threads for our torch work: decode (aiortc) and processing share the cores, and
on 2 cores a second torch thread only steals time from the decoder (PERF_NOTES)."""


def configure_torch_threads() -> None:
    """Lower torch's intra-op threads for the calling thread; never raise them.

    Called at the start of each of our threads, not at import: with the OpenMP backend the
    count is per calling thread (threads started later inherit the last value set), so the
    notebook's main thread keeps its own.
    """
    if torch.get_num_threads() > TORCH_THREADS:
        torch.set_num_threads(TORCH_THREADS)


def describe_error(exc: BaseException) -> str:
    """One line for ``last_error``: ``"node 2 (Boom): RuntimeError: boom"`` when the exception
    names its node (``node_id``/``class_type``, as prompts.NodeExecutionError does)."""
    node_id = getattr(exc, "node_id", None)
    if node_id is None:
        return f"{type(exc).__name__}: {exc}"
    where = f"node {node_id} ({getattr(exc, 'class_type', None) or '?'})"
    if getattr(exc, "graph", None) is not None:  # a chain of graphs
        where = f"prompt[{exc.graph}], {where}"  # type: ignore[attr-defined]
    cause = exc.__cause__  # the node's own exception when wrapped
    detail = f"{type(cause).__name__}: {cause}" if cause else f"{type(exc).__name__}: {exc}"
    return f"{where}: {detail}"


def _check_output(out: Any) -> torch.Tensor:
    """First image of a prompt's output as [1,H,W,3] float, or PromptOutputError."""
    if not isinstance(out, torch.Tensor):
        raise PromptOutputError(
            f"prompt output must be an IMAGE tensor [B,H,W,3], got {type(out).__name__}"
        )
    shape = tuple(out.shape)
    if len(shape) != 4 or shape[-1] not in (1, 3) or not out.is_floating_point() or 0 in shape:
        raise PromptOutputError(
            f"prompt output must be an IMAGE [B,H,W,3] float tensor, "
            f"got shape {shape} dtype {out.dtype}"
        )
    out = out[:1]
    return out.expand(-1, -1, -1, 3) if out.shape[-1] == 1 else out


@dataclass(frozen=True)
class ProcessingStats:
    """A snapshot of one processor's counters; safe to hand to any thread."""

    frames_in: int
    frames_processed: int
    frames_dropped: int
    """Overwritten in the mailbox before the worker took them, plus frames lost to errors."""
    fps_in: float
    fps_out: float
    latency_ms: float
    """p50 of receipt -> processed over the last ~100 frames."""
    latency_p95_ms: float
    prompt_version: int
    last_error: str | None
    width: int
    height: int
    node_ms: dict[str, float] = field(default_factory=dict)
    minute_fps: list[float] = field(default_factory=list)
    """Processed frames in each of the last (up to) 60 whole seconds, oldest first."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ProcessedFrame:
    """One processed frame, published in the ``latest`` slot.

    ``output`` is the prompt's IMAGE where it was computed (on a GPU for a CUDA prompt);
    ``image``, its CPU float32 copy, is made only when a reader first asks (preview,
    ``latest_frame``, the benchmark), so frames nobody reads cost no device-to-host copy.
    """

    frame: av.VideoFrame
    output: torch.Tensor
    input_frame: av.VideoFrame
    received_at: float
    processed_at: float
    index: int

    @functools.cached_property
    def image(self) -> torch.Tensor:
        """IMAGE [1,H,W,3] float32 on the CPU (the same tensor when it already is)."""
        return self.output.to("cpu", torch.float32)


class _Meter:
    """Sliding-window counters; not thread-safe (FrameProcessor holds its lock)."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.in_times: deque[float] = deque()
        self.out_times: deque[float] = deque()
        self.latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.nodes: deque[dict[str, float]] = deque(maxlen=NODE_SAMPLES)
        self.node_owner: object = None
        self.per_second: dict[int, int] = {}  # whole monotonic second -> frames processed

    def on_input(self, now: float) -> None:
        self.started = now if self.started is None else self.started
        self.in_times.append(now)
        self.rate(self.in_times, now)  # prunes, keeping submit() amortised O(1)

    def on_output(
        self, now: float, latency: float, timings: dict[str, float], owner: object
    ) -> None:
        self.out_times.append(now)
        self.rate(self.out_times, now)
        self.latencies.append(latency)
        if owner is not self.node_owner:  # a swapped prompt has other nodes
            self.nodes.clear()
            self.node_owner = owner
        if timings:
            self.nodes.append(dict(timings))
        second = int(now)
        self.per_second[second] = self.per_second.get(second, 0) + 1
        while next(iter(self.per_second)) < second - MINUTE_S:  # dicts keep insertion order
            del self.per_second[next(iter(self.per_second))]

    def rate(self, times: deque[float], now: float) -> float:
        while times and times[0] <= now - FPS_WINDOW_S:
            times.popleft()
        if self.started is None or (now - self.started < FPS_WINDOW_S and len(times) < 2):
            return 0.0
        if now - self.started >= FPS_WINDOW_S:
            return len(times) / FPS_WINDOW_S
        return (len(times) - 1) / max(now - times[0], 1e-6)  # first seconds of a stream

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3 if ordered else 0.0

    def node_means_ms(self) -> dict[str, float]:
        samples: dict[str, list[float]] = {}
        for timing in self.nodes:
            for key, seconds in timing.items():
                samples.setdefault(key, []).append(seconds)
        return {key: 1e3 * sum(v) / len(v) for key, v in samples.items()}

    def minute_fps(self, now: float) -> list[float]:
        if self.started is None:
            return []
        current = int(now)
        first = max(int(self.started), current - MINUTE_S)
        return [float(self.per_second.get(s, 0)) for s in range(first, current)]


class Stopped(Exception):
    """The processor stopped while a prompt was running."""


def _run_prompt(prompt: Any, image: torch.Tensor) -> tuple[Any, dict[str, float]]:
    run_timed = getattr(prompt, "run_timed", None)
    return run_timed(image) if run_timed else (prompt.run(image), {})


class PromptRunner:
    """A daemon thread that runs prompts so a worker can stop waiting on a hung one.

    Not a ThreadPoolExecutor: its threads are joined at interpreter exit, so one hung prompt
    would hang the kernel's shutdown. The video and the audio worker each own one.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._pending: Future[Any] | None = None
        self._closed = False
        self.thread = threading.Thread(
            target=self._loop, name=f"comfywhip-prompt-{name}", daemon=True
        )
        self.thread.start()

    def call(self, job: Callable[[], Any], timeout: float) -> Any:
        """``job()`` on the runner thread; raises its exception,
        ``concurrent.futures.TimeoutError``, or ``Stopped`` after ``close``."""
        future: Future[Any] = Future()
        self._pending = future
        if self._closed:  # checked after publishing _pending: close() sees one or the other
            raise Stopped()
        self._jobs.put((job, future))
        return future.result(timeout)

    def run(self, prompt: Any, image: torch.Tensor, timeout: float) -> Any:
        """Result of ``run_timed`` (or ``(run(), {})``) on the runner thread."""
        return self.call(functools.partial(_run_prompt, prompt, image), timeout)

    def close(self) -> None:
        """Stop taking jobs; the thread exits once the job in progress (if any) returns."""
        self._closed = True
        self._jobs.put(None)
        pending = self._pending
        if pending is not None:
            with contextlib.suppress(InvalidStateError):
                pending.set_exception(Stopped())  # unblocks a worker waiting on it

    def _loop(self) -> None:
        configure_torch_threads()
        while (item := self._jobs.get()) is not None:
            job, future = item
            try:
                result = job()
            except BaseException as exc:
                with contextlib.suppress(InvalidStateError):  # abandoned after timeout/stop
                    future.set_exception(exc)
            else:
                with contextlib.suppress(InvalidStateError):
                    future.set_result(result)
            del job, item


class FrameProcessor:
    """Runs one session's frames through its current prompt on a worker thread."""

    def __init__(
        self,
        name: str,
        prompt: RunnablePrompt | None = None,
        prompt_version: int = 0,
        *,
        frame_timeout: float = 2.0,
        on_processed: Callable[[ProcessedFrame], None] | None = None,
    ) -> None:
        self.name = name
        self.frame_timeout = frame_timeout
        self._on_processed = on_processed
        self._tag = f"WHIP: {name}"
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the worker waits for a frame
        self._done = threading.Condition(self._lock)  # readers wait for a processed frame
        self._mailbox: tuple[av.VideoFrame, float] | None = None
        self._quit = False
        self._thread: threading.Thread | None = None
        self._runner: PromptRunner | None = None
        self._prompt = prompt
        self._version = prompt_version
        self._generation = 0  # counts set_prompt calls (versions may repeat)
        self._benched_generation = -1  # == _generation while the current prompt is benched
        self._last_good: Any = None  # touched by the worker thread only
        self._frames_in = self._processed = self._dropped = self._callback_errors = 0
        self._last_error: str | None = None
        self._size = (0, 0)
        self._latest: ProcessedFrame | None = None
        self._meter = _Meter()

    def start(self) -> None:
        """Start the daemon worker thread; a second call is a no-op."""
        with self._lock:
            if self._quit:
                raise RuntimeError(f"{self._tag} processor was stopped")
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name=f"comfywhip-proc-{self.name}", daemon=True
            )
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Idempotent: set the quit flag, wake the worker and join it at once; then give a
        prompt still running on the helper the rest of ``timeout`` to return."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._quit = True
            runner, self._runner = self._runner, None
            self._work.notify_all()
            self._done.notify_all()
        threads = [self._thread, runner.thread if runner is not None else None]
        if runner is not None:
            runner.close()  # fails the worker's pending wait, so the worker exits at once
        for thread in threads:
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    logger.warning("%s %s still running after stop", self._tag, thread.name)

    def release(self) -> None:
        """After ``stop``: drop the frames, the prompt and the callback this processor holds,
        so a closed session's tensors and frames are freed at once (GPU memory included)."""
        with self._lock:
            self._latest = None
            self._mailbox = None
            self._prompt = None
            self._on_processed = None
            self._thread = None
        self._last_good = None

    def submit(self, frame: av.VideoFrame) -> None:
        """Put ``frame`` in the mailbox (event loop; O(1), never blocks, no torch)."""
        now = time.monotonic()
        with self._lock:
            self._frames_in += 1
            if self._mailbox is not None:
                self._dropped += 1  # the worker never saw the one being overwritten
            self._mailbox = (frame, now)
            self._size = (frame.width, frame.height)
            self._meter.on_input(now)
            self._work.notify()

    def set_prompt(self, prompt: RunnablePrompt | None, version: int) -> None:
        """Swap the prompt at the next frame boundary; clears ``last_error`` and re-arms a
        prompt benched after an error (passing the same object again retries it)."""
        with self._lock:
            self._prompt = prompt
            self._version = version
            self._generation += 1
            self._last_error = None

    def latest(self) -> ProcessedFrame | None:
        with self._lock:
            return self._latest

    def wait_processed(self, after_index: int, timeout: float) -> ProcessedFrame | None:
        """Block until a frame with ``index > after_index`` exists; None on timeout/stop."""

        def ready() -> bool:
            return self._quit or (self._latest is not None and self._latest.index > after_index)

        with self._lock:
            self._done.wait_for(ready, timeout)
            latest = self._latest
        return latest if latest is not None and latest.index > after_index else None

    def stats(self) -> ProcessingStats:
        now = time.monotonic()
        with self._lock:
            meter = self._meter
            return ProcessingStats(
                frames_in=self._frames_in,
                frames_processed=self._processed,
                frames_dropped=self._dropped,
                fps_in=meter.rate(meter.in_times, now),
                fps_out=meter.rate(meter.out_times, now),
                latency_ms=meter.percentile_ms(0.5),
                latency_p95_ms=meter.percentile_ms(0.95),
                prompt_version=self._version,
                last_error=self._last_error,
                width=self._size[0],
                height=self._size[1],
                node_ms=meter.node_means_ms(),
                minute_fps=meter.minute_fps(now),
            )

    # -- worker thread -----------------------------------------------------------------------
    def _run(self) -> None:
        configure_torch_threads()
        while True:
            with self._lock:
                self._work.wait_for(lambda: self._mailbox is not None or self._quit)
                if self._quit or self._mailbox is None:
                    break
                (frame, received_at), self._mailbox = self._mailbox, None
                current, generation = self._prompt, self._generation
                benched = self._benched_generation == generation
            chosen = current
            if benched:  # the current prompt failed: last good one, else passthrough
                chosen = self._last_good if self._last_good is not current else None
            try:
                self._process(frame, received_at, chosen)
            except Stopped:
                break
            except concurrent.futures.TimeoutError:
                with self._lock:  # leave the hung helper behind; a fresh one serves next
                    runner, self._runner = self._runner, None
                if runner is not None:
                    runner.close()
                message = (
                    f"node timed out after {self.frame_timeout:g} s (Python cannot kill its "
                    "thread; frames pass through until a new prompt is set)"
                )
                self._fail(chosen, current, generation, message)
            except Exception as exc:  # any failure costs one frame, never the stream
                self._fail(chosen, current, generation, describe_error(exc))

    def _process(self, frame: av.VideoFrame, received_at: float, prompt: Any) -> None:
        image = frames.frame_to_image(frame, getattr(prompt, "device", None))
        timings: dict[str, float] = {}
        if prompt is None:
            out = image
            reusable = frame.format.name in ("yuv420p", "rgb24")
            out_frame = frame if reusable else frames.image_to_frame(image, like=frame)
        else:
            with self._lock:
                if self._quit:
                    raise Stopped()
                runner = self._runner = self._runner or PromptRunner(self.name)
            result, timings = runner.run(prompt, image, self.frame_timeout)
            out = _check_output(result)
            out_frame = frames.image_to_frame(out, like=frame)
            self._last_good = prompt
        now = time.monotonic()
        with self._lock:
            self._processed += 1
            processed = ProcessedFrame(out_frame, out, frame, received_at, now, self._processed)
            self._latest = processed
            self._meter.on_output(now, now - received_at, timings, prompt)
            self._done.notify_all()
        on_processed = self._on_processed
        if on_processed is not None:
            try:
                on_processed(processed)
            except Exception:
                self._callback_errors += 1
                if self._callback_errors in (1, 10, 100) or self._callback_errors % 1000 == 0:
                    logger.exception(
                        "%s on_processed failed (%d times)", self._tag, self._callback_errors
                    )

    def _fail(self, prompt: Any, current: Any, generation: int, message: str) -> None:
        """Count the frame as dropped, record the error and bench the failing prompt."""
        if prompt is not None and prompt is self._last_good:
            self._last_good = None
        with self._lock:
            self._dropped += 1
            self._last_error = message
            version = self._version
            # A set_prompt that raced with this frame wins: bench only the prompt still set.
            if prompt is not None and prompt is current and generation == self._generation:
                self._benched_generation = generation
        fallback = "the last good prompt" if self._last_good is not None else "passthrough"
        logger.warning("%s prompt v%d failed: %s; using %s", self._tag, version, message, fallback)
