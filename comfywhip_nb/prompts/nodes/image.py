"""Geometry and batch nodes: invert, scale, crop, flip, rotate, empty image, batches.

Names, inputs, defaults, ranges and size rounding follow ComfyUI's ``nodes.py`` and
``comfy_extras/nodes_images.py``/``nodes_post_processing.py``; each docstring says where we
differ. Nodes that make images bigger check a pixel budget first, so one prompt cannot ask
the server for terabytes (ComfyUI itself would try and fail).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["MAX_OUTPUT_PIXELS", "MAX_RESOLUTION", "check_pixels", "common_upscale"]

#: ComfyUI's nodes.MAX_RESOLUTION.
MAX_RESOLUTION = 16384
#: Most pixels (batch x height x width) one node may produce: 8K x 8K, or 32 frames of 1080p.
MAX_OUTPUT_PIXELS = 1 << 26

UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
CROP_METHODS = ["disabled", "center"]


def check_pixels(batch: int, height: int, width: int) -> None:
    """Refuse outputs over MAX_OUTPUT_PIXELS before allocating them."""
    total = int(batch) * int(height) * int(width)
    if total > MAX_OUTPUT_PIXELS:
        raise ValueError(
            f"output of {batch}x{height}x{width} = {total} pixels is over "
            f"the limit of {MAX_OUTPUT_PIXELS}"
        )


def _lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Pillow's Lanczos through uint8 on the CPU, as ComfyUI's ``comfy.utils.lanczos``: RGB and
    RGBA images resize as one Pillow image (RGBA with Pillow's premultiplied alpha); other
    channel counts, which ComfyUI cannot resize, plane by plane."""
    out = []
    for image in samples:  # [C, H, W]
        arr = np.clip(255.0 * image.movedim(0, -1).float().cpu().numpy(), 0, 255).astype(np.uint8)
        whole = arr.shape[-1] in (3, 4)
        planes = [arr] if whole else [arr[..., c] for c in range(arr.shape[-1])]
        resized = [
            np.asarray(Image.fromarray(p).resize((width, height), Image.Resampling.LANCZOS))
            for p in planes
        ]
        stacked = resized[0] if whole else np.stack(resized, axis=-1)
        out.append(torch.from_numpy(stacked.astype(np.float32) / 255.0).movedim(-1, 0))
    return torch.stack(out).to(samples.device, samples.dtype)


def common_upscale(
    samples: torch.Tensor, width: int, height: int, method: str, crop: str
) -> torch.Tensor:
    """ComfyUI's ``comfy.utils.common_upscale`` on ``[B, C, H, W]``: optional centre crop to the
    target aspect (offsets rounded like ComfyUI), then ``F.interpolate`` with the method's own
    torch defaults (no antialias, ``align_corners=False``) or Pillow Lanczos. Unlike ComfyUI a
    crop never shrinks an axis to zero pixels."""
    if crop == "center":
        old_w, old_h = samples.shape[-1], samples.shape[-2]
        old_aspect, new_aspect = old_w / old_h, width / height
        x = y = 0
        if old_aspect > new_aspect:
            x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
        elif old_aspect < new_aspect:
            y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
        keep_h, keep_w = max(1, old_h - 2 * y), max(1, old_w - 2 * x)
        samples = samples.narrow(-2, min(y, old_h - keep_h), keep_h).narrow(
            -1, min(x, old_w - keep_w), keep_w
        )
    if method == "lanczos":
        return _lanczos(samples, width, height)
    return F.interpolate(samples, size=(height, width), mode=method)


def _scale(image: torch.Tensor, width: int, height: int, method: str, crop: str) -> torch.Tensor:
    check_pixels(image.shape[0], height, width)
    return common_upscale(image.movedim(-1, 1), width, height, method, crop).movedim(1, -1)


