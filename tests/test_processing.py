"""FrameProcessor with real PyAV frames, real torch prompts and real threads (no mocks)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from comfywhip_nb.pipeline.processor import (
    FrameProcessor,
    ProcessedFrame,
    PromptOutputError,
    RunnablePrompt,
    describe_error,
)

# -- small real prompts --------------------------------------------------------------------


class Invert:
    """ImageInvert as a prompt: 1 - x."""

    def run_timed(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        start = time.perf_counter()
        out = 1.0 - image
        return out, {"2:ImageInvert": time.perf_counter() - start}


class Fill:
    """Replaces every pixel with one colour (easy to tell apart from Invert)."""

    def __init__(self, rgb: tuple[int, int, int]) -> None:
        self.colour = torch.tensor(rgb, dtype=torch.float32) / 255

    def run_timed(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return self.colour.expand_as(image).clone(), {"5:Fill": 0.0}


class Slow:
    """Sleeps ``delay`` and then inverts; ``started`` is set when a frame begins."""

    def __init__(self, delay: float = 0.1) -> None:
        self.delay = delay
        self.started = threading.Event()

    def run_timed(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        self.started.set()
        time.sleep(self.delay)
        return 1.0 - image, {"3:Slow": self.delay}


class NodeFailure(RuntimeError):
    """Shaped like prompts.PromptError: knows the node that raised."""

    def __init__(self, node_id: str, class_type: str, message: str) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.class_type = class_type


class Boom:
    def run_timed(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        try:
            raise RuntimeError("boom")
        except RuntimeError as exc:
            raise NodeFailure("2", "Boom", "boom failed") from exc


class WrongShape:
    def run_timed(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return image[0], {}  # [H,W,3]: the batch dimension is missing


class Hang:
    """Blocks until released, like a node stuck on a lock or a device."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def run_timed(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        self.entered.set()
        self.release.wait(30)
        return image, {}


class RunOnly:
    """Only ``run`` (no timings): still accepted."""

    device = torch.device("cpu")

    def run(self, image: torch.Tensor) -> torch.Tensor:
        return image.mean(dim=-1, keepdim=True)  # grey [B,H,W,1]


# -- helpers -------------------------------------------------------------------------------


def solid(
    rgb: tuple[int, int, int], width: int = 64, height: int = 48, fmt: str = "rgb24", pts: int = 0
) -> av.VideoFrame:
    array = np.empty((height, width, 3), np.uint8)
    array[:] = rgb
    frame = av.VideoFrame.from_ndarray(array, format="rgb24")
    if fmt != "rgb24":
        frame = frame.reformat(format=fmt)
    frame.pts = pts
    frame.time_base = Fraction(1, 90000)
    return frame


def centre(processed: ProcessedFrame) -> list[int]:
    array = processed.frame.to_ndarray(format="rgb24")
    return array[array.shape[0] // 2, array.shape[1] // 2].tolist()


def wait_until(predicate: Callable[[], object], timeout: float = 5.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"not true within {timeout} s")


def process_one(proc: FrameProcessor, frame: av.VideoFrame, timeout: float = 5.0) -> ProcessedFrame:
    """Submit one frame and return the frame processed after it."""
    latest = proc.latest()
    proc.submit(frame)
    got = proc.wait_processed(latest.index if latest else 0, timeout)
    assert got is not None, "no processed frame"
    return got


def our_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("comfywhip-")]


@pytest.fixture
def make() -> Iterator[Callable[..., FrameProcessor]]:
    made: list[FrameProcessor] = []

    def factory(*args: object, **kwargs: object) -> FrameProcessor:
        proc = FrameProcessor(*args, **kwargs)  # type: ignore[arg-type]
        proc.start()
        made.append(proc)
        return proc

    yield factory
    for proc in made:
        proc.stop()


# -- tests -------------------------------------------------------------------------------


def test_prompts_here_fit_the_protocol() -> None:
    assert isinstance(Invert(), RunnablePrompt)
    assert not isinstance(object(), RunnablePrompt)


def test_passthrough_without_prompt(make: Callable[..., FrameProcessor]) -> None:
    proc = make("pass")
    source = solid((10, 20, 30), fmt="yuv420p", pts=3000)
    got = process_one(proc, source)
    assert got.index == 1
    assert got.input_frame is source
    assert (got.frame.pts, got.frame.time_base) == (3000, Fraction(1, 90000))
    assert got.image.shape == (1, 48, 64, 3)
    assert (got.image[0, 24, 32] * 255).tolist() == pytest.approx([10, 20, 30], abs=4)
    assert proc.stats().last_error is None


