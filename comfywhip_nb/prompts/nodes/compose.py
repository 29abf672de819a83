"""Compositing and layout: ImageCompositeMasked (``comfy_extras/nodes_mask.py``), Join/Split
ImageWithAlpha (``nodes_compositing.py``), ImageStitch, ResizeAndPadImage, GetImageSize and
ImageAddNoise (``nodes_images.py``), with ComfyUI 0.3.75's names, inputs and results.

Where ComfyUI would fail on a zero-pixel side (a stitched image too thin to resize), sizes are
kept at 1 pixel or more; outputs over the pixel budget are refused before they are allocated.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .image import MAX_RESOLUTION, check_pixels, common_upscale


def _repeat_to_batch(tensor: torch.Tensor, size: int) -> torch.Tensor:
    """ComfyUI's ``repeat_to_batch_size``: cut or cycle the batch to ``size``."""
    if tensor.shape[0] > size:
        return tensor[:size]
    if tensor.shape[0] < size:
        reps = -(-size // tensor.shape[0])
        return tensor.repeat(reps, *([1] * (tensor.ndim - 1)))[:size]
    return tensor


def _alpha_fix(destination: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """ComfyUI's ``image_alpha_fix``: the source is cut to the destination's channels; a
    destination with more channels than the source cannot be composited (ComfyUI fails)."""
    if source.shape[-1] > destination.shape[-1]:
        return destination, source[..., : destination.shape[-1]]
    if source.shape[-1] < destination.shape[-1]:
        raise ValueError(
            f"destination has {destination.shape[-1]} channels and source "
            f"{source.shape[-1]}: ComfyUI composites only onto as many channels or fewer"
        )
    return destination, source


class ImageCompositeMasked:
    """``source`` pasted onto ``destination`` at (x, y) through ``mask`` (bilinear-resized to
    the source; none means opaque), ``resize_source`` stretching it to the destination first."""

    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "composite"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        pos = {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1}
        return {
            "required": {
                "destination": ("IMAGE",),
                "source": ("IMAGE",),
                "x": ("INT", dict(pos)),
                "y": ("INT", dict(pos)),
                "resize_source": ("BOOLEAN", {"default": False}),
            },
            "optional": {"mask": ("MASK",)},
        }

    def composite(
        self,
        destination: torch.Tensor,
        source: torch.Tensor,
        x: int,
        y: int,
        resize_source: bool,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor]:
        destination, source = _alpha_fix(destination, source)
        out = destination.clone().movedim(-1, 1)
        src = source.to(out.device).movedim(-1, 1)
        if resize_source:
            src = F.interpolate(src, size=tuple(out.shape[-2:]), mode="bilinear")
        src = _repeat_to_batch(src, out.shape[0])
        x = max(-src.shape[-1], min(x, out.shape[-1]))
        y = max(-src.shape[-2], min(y, out.shape[-2]))
        if mask is None:
            weight = torch.ones_like(src)
        else:
            planes = mask.to(out.device).reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
            weight = F.interpolate(planes, size=tuple(src.shape[-2:]), mode="bilinear")
            weight = _repeat_to_batch(weight, src.shape[0])
        visible_h, visible_w = out.shape[-2] - y + min(0, y), out.shape[-1] - x + min(0, x)
        weight = weight[:, :, :visible_h, :visible_w]
        top, left = y, x
        bottom, right = top + src.shape[-2], left + src.shape[-1]
        region = out[..., top:bottom, left:right]
        pasted = weight * src[..., :visible_h, :visible_w] + (1 - weight) * region
        out[..., top:bottom, left:right] = pasted
        return (out.movedim(1, -1),)


class SplitImageWithAlpha:
    """RGB and ``1 - alpha`` as a MASK (a zero mask without an alpha channel), as ComfyUI."""

    CATEGORY = "mask/compositing"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "split_image_with_alpha"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",)}}

    def split_image_with_alpha(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = image[..., 3] if image.shape[-1] > 3 else torch.ones_like(image[..., 0])
        return (image[..., :3], 1.0 - alpha)


class JoinImageWithAlpha:
    """RGB plus ``1 - alpha`` (bilinear-resized to the image) as a fourth channel; the shorter
    batch decides the length, as ComfyUI."""

    CATEGORY = "mask/compositing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "join_image_with_alpha"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",), "alpha": ("MASK",)}}

    def join_image_with_alpha(
        self, image: torch.Tensor, alpha: torch.Tensor
    ) -> tuple[torch.Tensor]:
        planes = alpha.to(image.device).reshape((-1, 1, alpha.shape[-2], alpha.shape[-1]))
        resized = F.interpolate(planes, size=tuple(image.shape[1:3]), mode="bilinear").squeeze(1)
        count = min(len(image), len(resized))
        return (torch.cat((image[:count, ..., :3], (1.0 - resized[:count]).unsqueeze(-1)), -1),)