class ImageInvert:
    """``1 - image``, as ComfyUI."""

    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "invert"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",)}}

    def invert(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        return (1.0 - image,)


class ImageScale:
    """Resize to width x height. As ComfyUI: 0 for both keeps the image; 0 for one keeps the
    aspect ratio (``max(1, round(...))``); crop "center" cuts to the target aspect first."""

    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        size = {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}
        return {
            "required": {
                "image": ("IMAGE",),
                "upscale_method": (UPSCALE_METHODS,),
                "width": ("INT", dict(size)),
                "height": ("INT", dict(size)),
                "crop": (CROP_METHODS,),
            }
        }

    def upscale(
        self, image: torch.Tensor, upscale_method: str, width: int, height: int, crop: str
    ) -> tuple[torch.Tensor]:
        if width == 0 and height == 0:
            return (image,)
        h, w = image.shape[1], image.shape[2]
        if width == 0:
            width = max(1, round(w * height / h))
        elif height == 0:
            height = max(1, round(h * width / w))
        return (_scale(image, width, height, upscale_method, crop),)


class ImageScaleBy:
    """Resize by a factor; sizes are ``round(side * scale_by)`` as ComfyUI, but at least 1."""

    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "upscale_method": (UPSCALE_METHODS,),
                "scale_by": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}),
            }
        }

    def upscale(
        self, image: torch.Tensor, upscale_method: str, scale_by: float
    ) -> tuple[torch.Tensor]:
        width = max(1, round(image.shape[2] * scale_by))
        height = max(1, round(image.shape[1] * scale_by))
        return (_scale(image, width, height, upscale_method, "disabled"),)


class ImageScaleToTotalPixels:
    """Resize to about ``megapixels * 1024 * 1024`` pixels keeping the aspect ratio, sides
    rounded as ComfyUI 0.3.75 (which has no ``resolution_steps`` input yet; a prompt that
    sets it still loads, the input is ignored), but at least 1 pixel."""

    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "upscale_method": (UPSCALE_METHODS,),
                "megapixels": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 16.0, "step": 0.01}),
            }
        }

    def upscale(
        self, image: torch.Tensor, upscale_method: str, megapixels: float
    ) -> tuple[torch.Tensor]:
        h, w = image.shape[1], image.shape[2]
        scale_by = math.sqrt(int(megapixels * 1024 * 1024) / (w * h))
        width, height = max(1, round(w * scale_by)), max(1, round(h * scale_by))
        return (_scale(image, width, height, upscale_method, "disabled"),)


class ImageCrop:
    """``image[:, y:y+height, x:x+width]`` with x and y clamped to the last column/row, as
    ComfyUI; a crop reaching past the edge is cut short, not padded."""

    CATEGORY = "image/transform"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "crop"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "width": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
                "height": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
                "x": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
                "y": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
            }
        }

    def crop(
        self, image: torch.Tensor, width: int, height: int, x: int, y: int
    ) -> tuple[torch.Tensor]:
        x = min(x, image.shape[2] - 1)
        y = min(y, image.shape[1] - 1)
        return (image[:, y : y + height, x : x + width, :],)


class ImageFlip:
    """ "x-axis: vertically" flips rows (upside down), "y-axis: horizontally" flips columns
    (mirror), ComfyUI's strings and meaning."""

    CATEGORY = "image/transform"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "flip"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "flip_method": (["x-axis: vertically", "y-axis: horizontally"],),
            }
        }

    def flip(self, image: torch.Tensor, flip_method: str) -> tuple[torch.Tensor]:
        return (torch.flip(image, dims=[1] if flip_method.startswith("x") else [2]),)


class ImageRotate:
    """Clockwise rotation by quarter turns (``torch.rot90(dims=[2, 1])``), as ComfyUI."""

    CATEGORY = "image/transform"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "rotate"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        choices = ["none", "90 degrees", "180 degrees", "270 degrees"]
        return {"required": {"image": ("IMAGE",), "rotation": (choices,)}}

    def rotate(self, image: torch.Tensor, rotation: str) -> tuple[torch.Tensor]:
        turns = {"90": 1, "180": 2, "270": 3}.get(rotation.split(" ")[0], 0)
        return (torch.rot90(image, k=turns, dims=[2, 1]),)


