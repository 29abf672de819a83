"""Built-in nodes against independent references: numpy formulas, numpy convolutions, Pillow."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from comfywhip_nb.prompts import PromptError, load_prompt
from comfywhip_nb.prompts.nodes import filters, image, mask
from comfywhip_nb.prompts.nodes.image import MAX_OUTPUT_PIXELS

RNG = np.random.default_rng(1234)


def frame(b: int = 1, h: int = 32, w: int = 48, c: int = 3) -> torch.Tensor:
    return torch.from_numpy(RNG.random((b, h, w, c), dtype=np.float32))


def np_of(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


def correlate_reflect(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Direct 2-D correlation of [B,H,W,C] with numpy reflect padding (works for any pad size)."""
    r = kernel.shape[0] // 2
    h, w = img.shape[1:3]
    padded = np.pad(img, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
    out = np.zeros_like(img, dtype=np.float64)
    for dy in range(kernel.shape[0]):
        for dx in range(kernel.shape[1]):
            out += kernel[dy, dx] * padded[:, dy : dy + h, dx : dx + w, :]
    return out


def comfy_gaussian_2d(size: int, sigma: float) -> np.ndarray:
    """ComfyUI's kernel: a 2-D Gaussian over linspace(-1, 1) in both directions."""
    x = np.linspace(-1, 1, size)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    g = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    return g / g.sum()


# --- colour and filters -------------------------------------------------------------------------


def test_invert() -> None:
    x = frame()
    np.testing.assert_allclose(np_of(image.ImageInvert().invert(x)[0]), 1.0 - np_of(x), atol=1e-7)


@pytest.mark.parametrize(
    ("radius", "sigma", "h", "w"), [(1, 1.0, 32, 48), (3, 0.7, 32, 48), (10, 2.0, 11, 13)]
)
def test_blur_matches_a_direct_reflect_padded_gaussian(
    radius: int, sigma: float, h: int, w: int
) -> None:
    x = frame(2, h, w)
    expected = correlate_reflect(np_of(x), comfy_gaussian_2d(2 * radius + 1, sigma))
    out = filters.ImageBlur().blur(x, radius, sigma)[0]
    assert out.shape == x.shape
    np.testing.assert_allclose(np_of(out), expected, atol=2e-6)


@pytest.mark.parametrize(("radius", "h", "w"), [(6, 6, 8), (8, 20, 8), (31, 31, 40)])
def test_blur_and_sharpen_refuse_a_radius_as_large_as_the_image(
    radius: int, h: int, w: int
) -> None:
    x = frame(1, h, w)
    with pytest.raises(ValueError, match=f"radius of {radius} needs an image larger"):
        filters.ImageBlur().blur(x, radius, 1.0)
    with pytest.raises(ValueError, match="reflect padding"):
        filters.ImageSharpen().sharpen(x, radius, 1.0, 1.0)


@pytest.mark.parametrize(
    ("radius", "sigma", "alpha"), [(1, 1.0, 1.0), (2, 0.5, 0.3), (1, 1.0, 0.0)]
)
def test_sharpen_matches_comfyui_kernel(radius: int, sigma: float, alpha: float) -> None:
    x = frame()
    kernel = comfy_gaussian_2d(2 * radius + 1, sigma) * -(alpha * 10)
    kernel[radius, radius] += 1.0 - kernel.sum()
    expected = np.clip(correlate_reflect(np_of(x), kernel), 0, 1)
    out = filters.ImageSharpen().sharpen(x, radius, sigma, alpha)[0]
    np.testing.assert_allclose(np_of(out), expected, atol=3e-6)


def np_blend(a: np.ndarray, b: np.ndarray, mode: str) -> np.ndarray:
    if mode == "normal":
        return b
    if mode == "multiply":
        return a * b
    if mode == "screen":
        return 1 - (1 - a) * (1 - b)
    if mode == "overlay":
        return np.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b))
    if mode == "soft_light":
        g = np.where(a <= 0.25, ((16 * a - 12) * a + 4) * a, np.sqrt(a))
        return np.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a), a + (2 * b - 1) * (g - a))
    return a - b  # difference