@pytest.mark.parametrize("fmt", ["rgb24", "yuv420p"])
def test_invert_solid_colours(make: Callable[..., FrameProcessor], fmt: str) -> None:
    proc = make("inv", Invert(), 1)
    tolerance = 0 if fmt == "rgb24" else 4
    for i, rgb in enumerate([(0, 0, 0), (255, 255, 255), (10, 200, 30)]):
        got = process_one(proc, solid(rgb, fmt=fmt, pts=i * 3000))
        want = [255 - c for c in rgb]
        assert centre(got) == pytest.approx(want, abs=tolerance)
        assert (got.image[0, 0, 0] * 255).tolist() == pytest.approx(want, abs=tolerance + 0.01)
        assert got.image.dtype == torch.float32 and got.image.device.type == "cpu"
        assert (got.frame.pts, got.frame.time_base) == (i * 3000, Fraction(1, 90000))
        assert got.frame.format.name in ("rgb24", "yuv420p")
        assert got.received_at <= got.processed_at
    stats = proc.stats()
    assert (stats.frames_in, stats.frames_processed, stats.frames_dropped) == (3, 3, 0)
    assert (stats.width, stats.height, stats.prompt_version) == (64, 48, 1)
    assert set(stats.node_ms) == {"2:ImageInvert"}
    json.dumps(stats.to_dict())  # plain data all the way down


def test_slow_prompt_drops_frames_and_latency_stays_bounded(
    make: Callable[..., FrameProcessor],
) -> None:
    proc = make("slow", Slow(0.1), 1)
    frame = solid((50, 50, 50), fmt="yuv420p")
    submit_cost = 0.0
    start = time.monotonic()
    for i in range(60):  # 30 fps for 2 s
        target = start + i / 30
        time.sleep(max(0.0, target - time.monotonic()))
        t0 = time.perf_counter()
        proc.submit(frame)
        submit_cost = max(submit_cost, time.perf_counter() - t0)
    mid = proc.stats()
    wait_until(lambda: proc.stats().frames_processed + proc.stats().frames_dropped == 60)
    stats = proc.stats()
    assert stats.frames_in == 60
    assert 8 <= stats.frames_processed <= 22  # ~10 per second at 100 ms each
    assert stats.frames_dropped >= 35
    assert stats.latency_p95_ms < 400, stats
    assert stats.latency_ms >= 100
    assert 20 <= mid.fps_in <= 40, mid
    assert 5 <= mid.fps_out <= 12, mid
    assert stats.node_ms["3:Slow"] == pytest.approx(100.0)
    assert 1 <= len(stats.minute_fps) <= 4  # whole seconds only
    assert 0 < sum(stats.minute_fps) <= stats.frames_processed
    assert submit_cost < 0.05, f"submit() took {submit_cost * 1e3:.1f} ms"


def test_hot_swap_takes_effect_at_next_frame_without_stall(
    make: Callable[..., FrameProcessor],
) -> None:
    slow = Slow(0.2)
    proc = make("swap", slow, 1)
    proc.submit(solid((0, 0, 0)))
    assert slow.started.wait(5)
    t0 = time.monotonic()
    proc.set_prompt(Fill((1, 2, 3)), 2)  # while a frame is in progress
    assert time.monotonic() - t0 < 0.05, "set_prompt must not wait for the frame"
    in_progress = proc.wait_processed(0, 5)
    assert in_progress is not None and centre(in_progress) == [255, 255, 255]  # old prompt
    swapped = process_one(proc, solid((0, 0, 0)))
    assert centre(swapped) == [1, 2, 3]
    assert time.monotonic() - t0 < 1.0
    stats = proc.stats()
    assert stats.prompt_version == 2 and stats.frames_dropped == 0
    assert set(stats.node_ms) == {"5:Fill"}  # old prompt's nodes are not mixed in
    proc.set_prompt(None, 3)
    assert centre(process_one(proc, solid((9, 9, 9)))) == [9, 9, 9]