class EmptyImage:
    """A solid ``color`` (0xRRGGBB) image. Created on the prompt's device (ComfyUI's
    ``__init__(device)``); validation rejects sizes over the pixel budget."""

    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "generate"
    #: The executor passes the prompt's device to __init__.
    STREAM_DEVICE = True

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        side = {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}
        return {
            "required": {
                "width": ("INT", dict(side)),
                "height": ("INT", dict(side)),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
                "color": (
                    "INT",
                    {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"},
                ),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(
        cls, width: int = 512, height: int = 512, batch_size: int = 1
    ) -> bool | str:
        try:
            check_pixels(batch_size, height, width)
        except ValueError as exc:
            return str(exc)
        return True

    def generate(
        self, width: int, height: int, batch_size: int = 1, color: int = 0
    ) -> tuple[torch.Tensor]:
        check_pixels(batch_size, height, width)
        rgb = torch.tensor(
            [((color >> 16) & 0xFF) / 0xFF, ((color >> 8) & 0xFF) / 0xFF, (color & 0xFF) / 0xFF],
            dtype=torch.float32,
            device=self.device,
        )
        return (rgb.expand(batch_size, height, width, 3).clone(),)


def _alpha_pad(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ComfyUI's ImageBatch: the image with fewer channels gets one more, set to 1 (an opaque
    alpha). Channel counts still unequal after that (1 and 3) cannot be batched."""
    ca, cb = a.shape[-1], b.shape[-1]
    if ca < cb:
        a = F.pad(a, (0, 1), value=1.0)
    elif cb < ca:
        b = F.pad(b, (0, 1), value=1.0)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"cannot batch images with {ca} and {cb} channels (ComfyUI adds at most an alpha)"
        )
    return a, b


class ImageBatch:
    """Concatenate two batches; image2 is resized to image1 (bilinear, centre crop) and an RGB
    image gets an opaque alpha to join an RGBA one, as ComfyUI; other channel mixes raise."""

    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "batch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image1": ("IMAGE",), "image2": ("IMAGE",)}}

    def batch(self, image1: torch.Tensor, image2: torch.Tensor) -> tuple[torch.Tensor]:
        image1, image2 = _alpha_pad(image1, image2.to(image1.device))
        check_pixels(image1.shape[0] + image2.shape[0], image1.shape[1], image1.shape[2])
        if image1.shape[1:] != image2.shape[1:]:
            image2 = _scale(image2, image1.shape[2], image1.shape[1], "bilinear", "center")
        return (torch.cat((image1, image2), dim=0),)


class RepeatImageBatch:
    """The batch repeated ``amount`` times (``image.repeat``), as ComfyUI."""

    CATEGORY = "image/batch"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "repeat"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "amount": ("INT", {"default": 1, "min": 1, "max": 4096}),
            }
        }

    def repeat(self, image: torch.Tensor, amount: int) -> tuple[torch.Tensor]:
        check_pixels(image.shape[0] * amount, image.shape[1], image.shape[2])
        return (image.repeat((amount, 1, 1, 1)),)


class ImageFromBatch:
    """``length`` images from ``batch_index``, both clamped to the batch, as ComfyUI."""

    CATEGORY = "image/batch"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "frombatch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "batch_index": ("INT", {"default": 0, "min": 0, "max": 4095}),
                "length": ("INT", {"default": 1, "min": 1, "max": 4096}),
            }
        }

    def frombatch(self, image: torch.Tensor, batch_index: int, length: int) -> tuple[torch.Tensor]:
        batch_index = min(image.shape[0] - 1, batch_index)
        length = min(image.shape[0] - batch_index, length)
        return (image[batch_index : batch_index + length].clone(),)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "ImageInvert": ImageInvert,
    "ImageScale": ImageScale,
    "ImageScaleBy": ImageScaleBy,
    "ImageScaleToTotalPixels": ImageScaleToTotalPixels,
    "ImageCrop": ImageCrop,
    "ImageFlip": ImageFlip,
    "ImageRotate": ImageRotate,
    "EmptyImage": EmptyImage,
    "ImageBatch": ImageBatch,
    "RepeatImageBatch": RepeatImageBatch,
    "ImageFromBatch": ImageFromBatch,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "ImageInvert": "Invert Image",
    "ImageScale": "Upscale Image",
    "ImageScaleBy": "Upscale Image By",
    "ImageScaleToTotalPixels": "Scale Image to Total Pixels",
    "ImageCrop": "Image Crop",
    "ImageFlip": "ImageFlip",
    "ImageRotate": "ImageRotate",
    "EmptyImage": "EmptyImage",
    "ImageBatch": "Batch Images",
    "RepeatImageBatch": "RepeatImageBatch",
    "ImageFromBatch": "ImageFromBatch",
}