@pytest.mark.parametrize(
    "mode", ["normal", "multiply", "screen", "overlay", "soft_light", "difference"]
)
def test_blend_modes(mode: str) -> None:
    a, b = frame(), frame()
    expected = np.clip(np_of(a) * 0.3 + np_blend(np_of(a), np_of(b), mode) * 0.7, 0, 1)
    out = filters.ImageBlend().blend_images(a, b, 0.7, mode)[0]
    np.testing.assert_allclose(np_of(out), expected, atol=1e-6)


def test_blend_resizes_image2_and_broadcasts_a_single_image() -> None:
    a, b = frame(3, 32, 48), frame(1, 8, 8)
    out = filters.ImageBlend().blend_images(a, b, 1.0, "normal")[0]
    assert out.shape == (3, 32, 48, 3)
    assert torch.equal(out[0], out[2])
    with pytest.raises(ValueError, match="batch of 3 with a batch of 2"):
        filters.ImageBlend().blend_images(a, frame(2, 32, 48), 0.5, "normal")


def test_blend_keeps_image1s_channels_as_comfyui() -> None:
    a, b = frame(1, 8, 8), frame(1, 8, 8, 4)
    out = filters.ImageBlend().blend_images(a, b, 0.5, "multiply")[0]
    expected = np.clip(np_of(a) * 0.5 + np_of(a) * np_of(b)[..., :3] * 0.5, 0, 1)
    np.testing.assert_allclose(np_of(out), expected, atol=1e-6)
    with pytest.raises(ValueError, match="image1 has 4 channels and image2 3"):
        filters.ImageBlend().blend_images(b, a, 0.5, "normal")


def pillow_quantize(rgb: np.ndarray, colors: int, dither: Image.Dither) -> np.ndarray:
    """What ComfyUI does: Pillow's median-cut palette, then Pillow maps onto it."""
    picture = Image.fromarray(rgb)
    palette = picture.quantize(colors=colors)
    return np.asarray(picture.quantize(palette=palette, dither=dither).convert("RGB"))


@pytest.mark.parametrize(
    ("colors", "dither", "mode"),
    [(8, "none", Image.Dither.NONE), (4, "floyd-steinberg", Image.Dither.FLOYDSTEINBERG)],
)
def test_quantize_none_and_floyd_steinberg_are_pillows(
    colors: int, dither: str, mode: Image.Dither
) -> None:
    x = frame(2, 24, 32)
    out = filters.ImageQuantize().quantize(x, colors, dither)[0]
    for b in range(2):
        rgb = (x[b] * 255).to(torch.uint8).numpy()
        expected = pillow_quantize(rgb, colors, mode)
        np.testing.assert_array_equal(out[b].numpy(), expected.astype(np.float32) / 255.0)


def test_quantize_bayer_adds_comfyuis_offsets_before_pillow_maps() -> None:
    ramp = torch.linspace(0, 1, 64).view(1, 1, 64, 1).expand(1, 16, 64, 3).contiguous()
    rgb = (ramp[0] * 255).to(torch.uint8).numpy()
    palette = Image.fromarray(rgb).quantize(colors=4)
    count = len(palette.getpalette()) // 3
    m = np.array([[-1.5, 0.5], [1.5, -0.5]]) / 4  # the normalised 2x2 Bayer matrix
    offsets = 2 * 256 / count * m + 0.5
    shifted = rgb.astype(np.float32) + offsets[np.arange(16)[:, None] % 2, np.arange(64) % 2][
        ..., None
    ].astype(np.float32)
    mapped = Image.fromarray(np.clip(shifted, 0, 255).astype(np.uint8)).quantize(
        palette=palette, dither=Image.Dither.NONE
    )
    out = filters.ImageQuantize().quantize(ramp, 4, "bayer-2")[0]
    expected = np.asarray(mapped.convert("RGB")).astype(np.float32) / 255.0
    np.testing.assert_array_equal(out[0].numpy(), expected)
    assert not torch.equal(out, filters.ImageQuantize().quantize(ramp, 4, "none")[0])


# --- scaling ------------------------------------------------------------------------------------


def nearest_exact_index(size_in: int, size_out: int) -> np.ndarray:
    return np.minimum(
        np.floor((np.arange(size_out) + 0.5) * size_in / size_out).astype(int), size_in - 1
    )


