"""Filters: blur, sharpen, blend, quantize (``comfy_extras/nodes_post_processing.py``) and Canny
(``comfy_extras/nodes_canny.py``, which calls kornia; here it is plain torch).

Convolutions run on the BHWC tensor permuted to BCHW *without* ``.contiguous()`` (channels-last
is ~3x faster) and are depthwise (``groups=C``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .image import _match_channels, common_upscale

__all__ = ["canny_edges", "gaussian_1d", "nearest_palette", "reflect_pad", "separable_blur"]


def _reflect_index(n: int, pad: int, device: torch.device) -> torch.Tensor:
    idx = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = idx.remainder(period)
    return torch.where(idx >= n, period - idx, idx)


def reflect_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflect-pad the last two dims (``F.pad(mode="reflect")``, ComfyUI's padding). Pads as
    large as the image or larger, where torch raises, keep reflecting like ``numpy.pad``."""
    if pad <= 0:
        return x
    h, w = x.shape[-2], x.shape[-1]
    if pad < h and pad < w:
        return F.pad(x, (pad, pad, pad, pad), mode="reflect")
    rows, cols = _reflect_index(h, pad, x.device), _reflect_index(w, pad, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def gaussian_1d(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """ComfyUI's Gaussian samples ``linspace(-1, 1, size)``: sigma is relative to the radius.
    Its 2-D kernel is the outer product of this one, so two 1-D passes give the same blur."""
    x = torch.linspace(-1.0, 1.0, size, device=device, dtype=torch.float64)
    g = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return (g / g.sum()).to(dtype)


def _depthwise(x: torch.Tensor, kernel: torch.Tensor, vertical: bool) -> torch.Tensor:
    channels = x.shape[1]
    shape = (1, 1, -1, 1) if vertical else (1, 1, 1, -1)
    return F.conv2d(x, kernel.view(shape).repeat(channels, 1, 1, 1), groups=channels)


def separable_blur(
    x: torch.Tensor, radius: int, sigma: float, kernel: torch.Tensor | None = None
) -> torch.Tensor:
    """Gaussian blur of BCHW ``x`` with reflect padding (ComfyUI's ImageBlur), as two 1-D passes."""
    if kernel is None:
        kernel = gaussian_1d(2 * radius + 1, sigma, x.device, x.dtype)
    padded = reflect_pad(x, radius)
    return _depthwise(_depthwise(padded, kernel, vertical=True), kernel, vertical=False)


class ImageBlur:
    """Gaussian blur over a ``2*blur_radius+1`` square, sigma relative to the radius, reflect
    padding: ComfyUI's result (its 2-D kernel is separable, so two 1-D passes compute it).
    Radii larger than the image keep reflecting where ComfyUI would raise."""

    CATEGORY = "image/postprocessing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "blur"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "blur_radius": ("INT", {"default": 1, "min": 1, "max": 31, "step": 1}),
                "sigma": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.1}),
            }
        }

    def blur(self, image: torch.Tensor, blur_radius: int, sigma: float) -> tuple[torch.Tensor]:
        if blur_radius == 0:
            return (image,)
        return (separable_blur(image.permute(0, 3, 1, 2), blur_radius, sigma).permute(0, 2, 3, 1),)


class ImageSharpen:
    """Unsharp mask as in current ComfyUI: kernel ``-10*alpha*G`` with the centre raised so it
    sums to 1, i.e. ``x + 10*alpha*(x - blur(x))``, reflect padding, clamped to 0..1."""

    CATEGORY = "image/postprocessing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "sharpen"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "sharpen_radius": ("INT", {"default": 1, "min": 1, "max": 31, "step": 1}),
                "sigma": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.01}),
                "alpha": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 5.0, "step": 0.01}),
            }
        }

    def sharpen(
        self, image: torch.Tensor, sharpen_radius: int, sigma: float, alpha: float
    ) -> tuple[torch.Tensor]:
        if sharpen_radius == 0:
            return (image,)
        x = image.permute(0, 3, 1, 2)
        blurred = separable_blur(x, sharpen_radius, sigma)
        out = torch.clamp(x + (10.0 * alpha) * (x - blurred), 0.0, 1.0)
        return (out.permute(0, 2, 3, 1),)


