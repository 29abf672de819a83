"""ComfyStream's LoadImage rule and ComfyUI's LoadImage for reference images.

A ``LoadImage`` in a prompt is either the live frame (then validation maps it to LoadTensor)
or a reference image read from its file; ``live_load_image`` says which. Files are read only
from the allowed folder (``load_prompt(allowed_dir=...)``, ``WhipServer(prompts_dir=...)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence

from .image import check_pixels

__all__ = ["IMAGE_SUFFIXES", "LoadImage", "live_load_image", "resolve_image"]


def live_load_image(graph: Mapping[Any, Any]) -> str | None:
    """ComfyStream's LoadImage rule: the id of the one ``LoadImage`` that is the live frame, or
    None. A LoadImage is the live frame only when it is the graph's only LoadImage and the
    graph has no other live input (no ``PrimaryInputLoadImage``, and, so that a normalised
    graph reads back the same, no ``LoadTensor``). Every other LoadImage is a reference image
    read from its file: the camera never silently replaces it."""
    kinds = [
        (str(i), n.get("class_type"))
        for i, n in graph.items()
        if isinstance(n, Mapping) and isinstance(n.get("class_type"), str)
    ]
    loads = [i for i, kind in kinds if kind == "LoadImage"]
    others = any(kind in ("PrimaryInputLoadImage", "LoadTensor") for _, kind in kinds)
    return loads[0] if len(loads) == 1 and not others else None


#: Image files a reference LoadImage may read (what Pillow opens and ComfyUI lists).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def resolve_image(name: Any, folder: str | Path | None) -> Path:
    """The file ``name`` inside ``folder``; ValueError when there is no folder, when the name
    leaves it (``..``, an absolute path, a link pointing out) or when no such image exists."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("input 'image' must name an image file")
    if folder is None:
        raise ValueError(
            f"LoadImage reads {name!r} from a file (it is a reference image, not the live "
            "frame), and no folder is allowed for files: give WhipServer(prompts_dir=...) or "
            "load_prompt(..., allowed_dir=...)"
        )
    root = Path(folder).expanduser().resolve()
    path = (root / name.split(" [")[0]).resolve()  # ComfyUI's "name.png [input]" annotation
    if not path.is_relative_to(root):
        raise ValueError(f"image {name!r} lies outside the allowed folder {str(root)!r}")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"{name!r} is not an image file ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if not path.is_file():
        raise ValueError(f"image {name!r} does not exist in the allowed folder {str(root)!r}")
    return path


def _decode(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """ComfyUI's LoadImage decoding: every frame of the file's first size, EXIF-rotated, as RGB
    with ``1 - alpha`` as the mask (a 64x64 zero mask when there is no alpha)."""
    images, masks = [], []
    with Image.open(path) as picture:
        check_pixels(1, picture.height, picture.width)
        size = None
        for frame in ImageSequence.Iterator(picture):
            frame = ImageOps.exif_transpose(frame) or frame
            if frame.mode == "I":
                frame = frame.point(lambda v: v * (1 / 255))
            rgb = frame.convert("RGB")
            size = size or rgb.size
            if rgb.size != size:
                continue
            images.append(torch.from_numpy(np.array(rgb).astype(np.float32) / 255.0))
            if "A" in frame.getbands():
                alpha = np.array(frame.getchannel("A")).astype(np.float32) / 255.0
                masks.append(1.0 - torch.from_numpy(alpha))
            elif frame.mode == "P" and "transparency" in frame.info:
                alpha = np.array(frame.convert("RGBA").getchannel("A")).astype(np.float32) / 255.0
                masks.append(1.0 - torch.from_numpy(alpha))
            else:
                masks.append(torch.zeros((64, 64), dtype=torch.float32))
            check_pixels(len(images), size[1], size[0])
        keep = len(images) if picture.format != "MPO" else 1
    return torch.stack(images[:keep]), torch.stack(masks[:keep])


class LoadImage:
    """A reference image read from a file in the allowed folder (ComfyUI's LoadImage results:
    IMAGE and MASK). A LoadImage is this node only where it is not the live frame: see
    ``graph.live_load_image``. The file is read once and kept while it is unchanged."""

    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"
    #: The executor passes the prompt's device to __init__.
    STREAM_DEVICE = True
    #: Validation checks this input names a file inside the allowed folder.
    FILE_INPUT = "image"

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self._cached: tuple[tuple[str, float], tuple[torch.Tensor, torch.Tensor]] | None = None

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("STRING", {})}, "hidden": {"folder": "IMAGE_DIR"}}

    def load_image(
        self, image: str, folder: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        path = resolve_image(image, folder)
        key = (str(path), path.stat().st_mtime)
        if self._cached is None or self._cached[0] != key:
            pixels, mask = _decode(path)
            self._cached = (key, (pixels.to(self.device), mask.to(self.device)))
        return self._cached[1]