def bilinear_1d(x: np.ndarray, axis: int, size_out: int) -> np.ndarray:
    """Half-pixel-centre linear interpolation (align_corners=False) along one axis."""
    size_in = x.shape[axis]
    src = np.maximum((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, size_in - 1)
    frac = (src - i0).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    return np.take(x, i0, axis) * (1 - frac) + np.take(x, i1, axis) * frac


def test_scale_nearest_exact_and_bilinear() -> None:
    x = frame(1, 32, 48)
    out = image.ImageScale().upscale(x, "nearest-exact", 20, 12, "disabled")[0]
    rows, cols = nearest_exact_index(32, 12), nearest_exact_index(48, 20)
    np.testing.assert_array_equal(out.numpy(), x.numpy()[:, rows][:, :, cols])
    out = image.ImageScale().upscale(x, "bilinear", 70, 50, "disabled")[0]
    expected = bilinear_1d(bilinear_1d(np_of(x), 1, 50), 2, 70)
    np.testing.assert_allclose(np_of(out), expected, atol=1e-5)


def test_scale_area_is_a_block_mean_and_bicubic_keeps_constants() -> None:
    x = frame(2, 32, 48)
    out = image.ImageScaleBy().upscale(x, "area", 0.5)[0]
    np.testing.assert_allclose(
        np_of(out), np_of(x).reshape(2, 16, 2, 24, 2, 3).mean((2, 4)), atol=1e-6
    )
    flat = torch.full((1, 10, 10, 3), 0.25)
    np.testing.assert_allclose(
        image.ImageScale().upscale(flat, "bicubic", 23, 17, "disabled")[0].numpy(), 0.25, atol=1e-6
    )


def test_scale_lanczos_is_pillows() -> None:
    x = frame(1, 32, 48)
    rgb = np.clip(255.0 * x[0].numpy(), 0, 255).astype(np.uint8)
    expected = (
        np.asarray(Image.fromarray(rgb).resize((30, 20), Image.Resampling.LANCZOS)).astype(
            np.float32
        )
        / 255
    )
    out = image.ImageScale().upscale(x, "lanczos", 30, 20, "disabled")[0]
    np.testing.assert_array_equal(out[0].numpy(), expected)


def test_scale_sizes_round_like_comfyui() -> None:
    x = frame(1, 32, 48)
    scale = image.ImageScale()
    assert scale.upscale(x, "bilinear", 0, 0, "disabled")[0] is x
    assert scale.upscale(x, "bilinear", 0, 16, "disabled")[0].shape == (1, 16, 24, 3)
    assert scale.upscale(x, "bilinear", 10, 0, "disabled")[0].shape == (1, 7, 10, 3)  # round(6.67)
    assert image.ImageScaleBy().upscale(frame(1, 33, 47), "bilinear", 0.5)[0].shape == (
        1,
        16,
        24,
        3,
    )
    assert image.ImageScaleBy().upscale(frame(1, 1, 1), "bilinear", 0.01)[0].shape == (1, 1, 1, 3)
    total = image.ImageScaleToTotalPixels()
    assert total.upscale(x, "bilinear", 0.01)[0].shape == (1, 84, 125, 3)
    assert "resolution_steps" not in total.INPUT_TYPES().get("optional", {})  # not in 0.3.75


def test_scale_center_crop_cuts_to_the_target_aspect_first() -> None:
    x = frame(1, 32, 48)
    out = image.ImageScale().upscale(x, "nearest-exact", 16, 16, "center")[0]
    crop = x[:, :, 8:40]  # x = round((48 - 48 * (1 / 1.5)) / 2) = 8
    assert torch.equal(out, crop[:, 1::2, 1::2])


def test_scale_refuses_outputs_over_the_pixel_budget() -> None:
    with pytest.raises(ValueError, match="over the limit"):
        image.ImageScale().upscale(frame(2, 4, 4), "bilinear", 16384, 16384, "disabled")


# --- geometry and batches -----------------------------------------------------------------------


@pytest.mark.parametrize(("x", "y", "w", "h"), [(0, 0, 10, 7), (5, 3, 100, 100), (99, 99, 4, 4)])
def test_crop_is_slicing_with_clamped_origin(x: int, y: int, w: int, h: int) -> None:
    img = frame(2, 32, 48)
    x0, y0 = min(x, 47), min(y, 31)
    expected = img.numpy()[:, y0 : y0 + h, x0 : x0 + w]
    np.testing.assert_array_equal(image.ImageCrop().crop(img, w, h, x, y)[0].numpy(), expected)


def test_flip_matches_numpy() -> None:
    x = frame(2)
    flip = image.ImageFlip()
    np.testing.assert_array_equal(
        flip.flip(x, "x-axis: vertically")[0].numpy(), np.flip(x.numpy(), 1)
    )
    np.testing.assert_array_equal(
        flip.flip(x, "y-axis: horizontally")[0].numpy(), np.flip(x.numpy(), 2)
    )


@pytest.mark.parametrize(
    ("rotation", "k"), [("none", 0), ("90 degrees", 1), ("180 degrees", 2), ("270 degrees", 3)]
)
def test_rotate_is_clockwise_rot90(rotation: str, k: int) -> None:
    x = frame(2)
    expected = np.rot90(x.numpy(), -k, axes=(1, 2))  # negative k: clockwise
    np.testing.assert_array_equal(image.ImageRotate().rotate(x, rotation)[0].numpy(), expected)
    if k == 1:  # the top-left pixel ends up top-right
        assert torch.equal(image.ImageRotate().rotate(x, rotation)[0][0, 0, -1], x[0, 0, 0])


def test_empty_image_colour_and_budget() -> None:
    out = image.EmptyImage().generate(5, 4, 2, 0x336699)[0]
    assert out.shape == (2, 4, 5, 3)
    np.testing.assert_allclose(
        out.numpy(), np.broadcast_to([0x33 / 255, 0x66 / 255, 0x99 / 255], (2, 4, 5, 3))
    )
    assert image.EmptyImage.VALIDATE_INPUTS(width=512, height=512, batch_size=1) is True
    assert "over the limit" in image.EmptyImage.VALIDATE_INPUTS(
        width=16384, height=16384, batch_size=1
    )
    assert MAX_OUTPUT_PIXELS < 16384 * 16384


def test_image_batch_concatenates_and_resizes_the_second() -> None:
    a, b = frame(2, 16, 16), frame(1, 16, 16)
    np.testing.assert_array_equal(
        image.ImageBatch().batch(a, b)[0].numpy(), np.concatenate([a.numpy(), b.numpy()])
    )
    out = image.ImageBatch().batch(a, frame(1, 8, 8))[0]
    assert out.shape == (3, 16, 16, 3)
    four = image.ImageBatch().batch(a, frame(1, 16, 16, 4))[0]
    assert four.shape == (3, 16, 16, 4) and torch.all(four[:2, ..., 3] == 1.0)
    with pytest.raises(ValueError, match="cannot batch images with 1 and 3 channels"):
        image.ImageBatch().batch(frame(1, 16, 16, 1), a)


def test_repeat_and_from_batch_match_numpy() -> None:
    x = frame(3, 8, 8)
    np.testing.assert_array_equal(
        image.RepeatImageBatch().repeat(x, 2)[0].numpy(), np.tile(x.numpy(), (2, 1, 1, 1))
    )
    pick = image.ImageFromBatch()
    for index, length, expected in [(1, 1, [1]), (2, 5, [2]), (0, 9, [0, 1, 2]), (99, 2, [2])]:
        np.testing.assert_array_equal(
            pick.frombatch(x, index, length)[0].numpy(), x.numpy()[expected]
        )


# --- masks --------------------------------------------------------------------------------------


def test_mask_nodes_match_numpy() -> None:
    x = frame(2)
    green = mask.ImageToMask().image_to_mask(x, "green")[0]
    np.testing.assert_array_equal(green.numpy(), x.numpy()[..., 1])
    np.testing.assert_array_equal(
        mask.MaskToImage().mask_to_image(green)[0].numpy(), np.repeat(x.numpy()[..., 1:2], 3, -1)
    )
    np.testing.assert_allclose(
        mask.InvertMask().invert(green)[0].numpy(), 1.0 - x.numpy()[..., 1], atol=1e-7
    )
    m = torch.tensor([[[0.2, 0.5, 0.51]]])
    assert mask.ThresholdMask().image_to_mask(m, 0.5)[0].tolist() == [[[0.0, 0.0, 1.0]]]
    with_alpha = frame(1, 4, 4, 4)
    alpha = mask.ImageToMask().image_to_mask(with_alpha, "alpha")[0]
    assert torch.equal(alpha, with_alpha[..., 3])
    with pytest.raises(ValueError, match="only 3 channels"):
        mask.ImageToMask().image_to_mask(x, "alpha")


# --- Canny --------------------------------------------------------------------------------------


def numpy_canny(rgb: np.ndarray, low: float, high: float) -> np.ndarray:
    """kornia.filters.canny's steps written out in numpy, hysteresis as a breadth-first search."""
    h, w = rgb.shape[:2]
    gray = rgb @ np.array([0.299, 0.587, 0.114])
    g = np.exp(-((np.arange(5) - 2) ** 2) / 2.0)
    kernel = np.outer(g, g) / np.outer(g, g).sum()
    blurred = correlate_reflect(gray[None, :, :, None], kernel)[0, :, :, 0]
    p = np.pad(blurred, 1, mode="edge")
    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
    gx = sum(sobel[i, j] * p[i : i + h, j : j + w] for i in range(3) for j in range(3))
    gy = sum(sobel[j, i] * p[i : i + h, j : j + w] for i in range(3) for j in range(3))
    mag = np.sqrt(gx**2 + gy**2 + 1e-6)
    direction = np.round(np.degrees(np.arctan2(gy, gx)) / 45).astype(int) % 8
    z = np.pad(mag, 1)
    nms = np.zeros_like(mag)
    for y in range(h):
        for x in range(w):
            a = math.radians(45 * direction[y, x])
            dy, dx = round(math.sin(a)), round(math.cos(a))
            if mag[y, x] > z[1 + y + dy, 1 + x + dx] and mag[y, x] > z[1 + y - dy, 1 + x - dx]:
                nms[y, x] = mag[y, x]
    edges = nms > high
    queue = deque(zip(*np.nonzero(edges), strict=True))
    while queue:
        y, x = queue.popleft()
        for yy in range(max(0, y - 1), min(h, y + 2)):
            for xx in range(max(0, x - 1), min(w, x + 2)):
                if not edges[yy, xx] and nms[yy, xx] > low:
                    edges[yy, xx] = True
                    queue.append((yy, xx))
    return edges.astype(np.float64)


def shapes_image(h: int = 40, w: int = 56) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = 0.15 + 0.3 * (xx / w)[..., None] * np.array([1.0, 0.6, 0.2])
    img = np.where(((yy - 20) ** 2 + (xx - 36) ** 2 < 100)[..., None], [0.9, 0.8, 0.3], img)
    img = np.where(((yy > 6) & (yy < 30) & (xx > 5) & (xx < 20))[..., None], [0.2, 0.9, 0.9], img)
    return img


def test_canny_matches_a_numpy_reference() -> None:
    rgb = shapes_image()
    out = filters.Canny().detect_edge(torch.from_numpy(rgb[None].astype(np.float32)), 0.1, 0.3)[0]
    assert out.shape == (1, 40, 56, 3) and set(out.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(out[..., 0], out[..., 2])
    expected = numpy_canny(rgb, 0.1, 0.3)
    assert expected.sum() > 50
    np.testing.assert_array_equal(out[0, ..., 0].numpy(), expected)


def test_canny_finds_a_step_edge_and_nothing_on_flat_images() -> None:
    step = torch.zeros(1, 20, 20, 3)
    step[:, :, 10] = 0.5  # a symmetric step ties its two middle columns, and NMS keeps neither
    step[:, :, 11:] = 1.0
    edges = filters.Canny().detect_edge(step, 0.2, 0.5)[0][0, ..., 0]
    assert set(torch.nonzero(edges)[:, 1].tolist()) == {10}
    assert edges[:, 10].sum() == 20  # every row
    assert filters.Canny().detect_edge(torch.full((2, 9, 9, 3), 0.5), 0.1, 0.2)[0].sum() == 0


@pytest.mark.parametrize(("low", "high"), [(0.05, 0.2), (0.1, 0.3), (0.3, 0.35)])
def test_canny_hysteresis_is_kornias(low: float, high: float) -> None:
    from kornia.filters import canny

    noisy = torch.from_numpy(shapes_image(48, 64)[None].astype(np.float32)).permute(0, 3, 1, 2)
    noisy = noisy + 0.2 * torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(1))
    _, expected = canny(noisy, low, high)
    ours = filters.Canny().detect_edge(noisy.permute(0, 2, 3, 1), low, high)[0]
    assert expected.sum() > 20
    assert torch.equal(ours[..., 0], expected[:, 0])


# --- through prompts, and the specs themselves --------------------------------------------------


def test_nodes_run_inside_a_prompt() -> None:
    graph: dict[str, Any] = {
        "1": {"class_type": "LoadTensor", "inputs": {}},
        "2": {"class_type": "ImageToMask", "inputs": {"image": ["1", 0], "channel": "red"}},
        "3": {"class_type": "ThresholdMask", "inputs": {"mask": ["2", 0], "value": 0.5}},
        "4": {"class_type": "InvertMask", "inputs": {"mask": ["3", 0]}},
        "5": {"class_type": "MaskToImage", "inputs": {"mask": ["4", 0]}},
        "6": {"class_type": "SaveTensor", "inputs": {"images": ["5", 0]}},
    }
    x = frame()
    out = load_prompt(graph).run(x)
    expected = np.repeat((x.numpy()[..., :1] <= 0.5).astype(np.float32), 3, -1)
    np.testing.assert_array_equal(out.numpy(), expected)


COMFY_SPECS = [
    ("ImageBlur", "blur_radius", ("INT", {"default": 1, "min": 1, "max": 31, "step": 1})),
    ("ImageBlur", "sigma", ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.1})),
    ("ImageSharpen", "alpha", ("FLOAT", {"default": 1.0, "min": 0.0, "max": 5.0, "step": 0.01})),
    ("ImageFlip", "flip_method", (["x-axis: vertically", "y-axis: horizontally"],)),
    ("ImageRotate", "rotation", (["none", "90 degrees", "180 degrees", "270 degrees"],)),
    (
        "ImageScale",
        "upscale_method",
        (["nearest-exact", "bilinear", "area", "bicubic", "lanczos"],),
    ),
    ("ImageScale", "width", ("INT", {"default": 512, "min": 0, "max": 16384, "step": 1})),
    (
        "ImageScaleBy",
        "scale_by",
        ("FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}),
    ),
    (
        "ImageQuantize",
        "dither",
        (["none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16"],),
    ),
    (
        "ImageBlend",
        "blend_mode",
        (["normal", "multiply", "screen", "overlay", "soft_light", "difference"],),
    ),
    ("Canny", "low_threshold", ("FLOAT", {"default": 0.4, "min": 0.01, "max": 0.99, "step": 0.01})),
    ("ThresholdMask", "value", ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01})),
]


