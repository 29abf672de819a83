"""Conversions between PyAV video frames and ComfyUI IMAGE tensors, plus preview JPEGs.

An IMAGE is a torch float32 tensor ``[B, H, W, C]`` with values in 0..1 (ComfyUI's layout).
A frame from aiortc is usually ``yuv420p``; PyAV's swscale does the colour conversion (and
any scaling) in one pass, which is cheaper than doing either in torch.

This module knows nothing about sessions; every function may run on any thread (the
processing worker calls them, never the event loop). The one piece of state is a swscale
context cached per thread: ``frame.reformat()`` builds a new one for every new frame object,
which added 0.1-0.3 ms (30-80 %) to each 480p/720p conversion measured here. The cached
context re-initialises itself when the size or format changes, so nothing is keyed on size.
"""

from __future__ import annotations

import io
import threading
from typing import Any

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter
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
    "reformat",
    "to_pil",
    "to_yuv420p",
]

ImageLike = torch.Tensor | np.ndarray | av.VideoFrame
"""Anything the preview helpers accept: an IMAGE tensor, an HxWx3 uint8 array or a frame."""

_local = threading.local()


def reformat(frame: av.VideoFrame, **kwargs: Any) -> av.VideoFrame:
    """``frame.reformat(**kwargs)`` through this thread's cached swscale context.

    Single-threaded swscale (``threads=1``): decode and processing already share the cores.
    Returns ``frame`` itself when nothing needs converting; pts/time_base are kept.
    """
    reformatter = getattr(_local, "reformatter", None)
    if reformatter is None:
        reformatter = _local.reformatter = VideoReformatter()
    try:
        return reformatter.reformat(frame, threads=1, **kwargs)
    except TypeError:  # an older PyAV without ``threads``
        return reformatter.reformat(frame, **kwargs)


def to_yuv420p(frame: av.VideoFrame) -> av.VideoFrame:
    """The frame as yuv420p (what VP8/H264 encoders take), via the cached context; an
    encoder given rgb24 would build a new swscale context for every frame."""
    return reformat(frame, format="yuv420p")


