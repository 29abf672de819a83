"""Conversions between PyAV video frames and ComfyUI IMAGE tensors, plus preview JPEGs.

An IMAGE is a torch float32 tensor ``[B, H, W, C]`` with values in 0..1 (ComfyUI's layout).
A frame from aiortc is usually ``yuv420p``; PyAV's swscale does the colour conversion (and
any scaling) in one pass, which is cheaper than doing either in torch.

This module knows nothing about sessions or threads; every function is pure and may run on
any thread (the processing worker calls them, never the event loop).
"""

from __future__ import annotations

import io

import av
import numpy as np
import torch
from PIL import Image

try:  # simplejpeg (libjpeg-turbo) is ~20 % faster than Pillow here; optional.
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - depends on the environment
    _simplejpeg = None

__all__ = [
    "ImageLike",
    "encode_preview_jpeg",
    "frame_to_image",
    "image_to_frame",
    "image_to_ndarray",
    "preview_size",
    "to_pil",
]

ImageLike = torch.Tensor | np.ndarray | av.VideoFrame
"""Anything the preview helpers accept: an IMAGE tensor, an HxWx3 uint8 array or a frame."""


def frame_to_image(frame: av.VideoFrame, device: torch.device | str | None = None) -> torch.Tensor:
    """Decode ``frame`` into an IMAGE ``[1, H, W, 3]`` float32 0..1 on ``device``.

    The uint8 array moves to the device before the float conversion so a GPU copy carries
    a quarter of the bytes.
    """
    rgb = frame.to_ndarray(format="rgb24")
    pixels = torch.from_numpy(rgb).unsqueeze(0)
    if device is not None:
        pixels = pixels.to(device)
    return pixels.to(torch.float32).mul_(1.0 / 255.0)


def _as_hwc(image: torch.Tensor) -> torch.Tensor:
    """Reduce an IMAGE to one ``[H, W, 3]`` tensor (first of the batch, grey expanded)."""
    if image.dim() == 4:
        image = image[0]
    if image.dim() != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"expected an IMAGE [B,H,W,C] or [H,W,C] with C in (1, 3, 4), "
            f"got shape {tuple(image.shape)}"
        )
    if image.shape[-1] == 1:
        image = image.expand(-1, -1, 3)
    elif image.shape[-1] == 4:  # RGBA from some nodes: drop alpha, as ComfyUI's savers do
        image = image[..., :3]
    return image


def image_to_ndarray(image: torch.Tensor) -> np.ndarray:
    """IMAGE -> C-contiguous ``H x W x 3`` uint8 array on the CPU (first image of a batch).

    Quantises on the tensor's device (so only uint8 crosses to the host) and rounds rather
    than truncates, so a frame -> image -> frame round trip returns the same bytes.
    """
    hwc = _as_hwc(image)
    if hwc.dtype == torch.uint8:
        quant = hwc
    else:
        quant = hwc.mul(255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)
    return np.ascontiguousarray(quant.cpu().numpy())


def image_to_frame(image: torch.Tensor, like: av.VideoFrame | None = None) -> av.VideoFrame:
    """IMAGE -> ``rgb24`` VideoFrame; ``pts`` and ``time_base`` are copied from ``like``."""
    frame = av.VideoFrame.from_ndarray(image_to_ndarray(image), format="rgb24")
    if like is not None:
        frame.pts = like.pts
        if like.time_base is not None:  # PyAV refuses None for time_base
            frame.time_base = like.time_base
    return frame


def preview_size(width: int, height: int, max_width: int) -> tuple[int, int]:
    """Target size that keeps the aspect ratio and is at most ``max_width`` wide (never up)."""
    if max_width <= 0 or width <= max_width:
        return width, height
    return max_width, max(1, round(height * max_width / width))


def _to_frame(image: ImageLike) -> av.VideoFrame:
    if isinstance(image, av.VideoFrame):
        return image
    if isinstance(image, torch.Tensor):
        return av.VideoFrame.from_ndarray(image_to_ndarray(image), format="rgb24")
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(
            f"expected an HxWx3 uint8 array, got shape {array.shape} dtype {array.dtype}"
        )
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")


def _downscaled_rgb(image: ImageLike, max_width: int) -> np.ndarray:
    """Scale and convert in one swscale pass; AREA is both the fastest and the least aliased
    choice measured for 2-4x reductions (see benchmarks/stages.py)."""
    frame = _to_frame(image)
    width, height = preview_size(frame.width, frame.height, max_width)
    if (width, height) == (frame.width, frame.height) and frame.format.name == "rgb24":
        return np.ascontiguousarray(frame.to_ndarray())
    small = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA")
    return np.ascontiguousarray(small.to_ndarray())


def encode_preview_jpeg(image: ImageLike, max_width: int = 640, quality: int = 80) -> bytes:
    """Downscale to at most ``max_width`` pixels wide, then encode a baseline JPEG.

    Accepts an IMAGE tensor, a uint8 HxWx3 array or an ``av.VideoFrame`` (any pixel
    format). Uses simplejpeg when it is importable, Pillow otherwise.
    """
    rgb = _downscaled_rgb(image, max_width)
    if _simplejpeg is not None:
        return _simplejpeg.encode_jpeg(
            rgb, quality=quality, colorspace="RGB", colorsubsampling="420"
        )
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def to_pil(image: ImageLike) -> Image.Image:
    """An RGB ``PIL.Image`` of an IMAGE tensor (first of a batch), array or frame."""
    if isinstance(image, av.VideoFrame):
        return image.to_image()
    if isinstance(image, torch.Tensor):
        return Image.fromarray(image_to_ndarray(image))
    return Image.fromarray(np.ascontiguousarray(np.asarray(image, dtype=np.uint8)))
