"""Mask nodes (``comfy_extras/nodes_mask.py``). A MASK is float ``[B, H, W]`` in 0..1."""

from __future__ import annotations

from typing import Any

import torch

_CHANNELS = ["red", "green", "blue"]


class ImageToMask:
    """One colour channel of every image in the batch as a MASK, as ComfyUI."""

    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "image_to_mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",), "channel": (list(_CHANNELS),)}}

    def image_to_mask(self, image: torch.Tensor, channel: str) -> tuple[torch.Tensor]:
        return (image[:, :, :, _CHANNELS.index(channel)],)


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


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "ImageToMask": ImageToMask,
    "MaskToImage": MaskToImage,
    "InvertMask": InvertMask,
    "ThresholdMask": ThresholdMask,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "ImageToMask": "Convert Image to Mask",
    "MaskToImage": "Convert Mask to Image",
    "InvertMask": "InvertMask",
    "ThresholdMask": "ThresholdMask",
}
