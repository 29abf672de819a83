"""frames.py: real PyAV frames and real torch tensors, both directions, plus preview JPEGs."""

from __future__ import annotations

import io
import threading
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

from comfywhip_nb.pipeline import frames


def make_frame(rgb: np.ndarray, fmt: str = "rgb24", pts: int | None = 1234) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    if fmt != "rgb24":
        frame = frame.reformat(format=fmt)
    frame.pts = pts
    frame.time_base = Fraction(1, 90000)
    return frame


def gradient(height: int, width: int) -> np.ndarray:
    """Smooth content: what yuv420p chroma subsampling reproduces well."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack(
        [x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 256], axis=-1
    ).astype(np.uint8)


@pytest.mark.parametrize(("width", "height"), [(64, 48), (33, 17), (854, 480)])
def test_rgb24_round_trip_is_exact_and_keeps_timing(width: int, height: int) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    source = make_frame(rgb)
    image = frames.frame_to_image(source)
    assert image.shape == (1, height, width, 3)
    assert image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    back = frames.image_to_frame(image, like=source)
    assert back.format.name == "rgb24"
    assert (back.pts, back.time_base) == (1234, Fraction(1, 90000))
    diff = np.abs(back.to_ndarray().astype(int) - rgb.astype(int))
    assert diff.max() <= 2  # within 2/255 (rounding makes it exact in practice)


def test_yuv420p_source_converts_like_swscale() -> None:
    rgb = gradient(48, 64)
    source = make_frame(rgb, fmt="yuv420p", pts=7)
    expected = source.to_ndarray(format="rgb24")
    image = frames.frame_to_image(source)
    assert torch.allclose(image[0], torch.from_numpy(expected).float() / 255, atol=1e-6)
    back = frames.image_to_frame(image, like=source)
    assert back.pts == 7
    assert np.array_equal(back.to_ndarray(), expected)
    # Against the original RGB only chroma subsampling + BT.601 rounding separate them.
    assert np.abs(expected.astype(int) - rgb.astype(int)).mean() < 4


def test_solid_yuv_colour_survives() -> None:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:] = (200, 40, 90)
    image = frames.frame_to_image(make_frame(rgb, fmt="yuv420p"))
    got = (image[0, 16, 16] * 255).tolist()
    assert got == pytest.approx([200, 40, 90], abs=4)


def test_image_without_like_has_no_pts() -> None:
    frame = frames.image_to_frame(torch.zeros(1, 4, 6, 3))
    assert (frame.width, frame.height, frame.pts) == (6, 4, None)


def test_image_to_ndarray_shapes_clamps_and_rounds() -> None:
    grey = torch.full((1, 4, 5, 1), 0.5)
    assert frames.image_to_ndarray(grey).shape == (4, 5, 3)
    assert frames.image_to_ndarray(grey)[0, 0].tolist() == [128, 128, 128]
    hwc = torch.tensor([[[-0.5, 1.5, 100 / 255]]])
    out = frames.image_to_ndarray(hwc)
    assert out.tolist() == [[[0, 255, 100]]]
    assert out.flags["C_CONTIGUOUS"]
    batch = torch.stack([torch.zeros(2, 2, 3), torch.ones(2, 2, 3)])
    assert frames.image_to_ndarray(batch).max() == 0  # first image of the batch
    permuted = torch.rand(1, 3, 8, 6).permute(0, 2, 3, 1)  # non-contiguous view
    assert frames.image_to_ndarray(permuted).flags["C_CONTIGUOUS"]
    assert frames.image_to_ndarray(torch.full((2, 2, 3), 0.5, dtype=torch.bfloat16)).max() == 128
    assert frames.image_to_ndarray(torch.full((2, 2, 3), float("nan"))).max() == 0  # no warning
    rgba = torch.cat([torch.ones(2, 2, 3), torch.zeros(2, 2, 1)], dim=-1)
    assert frames.image_to_ndarray(rgba).min() == 255  # alpha dropped
    with pytest.raises(ValueError, match="IMAGE"):
        frames.image_to_ndarray(torch.zeros(1, 4, 5, 2))
    with pytest.raises(ValueError, match="IMAGE"):
        frames.image_to_ndarray(torch.zeros(4, 5))


@pytest.mark.parametrize(
    ("size", "max_width", "expected"),
    [
        ((1280, 720), 640, (640, 360)),
        ((854, 480), 320, (320, 180)),
        ((320, 240), 640, (320, 240)),  # never upscaled
        ((100, 3), 10, (10, 1)),  # never zero high
        ((640, 480), 0, (640, 480)),  # 0 disables scaling
    ],
)
def test_preview_size(size: tuple[int, int], max_width: int, expected: tuple[int, int]) -> None:
    assert frames.preview_size(*size, max_width) == expected


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    return image.convert("RGB")


@pytest.mark.parametrize("kind", ["tensor", "yuv_frame", "rgb_frame", "ndarray"])
def test_preview_jpeg_downscales_each_input_kind(kind: str) -> None:
    rgb = np.zeros((720, 1280, 3), np.uint8)
    rgb[:] = (30, 160, 220)
    source: frames.ImageLike
    if kind == "tensor":
        source = torch.from_numpy(rgb).float().div(255).unsqueeze(0)
    elif kind == "ndarray":
        source = rgb
    else:
        source = make_frame(rgb, fmt="yuv420p" if kind == "yuv_frame" else "rgb24")
    decoded = _decode(frames.encode_preview_jpeg(source, max_width=640, quality=80))
    assert decoded.size == (640, 360)
    assert decoded.getpixel((320, 180)) == pytest.approx((30, 160, 220), abs=6)


def test_preview_jpeg_pillow_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frames, "_simplejpeg", None)  # as if simplejpeg were not installed
    data = frames.encode_preview_jpeg(torch.full((1, 90, 160, 3), 0.5), max_width=80)
    assert _decode(data).size == (80, 45)


def test_preview_jpeg_quality_changes_size() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    low = frames.encode_preview_jpeg(rgb, quality=20)
    high = frames.encode_preview_jpeg(rgb, quality=95)
    assert len(low) < len(high)


def test_preview_jpeg_rejects_bad_arrays() -> None:
    with pytest.raises(ValueError, match="uint8"):
        frames.encode_preview_jpeg(np.zeros((4, 4), np.float32))


def test_to_pil_from_every_kind() -> None:
    rgb = gradient(12, 20)
    for source in (
        rgb,
        make_frame(rgb),
        torch.from_numpy(rgb).float().div(255).unsqueeze(0),
    ):
        pil = frames.to_pil(source)
        assert pil.mode == "RGB"
        assert pil.size == (20, 12)
        assert np.array_equal(np.asarray(pil), rgb)


def test_to_yuv420p_keeps_timing_and_skips_yuv_frames() -> None:
    source = make_frame(gradient(48, 64), pts=42)
    yuv = frames.to_yuv420p(source)
    assert (yuv.format.name, yuv.pts, yuv.time_base) == ("yuv420p", 42, Fraction(1, 90000))
    assert frames.to_yuv420p(yuv) is yuv  # nothing to do: the same frame back


def test_cached_reformatter_follows_size_changes_on_each_thread() -> None:
    """One swscale context per thread, re-initialised by size: two threads, three sizes."""
    sizes = [(64, 48), (32, 18), (854, 480), (33, 17)]
    errors: list[str] = []

    def convert(offset: int) -> None:
        for i in range(40):
            width, height = sizes[(i + offset) % len(sizes)]
            rgb = np.full((height, width, 3), (i * 5) % 256, np.uint8)
            image = frames.frame_to_image(make_frame(rgb, fmt="yuv420p"))
            if image.shape != (1, height, width, 3):
                errors.append(f"shape {tuple(image.shape)} for {width}x{height}")
            elif abs(float(image.mean()) * 255 - (i * 5) % 256) > 3:
                errors.append(f"value {float(image.mean()) * 255} for {(i * 5) % 256}")

    threads = [threading.Thread(target=convert, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors[:3]


def test_image_to_frame_scratch_reuse_never_aliases_earlier_frames() -> None:
    """image_to_frame reuses a per-thread buffer: earlier frames must keep their pixels."""
    black = torch.zeros(1, 48, 64, 3)
    white = torch.ones(1, 48, 64, 3)
    first = frames.image_to_frame(black)
    second = frames.image_to_frame(white)
    assert int(first.to_ndarray().max()) == 0
    assert int(second.to_ndarray().min()) == 255
    odd = frames.image_to_frame(torch.full((1, 50, 70, 3), 0.5))  # another size
    assert odd.width == 70 and int(odd.to_ndarray()[0, 0, 0]) == 128