def _soft_light_g(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.25, ((16 * x - 12) * x + 4) * x, torch.sqrt(x))


_BLEND_MODES = {
    "normal": lambda a, b: b,
    "multiply": lambda a, b: a * b,
    "screen": lambda a, b: 1 - (1 - a) * (1 - b),
    "overlay": lambda a, b: torch.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b)),
    "soft_light": lambda a, b: torch.where(
        b <= 0.5, a - (1 - 2 * b) * a * (1 - a), a + (2 * b - 1) * (_soft_light_g(a) - a)
    ),
    "difference": lambda a, b: a - b,
}


class ImageBlend:
    """``image1*(1-f) + mode(image1, image2)*f`` clamped, ComfyUI's formulas. image2 is resized
    to image1 (bicubic, centre crop) as ComfyUI; where the batch sizes differ image2's frames
    are cycled (ComfyUI would fail to broadcast)."""

    CATEGORY = "image/postprocessing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "blend_images"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image1": ("IMAGE",),
                "image2": ("IMAGE",),
                "blend_factor": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
                "blend_mode": (list(_BLEND_MODES),),
            }
        }

    def blend_images(
        self, image1: torch.Tensor, image2: torch.Tensor, blend_factor: float, blend_mode: str
    ) -> tuple[torch.Tensor]:
        image1, image2 = _match_channels(image1, image2.to(image1.device))
        if image1.shape[1:3] != image2.shape[1:3]:
            resized = common_upscale(
                image2.movedim(-1, 1), image1.shape[2], image1.shape[1], "bicubic", "center"
            )
            image2 = resized.movedim(1, -1)
        if image2.shape[0] != image1.shape[0]:
            image2 = image2[torch.arange(image1.shape[0], device=image2.device) % image2.shape[0]]
        blended = _BLEND_MODES[blend_mode](image1, image2)
        return (torch.clamp(image1 * (1 - blend_factor) + blended * blend_factor, 0.0, 1.0),)


