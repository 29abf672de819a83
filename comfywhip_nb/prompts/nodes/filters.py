"""Filters: blur, sharpen, blend, quantize (``comfy_extras/nodes_post_processing.py``) and Canny
(``comfy_extras/nodes_canny.py``, kornia's ``canny`` as in ComfyUI).

Convolutions run on the BHWC tensor permuted to BCHW *without* ``.contiguous()`` (channels-last
is ~3x faster) and are depthwise (``groups=C``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from kornia.filters import canny
from PIL import Image

from .image import common_upscale

__all__ = ["gaussian_1d", "hysteresis", "reflect_pad", "separable_blur"]


def reflect_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflect-pad the last two dims, ComfyUI's padding. Like ComfyUI (and torch) a pad as large
    as the image's side is refused, with a message that says so."""
    if pad <= 0:
        return x
    h, w = x.shape[-2], x.shape[-1]
    if pad >= h or pad >= w:
        raise ValueError(
            f"a radius of {pad} needs an image larger than {pad} pixels on each side "
            f"(reflect padding, as ComfyUI); got {w}x{h}"
        )
    return F.pad(x, (pad, pad, pad, pad), mode="reflect")


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
    A radius as large as the image's side raises, as in ComfyUI."""

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
    """``image1*(1-f) + mode(image1, image2)*f`` clamped, ComfyUI's formulas and channel rule:
    image2 is cut to image1's channels (RGB over RGBA stays RGB); an RGBA image1 with an RGB
    image2 raises, as ComfyUI. image2 is resized to image1 (bicubic, centre crop); batches
    broadcast as in ComfyUI (a single image2 applies to every image1)."""

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
        c1, c2 = image1.shape[-1], image2.shape[-1]
        if c2 > c1:
            image2 = image2[..., :c1]
        elif c2 < c1:
            raise ValueError(
                f"image1 has {c1} channels and image2 {c2}: ComfyUI blends only when image2 "
                "has at least image1's channels"
            )
        image2 = image2.to(image1.device)
        if image1.shape[1:3] != image2.shape[1:3]:
            resized = common_upscale(
                image2.movedim(-1, 1), image1.shape[2], image1.shape[1], "bicubic", "center"
            )
            image2 = resized.movedim(1, -1)
        if image1.shape[0] != image2.shape[0] and 1 not in (image1.shape[0], image2.shape[0]):
            raise ValueError(
                f"cannot blend a batch of {image1.shape[0]} with a batch of {image2.shape[0]}"
            )
        blended = _BLEND_MODES[blend_mode](image1, image2)
        return (torch.clamp(image1 * (1 - blend_factor) + blended * blend_factor, 0.0, 1.0),)


def _bayer_matrix(level: int) -> np.ndarray:
    """The normalised ordered-dither matrix of side ``2**level`` (ComfyUI's recursion)."""
    if level == 0:
        return np.zeros((1, 1), np.float32)
    q = 4**level
    m = q * _bayer_matrix(level - 1)
    return np.block([[m - 1.5, m + 0.5], [m + 1.5, m - 0.5]]) / q


class ImageQuantize:
    """Reduce to ``colors`` colours with Pillow, as ComfyUI: the palette is Pillow's median cut
    of the uint8 frame, "none" and "floyd-steinberg" are Pillow's own mapping, "bayer-N" adds
    ComfyUI's ordered-dither offsets and then maps with Pillow. Runs on the CPU. Values are
    clamped to 0..1 before the uint8 cast (ComfyUI would wrap around); channels past the third
    are passed through (ComfyUI takes RGB only)."""

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
        palette = picture.quantize(colors=colors)  # Pillow wants a palette image to map onto
        if dither.startswith("bayer"):
            order = int(dither.split("-")[-1])
            spread = 2 * 256 / (len(palette.getpalette() or [0, 0, 0]) // 3)
            matrix = spread * _bayer_matrix(int(math.log2(order))) + 0.5
            h, w = rgb.shape[:2]
            offsets = matrix[np.arange(h)[:, None] % order, np.arange(w)[None, :] % order]
            shifted = np.clip(
                rgb.astype(np.float32) + offsets[..., None].astype(np.float32), 0, 255
            )
            picture = Image.fromarray(shifted.astype(np.uint8))
        mode = Image.Dither.FLOYDSTEINBERG if dither == "floyd-steinberg" else Image.Dither.NONE
        return np.asarray(picture.quantize(palette=palette, dither=mode).convert("RGB"))

    def quantize(self, image: torch.Tensor, colors: int, dither: str) -> tuple[torch.Tensor]:
        frames = []
        for frame in image:
            rgb = (frame[..., :3].clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
            quantized = self.quantize_frame(rgb, colors, dither).astype(np.float32) / 255.0
            frames.append(torch.from_numpy(quantized))
        out = torch.stack(frames).to(image.device)
        if image.shape[-1] > 3:
            out = torch.cat((out, image[..., 3:]), dim=-1)
        return (out,)


# The eight neighbours (dy, dx) of a pixel.
_NEIGHBOURS = [(0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1)]


def hysteresis(edges: torch.Tensor) -> torch.Tensor:
    """kornia's hysteresis result from its unlinked edges (1 strong, 0.5 weak, 0 none): the
    weak pixels 8-connected through weak pixels to a strong one become 1, the rest 0.

    kornia dilates the whole frame until nothing changes, one pixel per round: 20 s for a 720p
    frame on two CPU cores (``canny(..., hysteresis=True)``), where a live stream has 33 ms.
    Here the few candidate pixels get connected-component labels instead (min-label hooking
    with pointer jumping over the list of neighbour pairs, a few rounds even for long
    contours), and the components holding a strong pixel are kept: the same set, in ~0.1 s.
    """
    flat = edges.flatten()
    h, w = edges.shape[-2:]
    candidates = torch.nonzero(flat > 0).flatten()  # sorted linear indices
    out = torch.zeros_like(flat)
    if candidates.numel() == 0:
        return out.view_as(edges)
    rows, cols = (candidates // w) % h, candidates % w
    sources, targets = [], []
    for dy, dx in _NEIGHBOURS:  # all eight, so every pair appears both ways
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
    strong = (flat[candidates] == 1).long()
    has_strong = torch.zeros_like(labels).scatter_reduce_(0, labels, strong, reduce="amax")
    out[candidates[has_strong[labels] > 0]] = 1.0
    return out.view_as(edges)


class Canny:
    """Canny edges as a white-on-black IMAGE: kornia's ``canny`` with its defaults, as ComfyUI,
    with the hysteresis linking done by ``hysteresis`` (the same edges, ~200x faster on a CPU).
    Validation rejects ``low_threshold > high_threshold``, which kornia raises on at run time."""

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
        _, unlinked = canny(image.movedim(-1, 1), low_threshold, high_threshold, hysteresis=False)
        return (hysteresis(unlinked).repeat(1, 3, 1, 1).movedim(1, -1),)


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
