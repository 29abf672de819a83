"""The stream's ends, after ComfyStream: ``LoadTensor`` is the video frame coming in and
``SaveTensor`` the frame going out.

ComfyStream reads and writes a global tensor cache; here the executor hands the frame over
as a hidden input (``"STREAM_IMAGE"``) and reads SaveTensor's ``images`` input back
(``STREAM_OUTPUT``), so two Prompts never share state.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["LoadTensor", "SaveTensor", "check_image"]


def check_image(value: Any, what: str = "images") -> torch.Tensor:
    """Fail with a readable message when something other than an IMAGE reaches an image input."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what} must be an IMAGE tensor [B,H,W,C], got {type(value).__name__}")
    if value.ndim != 4:
        raise ValueError(
            f"{what} must be an IMAGE tensor [B,H,W,C], got shape {tuple(value.shape)}"
        )
    return value


class LoadTensor:
    """The current video frame (IMAGE ``[B,H,W,3]``). ``PrimaryInputLoadImage``, and a
    ``LoadImage`` where ComfyStream's rule makes it the live frame, map to this node; their
    file name is ignored."""

    CATEGORY = "tensor_utils"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "execute"
    DESCRIPTION = "The video frame entering the prompt (ComfyStream convention)."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {}, "hidden": {"frame": "STREAM_IMAGE"}}

    def execute(self, frame: torch.Tensor | None = None) -> tuple[torch.Tensor]:
        if frame is None:
            raise RuntimeError("LoadTensor has no frame: this run was given no image")
        return (frame,)


class SaveTensor:
    """The processed frame leaving the prompt. ``PreviewImage`` and ``SaveImage`` map to this
    node; their ``filename_prefix`` is ignored and nothing is written to disk."""

    CATEGORY = "tensor_utils"
    RETURN_TYPES = ()
    FUNCTION = "execute"
    OUTPUT_NODE = True
    DESCRIPTION = "The video frame leaving the prompt (ComfyStream convention)."
    #: (stream kind, input name): the executor takes this input as the run's output.
    STREAM_OUTPUT = ("image", "images")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"images": ("IMAGE",)}}

    def execute(self, images: torch.Tensor) -> tuple[()]:
        check_image(images)
        return ()


NODE_CLASS_MAPPINGS: dict[str, type] = {"LoadTensor": LoadTensor, "SaveTensor": SaveTensor}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "LoadTensor": "Load Tensor",
    "SaveTensor": "Save Tensor",
}