_SPACING_COLORS: dict[str, tuple[float, ...]] = {
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
}


def _pad_centre(image: torch.Tensor, dim: int, size: int, value: float) -> torch.Tensor:
    missing = size - image.shape[dim]
    if missing <= 0:
        return image
    pad = [0, 0, 0, 0]  # (C left, C right, W left, W right) for F.pad on [B, H, W, C]
    if dim == 1:
        pad += [missing // 2, missing - missing // 2]
    else:
        pad[2:4] = [missing // 2, missing - missing // 2]
    return F.pad(image, pad, value=value)


class ImageStitch:
    """image2 placed right of, below, left of or above image1, with optional spacing, as
    ComfyUI: the shorter batch repeats its last image; with ``match_image_size`` image2 is
    resized (Lanczos) to image1's height or width, else the thinner one is padded centred;
    an RGB image gets an opaque alpha to join an RGBA one."""

    CATEGORY = "image/transform"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "stitch"
    DESCRIPTION = "Stitches image2 to image1 in the given direction, with optional spacing."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image1": ("IMAGE",),
                "direction": (["right", "down", "left", "up"], {"default": "right"}),
                "match_image_size": ("BOOLEAN", {"default": True}),
                "spacing_width": ("INT", {"default": 0, "min": 0, "max": 1024, "step": 2}),
                "spacing_color": (list(_SPACING_COLORS), {"default": "white"}),
            },
            "optional": {"image2": ("IMAGE",)},
        }

    def stitch(
        self,
        image1: torch.Tensor,
        direction: str,
        match_image_size: bool,
        spacing_width: int,
        spacing_color: str,
        image2: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor]:
        if image2 is None:
            return (image1,)
        image2 = image2.to(image1.device)
        batch = max(image1.shape[0], image2.shape[0])
        image1, image2 = (
            torch.cat([i, i[-1:].repeat(batch - i.shape[0], 1, 1, 1)]) for i in (image1, image2)
        )
        horizontal = direction in ("left", "right")
        if match_image_size:
            (h1, w1), (h2, w2) = image1.shape[1:3], image2.shape[1:3]
            if horizontal:
                th, tw = h1, max(1, int(h1 * (w2 / h2)))
            else:
                tw, th = w1, max(1, int(w1 / (w2 / h2)))
            check_pixels(batch, th, tw)
            image2 = common_upscale(image2.movedim(-1, 1), tw, th, "lanczos", "disabled")
            image2 = image2.movedim(1, -1)
        else:
            # ComfyUI pads with the spacing colour when it is a grey, else with black
            value = (
                _SPACING_COLORS[spacing_color][0] if spacing_color in ("white", "black") else 0.0
            )
            dim = 1 if horizontal else 2
            size = max(image1.shape[dim], image2.shape[dim])
            image1, image2 = (_pad_centre(i, dim, size, value) for i in (image1, image2))
        channels = max(image1.shape[-1], image2.shape[-1])
        image1, image2 = (
            F.pad(i, (0, channels - i.shape[-1]), value=1.0) for i in (image1, image2)
        )
        parts = [image2, image1] if direction in ("left", "up") else [image1, image2]
        if spacing_width > 0:
            spacing_width += spacing_width % 2
            shape = list(image1.shape)
            if horizontal:
                shape[1], shape[2] = max(image1.shape[1], image2.shape[1]), spacing_width
            else:
                shape[1], shape[2] = spacing_width, max(image1.shape[2], image2.shape[2])
            spacing = torch.zeros(shape, device=image1.device, dtype=image1.dtype)
            colour = _SPACING_COLORS[spacing_color][: min(3, channels)]
            spacing[..., : len(colour)] = torch.tensor(colour, dtype=spacing.dtype)
            if channels == 4:
                spacing[..., 3] = 1.0
            parts.insert(1, spacing)
        dim = 2 if horizontal else 1
        total = sum(p.shape[dim] for p in parts)
        check_pixels(
            batch, *((parts[0].shape[1], total) if horizontal else (total, parts[0].shape[2]))
        )
        return (torch.cat(parts, dim=dim),)