def test_raising_prompt_reports_node_and_falls_back_to_last_good(
    make: Callable[..., FrameProcessor],
) -> None:
    proc = make("boom", Invert(), 1)
    assert centre(process_one(proc, solid((0, 100, 200)))) == [255, 155, 55]
    proc.set_prompt(Boom(), 2)
    proc.submit(solid((0, 100, 200)))
    wait_until(lambda: proc.stats().last_error)
    stats = proc.stats()
    assert stats.last_error == "node 2 (Boom): RuntimeError: boom"
    assert stats.frames_dropped == 1
    for _ in range(3):  # the stream keeps flowing with the last good prompt
        assert centre(process_one(proc, solid((0, 100, 200)))) == [255, 155, 55]
    assert proc.stats().frames_dropped == 1  # the broken prompt is not retried per frame
    proc.set_prompt(Fill((7, 7, 7)), 3)
    assert proc.stats().last_error is None
    assert centre(process_one(proc, solid((0, 0, 0)))) == [7, 7, 7]


def test_raising_prompt_without_last_good_passes_through(
    make: Callable[..., FrameProcessor],
) -> None:
    proc = make("boom2", Boom(), 1)
    proc.submit(solid((1, 2, 3)))
    wait_until(lambda: proc.stats().last_error)
    got = process_one(proc, solid((40, 50, 60)))
    assert centre(got) == [40, 50, 60]
    assert "node 2 (Boom)" in (proc.stats().last_error or "")


def test_wrong_output_shape_is_reported(make: Callable[..., FrameProcessor]) -> None:
    proc = make("shape", WrongShape(), 1)
    proc.submit(solid((5, 6, 7)))
    error = wait_until(lambda: proc.stats().last_error)
    assert "PromptOutputError" in str(error) and "(48, 64, 3)" in str(error)
    assert centre(process_one(proc, solid((5, 6, 7)))) == [5, 6, 7]


def test_run_only_prompt_with_device_and_grey_output(make: Callable[..., FrameProcessor]) -> None:
    proc = make("grey", RunOnly(), 1)
    got = process_one(proc, solid((30, 60, 90)))
    assert got.image.shape == (1, 48, 64, 3)
    assert centre(got) == [60, 60, 60]
    assert proc.stats().node_ms == {}


def test_hanging_prompt_times_out_and_frames_keep_flowing(
    make: Callable[..., FrameProcessor],
) -> None:
    hang = Hang()
    proc = make("hang", hang, 1, frame_timeout=0.3)
    try:
        proc.submit(solid((1, 1, 1)))
        error = wait_until(lambda: proc.stats().last_error, timeout=3)
        assert "timed out after 0.3 s" in str(error)
        for value in (10, 20, 30):  # passthrough now, no further timeouts
            t0 = time.monotonic()
            assert centre(process_one(proc, solid((value,) * 3))) == [value] * 3
            assert time.monotonic() - t0 < 0.25
        assert proc.stats().frames_dropped == 1
        proc.set_prompt(Invert(), 2)
        assert centre(process_one(proc, solid((0, 0, 0)))) == [255, 255, 255]
    finally:
        hang.release.set()
    proc.stop()
    wait_until(lambda: not our_threads(), timeout=3)


def test_resolution_changes_mid_stream(make: Callable[..., FrameProcessor]) -> None:
    proc = make("res", Invert(), 1)
    for width, height in [(64, 48), (32, 18), (1280, 720), (33, 17), (64, 48)]:
        got = process_one(proc, solid((100, 0, 255), width, height, fmt="yuv420p"))
        assert (got.frame.width, got.frame.height) == (width, height)
        assert got.image.shape == (1, height, width, 3)
        assert (proc.stats().width, proc.stats().height) == (width, height)


def test_callback_gets_frames_and_its_errors_do_not_stop_the_stream(
    make: Callable[..., FrameProcessor],
) -> None:
    seen: list[int] = []

    def callback(processed: ProcessedFrame) -> None:
        seen.append(processed.index)
        raise ValueError("viewer went away")

    proc = make("cb", Invert(), 1, on_processed=callback)
    for _ in range(3):
        process_one(proc, solid((0, 0, 0)))
    wait_until(lambda: len(seen) == 3)
    assert seen == [1, 2, 3]
    assert proc.stats().last_error is None


def test_stop_is_idempotent_and_joins_threads(make: Callable[..., FrameProcessor]) -> None:
    proc = make("stopper", Invert(), 1)
    process_one(proc, solid((0, 0, 0)))
    assert "comfywhip-proc-stopper" in our_threads()
    proc.stop()
    proc.stop()
    assert not [n for n in our_threads() if n.endswith("-stopper")]
    t0 = time.monotonic()
    assert proc.wait_processed(10, timeout=2) is None  # returns at once after stop
    assert time.monotonic() - t0 < 0.5
    with pytest.raises(RuntimeError, match="stopped"):
        proc.start()
    never_started = FrameProcessor("idle")
    never_started.stop()
    assert never_started.stats().frames_in == 0 and never_started.latest() is None


