"""Per-stage timings of the live frame path at 480p and 720p.

    .venv/bin/python benchmarks/stages.py [--quick] [--threads N] [--json PATH]

Each stage is timed on its own (median of N runs after a warm-up) on a synthetic test
pattern, then once more end to end and through a real FrameProcessor (submit ->
wait_processed, i.e. including both thread hand-offs). Absolute numbers drift between
machines, so every row is also given as a ratio to a baseline measured in the same run:
the yuv420p -> rgb24 ndarray conversion (cached swscale context), the floor of any path.
Frames are fresh objects for every run, as in a stream (PyAV caches per frame object).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av
import numpy as np
import torch

from comfywhip_nb.pipeline import frames
from comfywhip_nb.pipeline.processor import TORCH_THREADS, FrameProcessor

BASELINE = "baseline: yuv -> rgb24 ndarray"
SIZES = {"480p": (854, 480), "720p": (1280, 720)}
INVERT = {
    "1": {"class_type": "LoadTensor", "inputs": {}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
}
BLUR = {  # 5x5 Gaussian, ComfyUI's ImageBlur
    "1": {"class_type": "LoadTensor", "inputs": {}},
    "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 2, "sigma": 1.0}},
    "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
}


def test_pattern(width: int, height: int) -> av.VideoFrame:
    """Camera-like content (gradients, edges, mild noise) as the yuv420p a decoder returns."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin(x / 23 + y / 41)], axis=-1)
    rgb[(x // 80 + y // 80) % 2 == 0] *= 0.6
    rgb += np.random.default_rng(0).normal(0, 0.02, rgb.shape)
    array = (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    frame = av.VideoFrame.from_ndarray(array, format="rgb24").reformat(format="yuv420p")
    frame.pts, frame.time_base = 0, Fraction(1, 90000)
    return frame


def median_ms(
    fn: Callable[[Any], Any], runs: int, setup: Callable[[], Any] = lambda: None
) -> float:
    """Median wall time of ``fn(setup())``; ``setup`` (e.g. a fresh frame) is not timed."""
    for _ in range(max(5, runs // 4)):  # lets the allocator settle on frame-sized blocks
        fn(setup())
    samples = []
    for _ in range(runs):
        arg = setup()
        start = time.perf_counter()
        fn(arg)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def fresh_copies(frame: av.VideoFrame) -> Callable[[], av.VideoFrame]:
    """New frame objects with the same pixels: a stream never shows PyAV the same frame
    twice, and PyAV caches a swscale context per frame object."""

    pixels, fmt = frame.to_ndarray(), frame.format.name  # yuv420p: planes stacked (H*3/2, W)

    def make() -> av.VideoFrame:
        copy = av.VideoFrame.from_ndarray(pixels, format=fmt)
        copy.pts, copy.time_base = frame.pts, frame.time_base
        return copy

    return make


def make_prompts() -> tuple[str, Any, Any]:
    """The real prompt engine when it imports, else the same maths inline (said in the output)."""
    try:
        from comfywhip_nb.prompts import load_prompt

        return (
            "comfywhip_nb.prompts",
            load_prompt(INVERT, device="cpu"),
            load_prompt(BLUR, device="cpu"),
        )
    except Exception as exc:  # the engine is optional for this benchmark
        print(f"prompt engine unavailable ({exc}); timing inline torch ops", file=sys.stderr)

    class Inline:
        def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
            self.run = fn

    kernel = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :] / 256).expand(3, 1, 5, 5).contiguous()

    def blur(image: torch.Tensor) -> torch.Tensor:
        chw = image.permute(0, 3, 1, 2)  # channels-last view; no .contiguous() (PERF_NOTES)
        padded = torch.nn.functional.pad(chw, (2, 2, 2, 2), mode="reflect")
        return torch.nn.functional.conv2d(padded, kernel, groups=3).permute(0, 2, 3, 1)

    return "inline torch", Inline(lambda image: 1.0 - image), Inline(blur)


def processor_round_trip_ms(prompt: Any, new_frame: Callable[[], Any], runs: int) -> float:
    """Submit one frame, wait for it: conversion + prompt + two thread hand-offs."""
    proc = FrameProcessor("bench", prompt, 1, frame_timeout=30.0)
    proc.start()
    try:
        index = 0

        def once(frame: av.VideoFrame) -> None:
            nonlocal index
            proc.submit(frame)
            got = proc.wait_processed(index, 30.0)
            assert got is not None
            index = got.index

        return median_ms(once, runs, new_frame)
    finally:
        proc.stop()


def measure(size: tuple[int, int], runs: int, invert: Any, blur: Any) -> dict[str, float]:
    yuv = test_pattern(*size)
    new_yuv = fresh_copies(yuv)
    image = frames.frame_to_image(yuv)
    inverted = invert.run(image)
    new_rgb = fresh_copies(frames.image_to_frame(inverted, like=yuv))

    def full_path(frame: av.VideoFrame) -> None:
        frames.image_to_frame(invert.run(frames.frame_to_image(frame)), like=frame)

    return {
        BASELINE: median_ms(
            lambda f: frames.reformat(f, format="rgb24").to_ndarray(), runs, new_yuv
        ),
        "PyAV to_ndarray(rgb24), new context": median_ms(
            lambda f: f.to_ndarray(format="rgb24"), runs, new_yuv
        ),
        "yuv -> tensor": median_ms(frames.frame_to_image, runs, new_yuv),
        "prompt: invert": median_ms(lambda _: invert.run(image), runs),
        "prompt: blur 5x5": median_ms(lambda _: blur.run(image), runs),
        "tensor -> frame (rgb24)": median_ms(
            lambda _: frames.image_to_frame(inverted, like=yuv), runs
        ),
        "rgb24 frame -> yuv420p (for encoder)": median_ms(frames.to_yuv420p, runs, new_rgb),
        "preview JPEG 640w (frame)": median_ms(frames.encode_preview_jpeg, runs, new_rgb),
        "preview JPEG 320w (frame)": median_ms(
            lambda f: frames.encode_preview_jpeg(f, max_width=320), runs, new_rgb
        ),
        "preview JPEG 640w (tensor)": median_ms(
            lambda _: frames.encode_preview_jpeg(inverted), runs
        ),
        "full path (invert)": median_ms(full_path, runs, new_yuv),
        "FrameProcessor round trip (invert)": processor_round_trip_ms(invert, new_yuv, runs),
    }


def print_table(results: dict[str, dict[str, float]]) -> None:
    names = list(next(iter(results.values())))
    header = f"{'stage':<36}" + "".join(f"{label + ' ms':>11}{'x base':>8}" for label in results)
    print(header)
    print("-" * len(header))
    for name in names:
        row = f"{name:<36}"
        for timings in results.values():
            base = timings[BASELINE]
            row += f"{timings[name]:>11.2f}{timings[name] / base:>8.1f}"
        print(row)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 runs per stage instead of 200")
    parser.add_argument("--threads", type=int, default=TORCH_THREADS, help="torch threads")
    parser.add_argument("--json", metavar="PATH", help="also write the timings as JSON")
    args = parser.parse_args(argv)
    runs = 20 if args.quick else 200
    torch.set_num_threads(args.threads)
    engine, invert, blur = make_prompts()
    jpeg = "simplejpeg" if frames._simplejpeg is not None else "Pillow"
    print(
        f"torch {torch.__version__} threads={torch.get_num_threads()} cpus={os.cpu_count()} "
        f"av {av.__version__} jpeg={jpeg} prompts={engine} runs={runs} (median ms) "
        f"load={os.getloadavg()[0]:.1f}"
    )
    results = {label: measure(size, runs, invert, blur) for label, size in SIZES.items()}
    print_table(results)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"runs": runs, "threads": args.threads, "results": results}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