def frame_to_image(frame: av.VideoFrame, device: torch.device | str | None = None) -> torch.Tensor:
    """Decode ``frame`` into an IMAGE ``[1, H, W, 3]`` float32 0..1 on ``device``.

    For a GPU the uint8 array crosses first (a quarter of the bytes) and is converted there;
    on the CPU numpy's uint8 -> float32 cast is the faster one (benchmarks/stages.py).
    """
    rgb = reformat(frame, format="rgb24").to_ndarray()
    if device is None or torch.device(device).type == "cpu":
        return torch.from_numpy(rgb.astype(np.float32)).unsqueeze(0).mul_(1.0 / 255.0)
    pixels = torch.from_numpy(rgb).unsqueeze(0).to(device)
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

    Rounds rather than truncates, so frame -> image -> frame returns the same bytes. On a
    GPU it quantises there (only uint8 crosses); on the CPU the float -> uint8 cast is done
    by numpy, ~2.5x faster than torch's ``.to(torch.uint8)`` measured here.
    """
    hwc = _as_hwc(image)
    if hwc.dtype == torch.uint8:
        return np.ascontiguousarray(hwc.cpu().numpy())
    scaled = hwc.detach().to(torch.float32).mul(255.0).add_(0.5).clamp_(0.0, 255.0)
    if scaled.device.type != "cpu":
        return np.ascontiguousarray(scaled.to(torch.uint8).cpu().numpy())
    with np.errstate(invalid="ignore"):  # NaN from a prompt becomes 0, without a warning
        return np.ascontiguousarray(scaled.numpy().astype(np.uint8))


def _scratch(name: str, shape: tuple[int, ...], make: Any) -> Any:
    """A per-thread buffer reused while the shape stays the same.

    A fresh 720p float frame is 11 MB: allocating it anew for every frame cost thousands of
    page faults per frame (about 10 % more CPU per frame than a raw loop in
    ``comfywhip bench``). Only temporaries whose contents are copied out live here.
    """
    buffers = getattr(_local, "scratch", None)
    if buffers is None:
        buffers = _local.scratch = {}
    buffer = buffers.get(name)
    if buffer is None or tuple(buffer.shape) != shape:
        buffer = buffers[name] = make(shape)
    return buffer


def _quantized_scratch(image: torch.Tensor) -> np.ndarray:
    """Like ``image_to_ndarray`` but into this thread's scratch buffer (CPU float only);
    the caller must copy the result out before the next call on this thread."""
    hwc = _as_hwc(image)
    if hwc.device.type != "cpu" or hwc.dtype != torch.float32 or hwc.shape[-1] != 3:
        return image_to_ndarray(image)
    shape = tuple(hwc.shape)
    scaled = _scratch("scaled", shape, lambda s: torch.empty(s, dtype=torch.float32))
    torch.mul(hwc, 255.0, out=scaled).add_(0.5).clamp_(0.0, 255.0)
    pixels = _scratch("pixels", shape, lambda s: np.empty(s, dtype=np.uint8))
    with np.errstate(invalid="ignore"):  # NaN from a prompt becomes 0, without a warning
        np.copyto(pixels, scaled.numpy(), casting="unsafe")
    return pixels


def image_to_frame(image: torch.Tensor, like: av.VideoFrame | None = None) -> av.VideoFrame:
    """IMAGE -> ``rgb24`` VideoFrame; ``pts`` and ``time_base`` are copied from ``like``."""
    # from_ndarray copies the pixels into the frame, so a reused scratch buffer is safe here
    frame = av.VideoFrame.from_ndarray(_quantized_scratch(image), format="rgb24")
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


def _downscaled(frame: av.VideoFrame, max_width: int, fmt: str) -> av.VideoFrame:
    """Scale and convert in one swscale pass. Of swscale's filters and Pillow's resizers, AREA
    measured the fastest that does not alias (480p/720p down to 640 or 320 wide)."""
    width, height = preview_size(frame.width, frame.height, max_width)
    size = {"width": width, "height": height, "interpolation": "AREA"}
    if fmt == "yuv420p":  # JPEG (JFIF) wants full-range YCbCr
        try:
            return reformat(frame, format="yuv420p", dst_color_range="JPEG", **size)
        except TypeError:  # PyAV without dst_color_range: the full-range alias format
            fmt = "yuvj420p"
    return reformat(frame, format=fmt, **size)


def encode_preview_jpeg(image: ImageLike, max_width: int = 640, quality: int = 80) -> bytes:
    """Downscale to at most ``max_width`` pixels wide, then encode a baseline JPEG.

    Accepts an IMAGE tensor, a uint8 HxWx3 array or an ``av.VideoFrame`` (any pixel format;
    a frame is the cheaper input, a tensor is quantised at full size first). With simplejpeg
    the scaled frame goes in as YUV 4:2:0 planes, skipping an RGB round trip (~40 % faster
    than encoding RGB); without it, Pillow encodes RGB.
    """
    frame = _to_frame(image)
    if _simplejpeg is None:
        rgb = _downscaled(frame, max_width, "rgb24").to_ndarray()
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="JPEG", quality=quality)
        return buffer.getvalue()
    small = _downscaled(frame, max_width, "yuv420p")
    y, u, v = (
        np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: plane.height, : plane.width]
        for plane in small.planes
    )
    return _simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=quality)


def to_pil(image: ImageLike) -> Image.Image:
    """An RGB ``PIL.Image`` of an IMAGE tensor (first of a batch), array or frame."""
    if isinstance(image, av.VideoFrame):
        return Image.fromarray(reformat(image, format="rgb24").to_ndarray())
    if isinstance(image, torch.Tensor):
        return Image.fromarray(image_to_ndarray(image))
    return Image.fromarray(np.ascontiguousarray(np.asarray(image, dtype=np.uint8)))