def test_stop_lets_a_running_prompt_finish_within_timeout() -> None:
    slow = Slow(0.4)
    proc = FrameProcessor("busy", slow, 1)
    proc.start()
    proc.submit(solid((0, 0, 0)))
    assert slow.started.wait(5)
    t0 = time.monotonic()
    proc.stop(timeout=2.0)
    assert time.monotonic() - t0 < 1.0
    assert not [n for n in our_threads() if n.endswith("-busy")]
    assert proc.latest() is None  # the frame cut short by stop is not published


def test_stop_does_not_wait_past_timeout_for_a_hung_prompt() -> None:
    hang = Hang()
    proc = FrameProcessor("stuck", hang, 1, frame_timeout=10.0)
    proc.start()
    proc.submit(solid((0, 0, 0)))
    assert hang.entered.wait(5)
    t0 = time.monotonic()
    proc.stop(timeout=0.3)
    assert time.monotonic() - t0 < 0.6
    assert "comfywhip-proc-stuck" not in our_threads()  # the worker itself never hangs
    hang.release.set()
    wait_until(lambda: not [n for n in our_threads() if n.endswith("-stuck")])


def test_stats_before_any_frame() -> None:
    stats = FrameProcessor("fresh", prompt_version=4).stats()
    assert (stats.frames_in, stats.fps_in, stats.latency_ms, stats.width) == (0, 0.0, 0.0, 0)
    assert stats.prompt_version == 4 and stats.minute_fps == [] and stats.last_error is None


def test_describe_error() -> None:
    assert describe_error(ValueError("plain")) == "ValueError: plain"
    assert describe_error(PromptOutputError("bad")) == "PromptOutputError: bad"
    bare = NodeFailure("7", "ImageBlur", "radius too big")
    assert describe_error(bare) == "node 7 (ImageBlur): NodeFailure: radius too big"
    bare.graph = 1  # type: ignore[attr-defined]
    assert describe_error(bare) == "prompt[1], node 7 (ImageBlur): NodeFailure: radius too big"


# -- with the real prompt engine ---------------------------------------------------------

INVERT_GRAPH = {
    "1": {"class_type": "LoadTensor", "inputs": {}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
}


class ProcessingTestBoom:
    """A ComfyUI-contract custom node that always raises."""

    CATEGORY = "test"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "explode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, object]:
        return {"required": {"image": ("IMAGE",)}}

    def explode(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        raise RuntimeError("boom")


def test_load_prompt_invert_graph(make: Callable[..., FrameProcessor]) -> None:
    prompts = pytest.importorskip("comfywhip_nb.prompts")
    prompt = prompts.load_prompt(INVERT_GRAPH, device="cpu")
    proc = make("graph", prompt, 1)
    got = process_one(proc, solid((0, 100, 250), fmt="yuv420p", pts=90))
    assert centre(got) == pytest.approx([255, 155, 5], abs=4)
    assert got.frame.pts == 90
    assert set(proc.stats().node_ms) >= {"2:ImageInvert"}


def test_real_node_error_names_node_and_falls_back(make: Callable[..., FrameProcessor]) -> None:
    prompts = pytest.importorskip("comfywhip_nb.prompts")
    registry = pytest.importorskip("comfywhip_nb.prompts.registry")
    prompts.register_nodes({"ProcessingTestBoom": ProcessingTestBoom})
    try:
        broken = dict(
            INVERT_GRAPH,
            **{"2": {"class_type": "ProcessingTestBoom", "inputs": {"image": ["1", 0]}}},
        )
        boom = prompts.load_prompt(broken, device="cpu")
    finally:
        registry.unregister_nodes("ProcessingTestBoom")
    proc = make("graph-boom", prompts.load_prompt(INVERT_GRAPH, device="cpu"), 1)
    assert centre(process_one(proc, solid((0, 0, 0)))) == [255, 255, 255]
    proc.set_prompt(boom, 2)
    proc.submit(solid((0, 0, 0)))
    error = wait_until(lambda: proc.stats().last_error)
    assert error == "node 2 (ProcessingTestBoom): RuntimeError: boom"
    assert centre(process_one(proc, solid((0, 0, 0)))) == [255, 255, 255]  # last good