def nearest_palette(pixels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Index of the nearest palette colour (squared RGB distance, first on ties) for each
    uint8 pixel ``[N, 3]``. Exact integer arithmetic, once per distinct colour."""
    px = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.int64))
    pal = torch.from_numpy(np.asarray(palette, dtype=np.int64))
    packed = (px[:, 0] << 16) | (px[:, 1] << 8) | px[:, 2]
    unique, inverse = torch.unique(packed, return_inverse=True)
    colours = torch.stack([(unique >> 16) & 255, (unique >> 8) & 255, unique & 255], dim=1)
    best = torch.empty(len(unique), dtype=torch.int64)
    for start in range(0, len(unique), 4096):
        chunk = colours[start : start + 4096]
        best[start : start + 4096] = ((chunk[:, None, :] - pal[None]) ** 2).sum(-1).argmin(1)
    return best[inverse].numpy()


def _bayer_matrix(level: int) -> np.ndarray:
    """The normalised ordered-dither matrix of side ``2**level`` (ComfyUI's recursion)."""
    if level == 0:
        return np.zeros((1, 1), np.float32)
    q = 4**level
    m = q * _bayer_matrix(level - 1)
    return np.block([[m - 1.5, m + 0.5], [m + 1.5, m - 0.5]]) / q


class ImageQuantize:
    """Reduce to ``colors`` colours. The palette is Pillow's median cut of the uint8 image, as
    ComfyUI. "none" maps every pixel to its exact nearest palette colour (Pillow, and so
    ComfyUI, looks colours up approximately: 2-8% of pixels differed on test images);
    "floyd-steinberg" is Pillow's, as ComfyUI; "bayer-N" adds ComfyUI's ordered-dither offsets
    and then maps exactly. Runs on the CPU; channels past the third are passed through."""

    CATEGORY = "image/postprocessing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "quantize"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        dithers = ["none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16"]
        return {
            "required": {
                "image": ("IMAGE",),
                "colors": ("INT", {"default": 256, "min": 1, "max": 256, "step": 1}),
                "dither": (dithers,),
            }
        }

    @staticmethod
    def quantize_frame(rgb: np.ndarray, colors: int, dither: str) -> np.ndarray:
        """One ``[H, W, 3]`` uint8 frame in, the quantized uint8 frame out."""
        picture = Image.fromarray(np.ascontiguousarray(rgb))
        palette_image = picture.quantize(colors=colors)
        if dither == "floyd-steinberg":
            dithered = picture.quantize(palette=palette_image, dither=Image.Dither.FLOYDSTEINBERG)
            return np.asarray(dithered.convert("RGB"))
        full = np.asarray(palette_image.getpalette() or [0, 0, 0], dtype=np.int64).reshape(-1, 3)
        used = full[np.unique(np.asarray(palette_image))]
        values = rgb
        if dither.startswith("bayer"):
            order = int(dither.split("-")[-1])
            spread = 2 * 256 / len(full)
            matrix = spread * _bayer_matrix(int(math.log2(order))) + 0.5
            h, w = rgb.shape[:2]
            offsets = matrix[np.arange(h)[:, None] % order, np.arange(w)[None, :] % order]
            values = np.clip(rgb.astype(np.float32) + offsets[..., None], 0, 255).astype(np.uint8)
        index = nearest_palette(values.reshape(-1, 3), used)
        return used[index].reshape(rgb.shape).astype(np.uint8)

    def quantize(self, image: torch.Tensor, colors: int, dither: str) -> tuple[torch.Tensor]:
        frames = []
        for frame in image:
            # ComfyUI converts with a truncating cast; the clamp only avoids uint8 wrap-around.
            rgb = (frame[..., :3].clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
            frames.append(
                torch.from_numpy(
                    self.quantize_frame(rgb, colors, dither).astype(np.float32) / 255.0
                )
            )
        out = torch.stack(frames).to(image.device)
        if image.shape[-1] > 3:
            out = torch.cat((out, image[..., 3:]), dim=-1)
        return (out,)


# Neighbour offsets (dy, dx) along the gradient for angles 0, 45, ..., 315 degrees (y down).
_NMS_OFFSETS = [(0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1)]


def canny_edges(image: torch.Tensor, low: float, high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """kornia's ``canny`` defaults in torch on BCHW: grayscale (0.299/0.587/0.114), 5x5 Gaussian
    with sigma 1 and reflect padding, unnormalised Sobel with replicate padding, magnitude
    ``sqrt(gx^2+gy^2+1e-6)``, non-maximum suppression along the gradient rounded to 45 degrees,
    double threshold and hysteresis (weak pixels 8-connected to strong ones are kept).
    Returns (magnitude after NMS, edges in {0, 1}), each ``[B, 1, H, W]``."""
    if image.shape[1] >= 3:
        weights = torch.tensor([0.299, 0.587, 0.114], device=image.device, dtype=image.dtype)
        gray = (image[:, :3] * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)
    else:
        gray = image.mean(1, keepdim=True)
    x = torch.arange(5, device=image.device, dtype=torch.float64) - 2
    kernel = torch.exp(-(x * x) / 2.0)
    blurred = separable_blur(gray, 2, 1.0, (kernel / kernel.sum()).to(gray.dtype))
    padded = F.pad(blurred, (1, 1, 1, 1), mode="replicate")
    sobel = torch.tensor(
        [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]],
        device=image.device,
        dtype=gray.dtype,
    )
    gx = F.conv2d(padded, sobel.view(1, 1, 3, 3))
    gy = F.conv2d(padded, sobel.t().contiguous().view(1, 1, 3, 3))
    magnitude = torch.sqrt(gx * gx + gy * gy + 1e-6)
    direction = torch.round(torch.rad2deg(torch.atan2(gy, gx)) / 45.0).long().remainder(8)

    h, w = magnitude.shape[-2:]
    zero_padded = F.pad(magnitude, (1, 1, 1, 1))
    neighbours = torch.cat(
        [zero_padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in _NMS_OFFSETS], 1
    )
    ahead = torch.gather(neighbours, 1, direction)
    behind = torch.gather(neighbours, 1, (direction + 4).remainder(8))
    magnitude = magnitude * ((magnitude - ahead > 0) & (magnitude - behind > 0))

    return magnitude, _hysteresis(magnitude, low, high)


def _hysteresis(magnitude: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Keep pixels above ``low`` that are 8-connected through such pixels to one above ``high``.

    After NMS few pixels pass ``low``: label their connected components (min-label hooking with
    pointer jumping over the list of neighbour pairs, a few rounds even for long contours) and
    keep the components holding a strong pixel. Dilating the whole frame until nothing changes
    gives the same set but took seconds at 720p on two cores.
    """
    flat = magnitude.flatten()
    h, w = magnitude.shape[-2:]
    candidates = torch.nonzero(flat > low).flatten()  # sorted linear indices
    edges = torch.zeros_like(flat)
    if candidates.numel() == 0:
        return edges.view_as(magnitude)
    rows, cols = (candidates // w) % h, candidates % w
    sources, targets = [], []
    for dy, dx in _NMS_OFFSETS:  # all eight neighbours, so every pair appears both ways
        inside = (rows + dy >= 0) & (rows + dy < h) & (cols + dx >= 0) & (cols + dx < w)
        wanted = candidates + dy * w + dx
        pos = torch.searchsorted(candidates, wanted).clamp(max=candidates.numel() - 1)
        found = inside & (candidates[pos] == wanted)
        sources.append(torch.nonzero(found).flatten())
        targets.append(pos[found])
    src, dst = torch.cat(sources), torch.cat(targets)
    labels = torch.arange(candidates.numel(), device=flat.device)
    while True:
        before = labels.clone()
        labels.scatter_reduce_(0, labels[dst], labels[src], reduce="amin")
        while True:
            jumped = labels[labels]
            if torch.equal(jumped, labels):
                break
            labels = jumped
        if torch.equal(labels, before):
            break
    strong = (flat[candidates] > high).long()
    has_strong = torch.zeros_like(labels).scatter_reduce_(0, labels, strong, reduce="amax")
    edges[candidates[has_strong[labels] > 0]] = 1.0
    return edges.view_as(magnitude)


class Canny:
    """Canny edges as white-on-black IMAGE, like ComfyUI's node (which calls kornia with its
    defaults); ``canny_edges`` describes the torch version. Validation rejects
    ``low_threshold > high_threshold``, which kornia raises on at run time."""

    CATEGORY = "image/preprocessors"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "detect_edge"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        threshold = {"min": 0.01, "max": 0.99, "step": 0.01}
        return {
            "required": {
                "image": ("IMAGE",),
                "low_threshold": ("FLOAT", {"default": 0.4, **threshold}),
                "high_threshold": ("FLOAT", {"default": 0.8, **threshold}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, low_threshold: float = 0.4, high_threshold: float = 0.8) -> bool | str:
        if low_threshold > high_threshold:
            return f"low_threshold {low_threshold} is above high_threshold {high_threshold}"
        return True

    def detect_edge(
        self, image: torch.Tensor, low_threshold: float, high_threshold: float
    ) -> tuple[torch.Tensor]:
        _, edges = canny_edges(image.permute(0, 3, 1, 2), low_threshold, high_threshold)
        return (edges.permute(0, 2, 3, 1).expand(-1, -1, -1, 3).contiguous(),)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "ImageBlur": ImageBlur,
    "ImageSharpen": ImageSharpen,
    "ImageBlend": ImageBlend,
    "ImageQuantize": ImageQuantize,
    "Canny": Canny,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "ImageBlur": "Image Blur",
    "ImageSharpen": "Image Sharpen",
    "ImageBlend": "Image Blend",
    "ImageQuantize": "Image Quantize",
    "Canny": "Canny",
}
