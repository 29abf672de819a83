"""The core nodes added after ComfyUI 0.3.75 (masks, compositing, layout, YUV, morphology,
primitives) against independent references: numpy loops written from ComfyUI's semantics.
tests/comfyui/test_parity.py checks them against ComfyUI's own classes where it is installed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from comfywhip_nb.prompts import load_prompt
from comfywhip_nb.prompts.nodes import compose, mask, morphology, primitive

RNG = np.random.default_rng(99)


def frame(b: int = 1, h: int = 12, w: int = 17, c: int = 3) -> torch.Tensor:
    return torch.from_numpy(RNG.random((b, h, w, c), dtype=np.float32))


def masks(b: int = 1, h: int = 12, w: int = 17) -> torch.Tensor:
    return torch.from_numpy(RNG.random((b, h, w), dtype=np.float32))


def numpy_grow(m: np.ndarray, expand: int, tapered: bool) -> np.ndarray:
    """Grey dilation/erosion one step at a time over a 3x3 footprint, edges repeated."""
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    if tapered:
        offsets = [(dy, dx) for dy, dx in offsets if dy == 0 or dx == 0]
    out = m.copy()
    h, w = m.shape
    for _ in range(abs(expand)):
        p = np.pad(out, 1, mode="edge")
        stack = [p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in offsets]
        out = np.max(stack, 0) if expand > 0 else np.min(stack, 0)
    return out


@pytest.mark.parametrize(
    ("expand", "tapered"), [(0, True), (2, True), (-3, True), (4, False), (-2, False)]
)
def test_grow_mask_is_stepwise_grey_morphology(expand: int, tapered: bool) -> None:
    m = masks(2)
    out = mask.GrowMask().expand_mask(m, expand, tapered)[0]
    for b in range(2):
        np.testing.assert_array_equal(out[b].numpy(), numpy_grow(m[b].numpy(), expand, tapered))


def test_feather_mask_follows_comfyuis_indexing() -> None:
    m = masks(1, 10, 12)
    out = mask.FeatherMask().feather(m, 3, 2, 4, 5)[0].numpy()
    expected = m.numpy().astype(np.float64).copy()
    for x in range(3):
        expected[:, :, x] *= (x + 1) / 3
    for x in range(4):
        expected[:, :, -x] *= (x + 1) / 4  # -0 is column 0, as in ComfyUI
    for y in range(2):
        expected[:, y, :] *= (y + 1) / 2
    for y in range(5):
        expected[:, -y, :] *= (y + 1) / 5
    np.testing.assert_allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("operation", ["multiply", "add", "subtract", "and", "or", "xor"])
def test_mask_composite_operations(operation: str) -> None:
    dst, src = masks(1, 10, 12), masks(1, 6, 20)
    out = mask.MaskComposite().combine(dst, src, 4, 3, operation)[0].numpy()
    expected = dst.numpy().copy()
    d, s = expected[:, 3:9, 4:12], src.numpy()[:, :6, :8]
    ops = {
        "multiply": d * s,
        "add": d + s,
        "subtract": d - s,
        "and": (np.round(d).astype(bool) & np.round(s).astype(bool)).astype(np.float32),
        "or": (np.round(d).astype(bool) | np.round(s).astype(bool)).astype(np.float32),
        "xor": (np.round(d).astype(bool) ^ np.round(s).astype(bool)).astype(np.float32),
    }
    expected[:, 3:9, 4:12] = ops[operation]
    np.testing.assert_allclose(out, np.clip(expected, 0, 1), atol=1e-6)


def test_solid_mask_and_image_color_to_mask() -> None:
    solid = mask.SolidMask().solid(0.25, 7, 5)[0]
    assert solid.shape == (1, 5, 7) and torch.all(solid == 0.25)
    img = torch.zeros(1, 2, 2, 3)
    img[0, 0, 1] = torch.tensor([0x12, 0x34, 0x56]) / 255.0
    found = mask.ImageColorToMask().image_to_mask(img, 0x123456)[0]
    assert found.tolist() == [[[0.0, 1.0], [0.0, 0.0]]]


def test_image_composite_masked_pastes_through_the_mask() -> None:
    dst, src = frame(1, 12, 17), frame(1, 4, 5)
    weight = torch.zeros(1, 4, 5)
    weight[:, :2] = 1.0
    out = compose.ImageCompositeMasked().composite(dst, src, 15, 9, False, weight)[0].numpy()
    expected = dst.numpy().copy()
    expected[:, 9:11, 15:17] = src.numpy()[:, :2, :2]  # the visible part, cut at the edge
    np.testing.assert_allclose(out, expected, atol=1e-6)
    full = compose.ImageCompositeMasked().composite(dst, src, 0, 0, True)[0]
    np.testing.assert_allclose(
        full.numpy(),
        F.interpolate(src.movedim(-1, 1), size=(12, 17), mode="bilinear").movedim(1, -1).numpy(),
        atol=1e-6,
    )


def test_split_and_join_alpha_round_trip() -> None:
    rgba = frame(2, 6, 7, 4)
    rgb, inverse_alpha = compose.SplitImageWithAlpha().split_image_with_alpha(rgba)
    np.testing.assert_allclose(inverse_alpha.numpy(), 1 - rgba.numpy()[..., 3], atol=1e-6)
    joined = compose.JoinImageWithAlpha().join_image_with_alpha(rgb, inverse_alpha)[0]
    np.testing.assert_allclose(joined.numpy(), rgba.numpy(), atol=1e-6)
    _, opaque = compose.SplitImageWithAlpha().split_image_with_alpha(frame(1, 3, 3))
    assert torch.all(opaque == 0)


@pytest.mark.parametrize(
    ("direction", "shape"), [("right", (1, 12, 30, 3)), ("down", (1, 26, 17, 3))]
)
def test_image_stitch_places_image2_with_spacing(direction: str, shape: tuple[int, ...]) -> None:
    a, b = frame(1, 12, 17), frame(1, 6, 5)
    out = compose.ImageStitch().stitch(a, direction, False, 7, "red", b)[0]
    assert out.shape == shape
    if direction == "right":
        assert torch.equal(out[:, :, :17], a)
        assert torch.equal(out[0, 5, 17:25], torch.tensor([[1.0, 0.0, 0.0]] * 8))  # 7 -> 8 wide
        assert torch.equal(out[:, 3:9, 25:30], b)  # centred vertically on red's "black" padding
    assert compose.ImageStitch().stitch(a, "left", True, 0, "white")[0] is a
    matched = compose.ImageStitch().stitch(a, "up", True, 0, "white", b)[0]
    assert matched.shape == (1, 12 + int(17 / (5 / 6)), 17, 3)


def test_resize_and_pad_fits_and_centres() -> None:
    x = frame(1, 10, 20)
    out = compose.ResizeAndPadImage().resize_and_pad(x, 40, 40, "black", "nearest-exact")[0]
    assert out.shape == (1, 40, 40, 3)
    assert torch.all(out[:, :10] == 0) and torch.all(out[:, 30:] == 0)
    assert torch.equal(out[:, 10:30], x.repeat_interleave(2, 1).repeat_interleave(2, 2))


def test_get_image_size_and_add_noise() -> None:
    assert compose.GetImageSize().get_size(frame(2, 5, 9)) == (9, 5, 2)
    x = frame(1, 8, 8)
    node = compose.ImageAddNoise()
    first, again = node.repeat(x, 7, 0.3)[0], node.repeat(x, 7, 0.3)[0]
    noise = torch.randn(x.size(), generator=torch.Generator().manual_seed(7))
    np.testing.assert_allclose(first.numpy(), torch.clip(x + 0.3 * noise, 0, 1).numpy(), atol=1e-6)
    assert torch.equal(first, again)
    assert not torch.equal(first, node.repeat(x, 8, 0.3)[0])


def test_yuv_round_trip_and_bt601_luma() -> None:
    x = frame(1, 6, 8)
    y, u, v = morphology.ImageRGBToYUV().execute(x)
    luma = x.numpy() @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    np.testing.assert_allclose(y[..., 0].numpy(), luma, atol=1e-5)
    back = morphology.ImageYUVToRGB().execute(y, u, v)[0]
    np.testing.assert_allclose(back.numpy(), x.numpy(), atol=1e-4)


def test_morphology_dilate_and_erode_are_window_max_and_min() -> None:
    x = frame(1, 9, 11)
    dilated = morphology.Morphology().process(x, "dilate", 3)[0]
    eroded = morphology.Morphology().process(x, "erode", 3)[0]
    inner = x.movedim(-1, 1)
    window_max = F.max_pool2d(inner, 3, stride=1).movedim(1, -1)
    window_min = -F.max_pool2d(-inner, 3, stride=1).movedim(1, -1)
    np.testing.assert_allclose(dilated[:, 1:-1, 1:-1].numpy(), window_max.numpy(), atol=1e-6)
    np.testing.assert_allclose(eroded[:, 1:-1, 1:-1].numpy(), window_min.numpy(), atol=1e-6)


def test_primitives_feed_widgets_through_links() -> None:
    graph: dict[str, Any] = {
        "1": {"class_type": "LoadTensor", "inputs": {}},
        "2": {"class_type": "PrimitiveInt", "inputs": {"value": 5}},
        "3": {
            "class_type": "ImageScale",
            "inputs": {
                "image": ["1", 0],
                "upscale_method": "nearest-exact",
                "width": ["2", 0],
                "height": ["2", 0],
                "crop": "disabled",
            },
        },
        "4": {"class_type": "SaveTensor", "inputs": {"images": ["3", 0]}},
    }
    assert load_prompt(graph).run(frame(1, 10, 10)).shape == (1, 5, 5, 3)
    assert primitive.PrimitiveFloat().execute(0.5) == (0.5,)


def test_morphology_refuses_kernels_too_large_for_the_frame() -> None:
    x = torch.zeros(1, 720, 1280, 3)
    with pytest.raises(ValueError, match="kernel_size 999 on a 1280x720 image"):
        morphology.Morphology().process(x, "dilate", 999)
