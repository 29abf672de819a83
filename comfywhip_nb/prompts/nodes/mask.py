"""Mask nodes (``comfy_extras/nodes_mask.py``). A MASK is float ``[B, H, W]`` in 0..1.

Names, inputs and results are ComfyUI 0.3.75's; GrowMask's scipy grey dilation and erosion are
done with torch max/min over the same 3x3 footprint, so masks stay on their device.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .image import MAX_RESOLUTION, check_pixels

_CHANNELS = ["red", "green", "blue", "alpha"]


class ImageToMask:
    """One colour channel of every image in the batch as a MASK, as ComfyUI."""

    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "image_to_mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",), "channel": (list(_CHANNELS),)}}

    def image_to_mask(self, image: torch.Tensor, channel: str) -> tuple[torch.Tensor]:
        index = _CHANNELS.index(channel)
        if index >= image.shape[-1]:
            raise ValueError(f"channel {channel!r}: the image has only {image.shape[-1]} channels")
        return (image[:, :, :, index],)


class MaskToImage:
    """A MASK repeated into three channels (a gray IMAGE), as ComfyUI."""

    CATEGORY = "mask"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "mask_to_image"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"mask": ("MASK",)}}

    def mask_to_image(self, mask: torch.Tensor) -> tuple[torch.Tensor]:
        planes = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1)
        return (planes.expand(-1, -1, -1, 3),)


class InvertMask:
    """``1 - mask``, as ComfyUI."""

    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "invert"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"mask": ("MASK",)}}

    def invert(self, mask: torch.Tensor) -> tuple[torch.Tensor]:
        return (1.0 - mask,)


class ThresholdMask:
    """1 where ``mask > value`` (strictly), else 0, as ComfyUI."""

    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "image_to_mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "mask": ("MASK",),
                "value": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
            }
        }

    def image_to_mask(self, mask: torch.Tensor, value: float) -> tuple[torch.Tensor]:
        return ((mask > value).float(),)


def _planes(mask: torch.Tensor) -> torch.Tensor:
    return mask.reshape((-1, mask.shape[-2], mask.shape[-1]))


class ImageColorToMask:
    """1 where the pixel's 0xRRGGBB (rounded from 0..1) equals ``color``, else 0, as ComfyUI."""

    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "image_to_mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        color = {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"}
        return {"required": {"image": ("IMAGE",), "color": ("INT", color)}}

    def image_to_mask(self, image: torch.Tensor, color: int) -> tuple[torch.Tensor]:
        rgb = (image[..., :3].clamp(0, 1) * 255.0).round().to(torch.int64)
        packed = (rgb[..., 0] << 16) + (rgb[..., 1] << 8) + rgb[..., 2]
        return ((packed == color).float(),)


class SolidMask:
    """A ``height`` x ``width`` mask filled with ``value`` (batch of one), as ComfyUI."""

    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "solid"
    #: The executor passes the prompt's device to __init__.
    STREAM_DEVICE = True

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        side = {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}
        return {
            "required": {
                "value": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
                "width": ("INT", dict(side)),
                "height": ("INT", dict(side)),
            }
        }

    def solid(self, value: float, width: int, height: int) -> tuple[torch.Tensor]:
        check_pixels(1, height, width)
        return (torch.full((1, height, width), value, dtype=torch.float32, device=self.device),)


_OPERATIONS = ["multiply", "add", "subtract", "and", "or", "xor"]


class MaskComposite:
    """``source`` combined into ``destination`` at (x, y) with ``operation``, clamped to 0..1;
    the logical operations round both to 0/1 first. As ComfyUI."""

    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "combine"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        pos = {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1}
        return {
            "required": {
                "destination": ("MASK",),
                "source": ("MASK",),
                "x": ("INT", dict(pos)),
                "y": ("INT", dict(pos)),
                "operation": (list(_OPERATIONS),),
            }
        }

    def combine(
        self, destination: torch.Tensor, source: torch.Tensor, x: int, y: int, operation: str
    ) -> tuple[torch.Tensor]:
        output = _planes(destination).clone()
        source = _planes(source).to(output.device)
        right = min(x + source.shape[-1], output.shape[-1])
        bottom = min(y + source.shape[-2], output.shape[-2])
        if right > x and bottom > y:
            src = source[:, : bottom - y, : right - x]
            dst = output[:, y:bottom, x:right]
            if operation == "multiply":
                result = dst * src
            elif operation == "add":
                result = dst + src
            elif operation == "subtract":
                result = dst - src
            else:
                a, b = dst.round().bool(), src.round().bool()
                logic = {"and": torch.logical_and, "or": torch.logical_or}
                result = logic.get(operation, torch.logical_xor)(a, b).float()
            output[:, y:bottom, x:right] = result
        return (output.clamp(0.0, 1.0),)


