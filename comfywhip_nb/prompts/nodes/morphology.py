"""Morphology and YUV (``comfy_extras/nodes_morphology.py``): kornia's operators, as ComfyUI."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from kornia import color, morphology

#: Most element operations (pixels x channels x kernel cells) one morphology pass may take:
#: a 720p frame with a 150x150 kernel, a few seconds on a CPU.
MAX_WORK = 1 << 36

_OPERATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "erode": morphology.erosion,
    "dilate": morphology.dilation,
    "open": morphology.opening,
    "close": morphology.closing,
    "gradient": morphology.gradient,
    "bottom_hat": morphology.bottom_hat,
    "top_hat": morphology.top_hat,
}


class Morphology:
    """kornia's erosion, dilation, opening, closing, gradient and hats with a square
    ``kernel_size`` kernel of ones, on the frame's own device. kornia's "shift" engine on every
    device: the result ComfyUI gets (kornia picks it on the CPU; its CUDA "unfold" engine gives
    equal results) without unfold's ``kernel_size**2`` copies of the frame, which for a large
    kernel would exhaust the GPU. Kernels whose work passes MAX_WORK are refused."""

    CATEGORY = "image/postprocessing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "process"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "operation": (list(_OPERATIONS),),
                "kernel_size": ("INT", {"default": 3, "min": 3, "max": 999, "step": 1}),
            }
        }

    def process(self, image: torch.Tensor, operation: str, kernel_size: int) -> tuple[torch.Tensor]:
        work = image.numel() * kernel_size * kernel_size
        if work > MAX_WORK:
            raise ValueError(
                f"kernel_size {kernel_size} on a {image.shape[2]}x{image.shape[1]} image is "
                f"{work:.2e} operations per pass, over the limit of {MAX_WORK:.2e}: "
                "use a smaller kernel"
            )
        kernel = torch.ones(kernel_size, kernel_size, device=image.device, dtype=image.dtype)
        op = functools.partial(_OPERATIONS[operation], engine="shift")
        return (op(image.movedim(-1, 1), kernel).movedim(1, -1),)


class ImageRGBToYUV:
    """kornia's RGB to YCbCr; Y, U and V each come out as a gray IMAGE, as ComfyUI."""

    CATEGORY = "image/batch"
    RETURN_TYPES = ("IMAGE", "IMAGE", "IMAGE")
    RETURN_NAMES = ("Y", "U", "V")
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",)}}

    def execute(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = color.rgb_to_ycbcr(image.movedim(-1, 1)).movedim(1, -1)
        return tuple(out[..., i : i + 1].expand_as(image) for i in range(3))  # type: ignore[return-value]


class ImageYUVToRGB:
    """The channel means of Y, U and V back to RGB with kornia's YCbCr to RGB, as ComfyUI."""

    CATEGORY = "image/batch"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"Y": ("IMAGE",), "U": ("IMAGE",), "V": ("IMAGE",)}}

    def execute(self, Y: torch.Tensor, U: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor]:
        if not Y.shape[:3] == U.shape[:3] == V.shape[:3]:
            sizes = ", ".join(str(tuple(p.shape[:3])) for p in (Y, U, V))
            raise ValueError(f"Y, U and V must have the same batch and size; got {sizes}")
        planes = [p.mean(dim=-1, keepdim=True) for p in (Y, U, V)]
        yuv = torch.cat([planes[0], planes[1].to(Y.device), planes[2].to(Y.device)], dim=-1)
        return (color.ycbcr_to_rgb(yuv.movedim(-1, 1)).movedim(1, -1),)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "Morphology": Morphology,
    "ImageRGBToYUV": ImageRGBToYUV,
    "ImageYUVToRGB": ImageYUVToRGB,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "Morphology": "ImageMorphology",
    "ImageRGBToYUV": "ImageRGBToYUV",
    "ImageYUVToRGB": "ImageYUVToRGB",
}