@pytest.mark.parametrize(("class_type", "name", "spec"), COMFY_SPECS)
def test_input_specs_are_comfyuis(class_type: str, name: str, spec: tuple[Any, ...]) -> None:
    from comfywhip_nb.prompts import NODE_CLASS_MAPPINGS

    assert NODE_CLASS_MAPPINGS[class_type].INPUT_TYPES()["required"][name] == spec


def test_audio_passes_through() -> None:
    graph = {
        "1": {"class_type": "LoadAudioTensor", "inputs": {"buffer_size": 500.0}},
        "2": {"class_type": "SaveAudioTensor", "inputs": {"audio": ["1", 0]}},
    }
    prompt = load_prompt(graph)
    audio = {"waveform": torch.randn(1, 2, 480), "sample_rate": 48000}
    out = prompt.run_audio(audio)
    assert out["sample_rate"] == 48000 and torch.equal(out["waveform"], audio["waveform"])
    x = frame()
    assert prompt.run(x) is x  # no SaveTensor: video passes through untouched
    with pytest.raises(RuntimeError, match="sample_rate"):
        prompt.run_audio({"waveform": torch.zeros(1, 1, 4), "sample_rate": 0})
    with pytest.raises(PromptError):
        load_prompt({**graph, "2": {"class_type": "SaveAudioTensor", "inputs": {"audio": 3}}})