def _ramp(count: int, device: torch.device) -> torch.Tensor:
    return torch.arange(1, count + 1, device=device, dtype=torch.float64) / count


class FeatherMask:
    """Fade the mask's edges linearly over ``left``/``top``/``right``/``bottom`` pixels, with
    ComfyUI's exact indexing (its right and bottom ramps start at index 0, so the first column
    and row also take the ramp's first step)."""

    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "feather"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        side = {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1}
        names = ("left", "top", "right", "bottom")
        return {"required": {"mask": ("MASK",), **{n: ("INT", dict(side)) for n in names}}}

    @staticmethod
    def _factors(size: int, start: int, end: int, device: torch.device) -> torch.Tensor:
        factors = torch.ones(size, dtype=torch.float64, device=device)
        start, end = min(start, size), min(end, size)
        if start:
            factors[:start] *= _ramp(start, device)
        if end:
            index = (-torch.arange(end, device=device)) % size  # 0, -1, -2, ... as ComfyUI
            factors[index] *= _ramp(end, device)
        return factors

    def feather(
        self, mask: torch.Tensor, left: int, top: int, right: int, bottom: int
    ) -> tuple[torch.Tensor]:
        output = _planes(mask)
        h, w = output.shape[-2:]
        cols = self._factors(w, left, right, output.device).to(output.dtype)
        rows = self._factors(h, top, bottom, output.device).to(output.dtype)
        return (output * cols.view(1, 1, w) * rows.view(1, h, 1),)


class GrowMask:
    """Grow (``expand`` > 0) or shrink the mask by one pixel per step: grey dilation/erosion
    over a 3x3 footprint, a cross when ``tapered_corners``, with edge pixels repeated past the
    border (scipy's "reflect" for a 1-pixel reach), as ComfyUI."""

    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "expand_mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "mask": ("MASK",),
                "expand": (
                    "INT",
                    {"default": 0, "min": -MAX_RESOLUTION, "max": MAX_RESOLUTION, "step": 1},
                ),
                "tapered_corners": ("BOOLEAN", {"default": True}),
            }
        }

    def expand_mask(
        self, mask: torch.Tensor, expand: int, tapered_corners: bool
    ) -> tuple[torch.Tensor]:
        out = _planes(mask).unsqueeze(1)
        h, w = out.shape[-2:]
        sign = 1.0 if expand > 0 else -1.0
        out = out * sign  # erosion is the dilation of the negated mask
        steps = min(abs(expand), h + w)  # after h + w steps nothing changes any more
        if not tapered_corners and steps:  # square footprint: n steps are one (2n+1) window
            padded = F.pad(out, (steps, steps, steps, steps), mode="replicate")
            out = F.max_pool2d(padded, 2 * steps + 1, stride=1)
        else:
            for _ in range(steps):
                p = F.pad(out, (1, 1, 1, 1), mode="replicate")
                for n in (p[..., 1:-1, :-2], p[..., 1:-1, 2:], p[..., :-2, 1:-1], p[..., 2:, 1:-1]):
                    out = torch.maximum(out, n)
        return ((out * sign).squeeze(1),)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "ImageToMask": ImageToMask,
    "MaskToImage": MaskToImage,
    "InvertMask": InvertMask,
    "ThresholdMask": ThresholdMask,
    "ImageColorToMask": ImageColorToMask,
    "SolidMask": SolidMask,
    "MaskComposite": MaskComposite,
    "FeatherMask": FeatherMask,
    "GrowMask": GrowMask,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "ImageToMask": "Convert Image to Mask",
    "MaskToImage": "Convert Mask to Image",
    "InvertMask": "InvertMask",
    "ThresholdMask": "ThresholdMask",
    "ImageColorToMask": "ImageColorToMask",
    "SolidMask": "SolidMask",
    "MaskComposite": "MaskComposite",
    "FeatherMask": "FeatherMask",
    "GrowMask": "GrowMask",
}