class ResizeAndPadImage:
    """Fit inside target_width x target_height keeping the aspect ratio, centred on white or
    black padding, as ComfyUI (the fitted size truncated, at least 1 pixel)."""

    CATEGORY = "image/transform"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "resize_and_pad"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        side = {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}
        return {
            "required": {
                "image": ("IMAGE",),
                "target_width": ("INT", dict(side)),
                "target_height": ("INT", dict(side)),
                "padding_color": (["white", "black"],),
                "interpolation": (["area", "bicubic", "nearest-exact", "bilinear", "lanczos"],),
            }
        }

    def resize_and_pad(
        self,
        image: torch.Tensor,
        target_width: int,
        target_height: int,
        padding_color: str,
        interpolation: str,
    ) -> tuple[torch.Tensor]:
        batch, height, width, channels = image.shape
        check_pixels(batch, target_height, target_width)
        scale = min(target_width / width, target_height / height)
        new_w, new_h = max(1, int(width * scale)), max(1, int(height * scale))
        resized = common_upscale(image.movedim(-1, 1), new_w, new_h, interpolation, "disabled")
        fill = 0.0 if padding_color == "black" else 1.0
        padded = torch.full(
            (batch, channels, target_height, target_width),
            fill,
            dtype=image.dtype,
            device=image.device,
        )
        top, left = (target_height - new_h) // 2, (target_width - new_w) // 2
        padded[:, :, top : top + new_h, left : left + new_w] = resized
        return (padded.movedim(1, -1),)


class GetImageSize:
    """The image's width, height and batch size as INTs, as ComfyUI."""

    CATEGORY = "image"
    RETURN_TYPES = ("INT", "INT", "INT")
    RETURN_NAMES = ("width", "height", "batch_size")
    FUNCTION = "get_size"
    DESCRIPTION = "Returns width and height of the image, and passes it through unchanged."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",)}, "hidden": {"unique_id": "UNIQUE_ID"}}

    def get_size(self, image: torch.Tensor, unique_id: str | None = None) -> tuple[int, int, int]:
        return (int(image.shape[2]), int(image.shape[1]), int(image.shape[0]))


class ImageAddNoise:
    """Gaussian noise from ``seed`` times ``strength`` added and clipped to 0..1, as ComfyUI:
    the noise is drawn on the CPU with the seed (from a private generator, where ComfyUI
    reseeds torch's global one), so it is the same on every device. A seed gives the same noise
    every frame, so the last noise is kept on the frame's device and reused."""

    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "repeat"

    def __init__(self) -> None:
        self._noise: tuple[tuple[Any, ...], torch.Tensor] | None = None

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        seed = {
            "default": 0,
            "min": 0,
            "max": 0xFFFFFFFFFFFFFFFF,
            "control_after_generate": True,
            "tooltip": "The random seed used for creating the noise.",
        }
        return {
            "required": {
                "image": ("IMAGE",),
                "seed": ("INT", seed),
                "strength": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
            }
        }

    def repeat(self, image: torch.Tensor, seed: int, strength: float) -> tuple[torch.Tensor]:
        key = (seed, tuple(image.shape), image.device, image.dtype)
        if self._noise is None or self._noise[0] != key:
            generator = torch.Generator(device="cpu").manual_seed(seed)
            noise = torch.randn(image.size(), generator=generator, device="cpu").to(image)
            self._noise = (key, noise)
        return (torch.clip(image + strength * self._noise[1], min=0.0, max=1.0),)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "ImageCompositeMasked": ImageCompositeMasked,
    "SplitImageWithAlpha": SplitImageWithAlpha,
    "JoinImageWithAlpha": JoinImageWithAlpha,
    "ImageStitch": ImageStitch,
    "ResizeAndPadImage": ResizeAndPadImage,
    "GetImageSize": GetImageSize,
    "ImageAddNoise": ImageAddNoise,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "ImageCompositeMasked": "ImageCompositeMasked",
    "SplitImageWithAlpha": "Split Image with Alpha",
    "JoinImageWithAlpha": "Join Image with Alpha",
    "ImageStitch": "Image Stitch",
    "ResizeAndPadImage": "ResizeAndPadImage",
    "GetImageSize": "Get Image Size",
    "ImageAddNoise": "ImageAddNoise",
}
