"""The stream's ends inside a real ComfyUI: ``LoadTensor``/``SaveTensor`` (video) and
``LoadAudioTensor``/``SaveAudioTensor`` (audio), with ComfyStream's names, inputs, categories
and ``IS_CHANGED``.

ComfyStream's nodes block on process-wide queues (``tensor_cache``). Here the engine runs one
prompt per frame on the calling thread, so the frame travels in a ``ContextVar`` set around
that one run (asyncio tasks copy it): two sessions, two threads, no shared queue.
``timeout_seconds`` is accepted for ComfyStream prompts; the frame is always there when the
node runs, and the processor's ``frame_timeout`` bounds a run.

``IS_CHANGED`` returns NaN, as in ComfyStream: NaN never equals itself, so ComfyUI's cache
treats the frame and everything that depends on it as new on every run, while nodes that do
not depend on it (loaders, constants, reference images) keep their cached outputs.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "LIVE_DISPLAY_NAMES",
    "LIVE_NODES",
    "LiveIO",
    "current_io",
]


@dataclass
class LiveIO:
    """What one run of a prompt reads from and writes to the stream."""

    image: torch.Tensor | None = None
    audio: dict[str, Any] | None = None
    images_out: dict[str, torch.Tensor] = field(default_factory=dict)
    """SaveTensor node id -> the IMAGE it received in this run."""
    audio_out: dict[str, dict[str, Any]] = field(default_factory=dict)


current_io: contextvars.ContextVar[LiveIO | None] = contextvars.ContextVar(
    "comfywhip_live_io", default=None
)

_TIMEOUT = (
    "FLOAT",
    {"default": 3.0, "min": 0.1, "max": 30.0, "step": 0.1, "tooltip": "Timeout in seconds"},
)


def _io(node: str) -> LiveIO:
    io = current_io.get()
    if io is None:
        raise RuntimeError(f"{node} runs only inside a comfywhip stream (no frame is flowing)")
    return io


class LoadTensor:
    """The video frame entering the prompt (IMAGE ``[B,H,W,3]``)."""

    CATEGORY = "ComfyStream/Loaders"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "execute"
    DESCRIPTION = "Load image tensor from ComfyStream input with timeout."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"optional": {"timeout_seconds": _TIMEOUT}}

    @classmethod
    def IS_CHANGED(cls, **kwargs: Any) -> float:
        return float("nan")

    def execute(self, timeout_seconds: float = 3.0) -> tuple[torch.Tensor]:
        image = _io("LoadTensor").image
        if image is None:
            raise RuntimeError("LoadTensor has no frame: this run was given no image")
        return (image,)


class SaveTensor:
    """The processed video frame leaving the prompt."""

    CATEGORY = "tensor_utils"
    RETURN_TYPES = ()
    FUNCTION = "execute"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"images": ("IMAGE",)}, "hidden": {"unique_id": "UNIQUE_ID"}}

    @classmethod
    def IS_CHANGED(cls, **kwargs: Any) -> float:
        return float("nan")

    def execute(self, images: torch.Tensor, unique_id: str | None = None) -> tuple[()]:
        _io("SaveTensor").images_out[str(unique_id)] = images
        return ()


class LoadAudioTensor:
    """The audio chunk entering the prompt (AUDIO ``{"waveform": [B,C,T], "sample_rate"}``)."""

    CATEGORY = "ComfyStream/Loaders"
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    FUNCTION = "execute"
    DESCRIPTION = "Load audio tensor from ComfyStream input with timeout."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "buffer_size": (
                    "FLOAT",
                    {"default": 500.0, "tooltip": "Audio buffer size in milliseconds"},
                ),
            },
            "optional": {"timeout_seconds": _TIMEOUT},
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs: Any) -> float:
        return float("nan")

    def execute(
        self, buffer_size: float = 500.0, timeout_seconds: float = 3.0
    ) -> tuple[dict[str, Any]]:
        audio = _io("LoadAudioTensor").audio
        if audio is None:
            raise RuntimeError("LoadAudioTensor has no audio: this run was given none")
        return (audio,)


class SaveAudioTensor:
    """The processed audio chunk leaving the prompt."""

    CATEGORY = "audio_utils"
    RETURN_TYPES = ()
    FUNCTION = "execute"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        # ComfyStream declares "WAVEFORM" here while its LoadAudioTensor returns "AUDIO";
        # ComfyUI's validator refuses that link, so the input takes AUDIO.
        return {"required": {"audio": ("AUDIO",)}, "hidden": {"unique_id": "UNIQUE_ID"}}

    @classmethod
    def IS_CHANGED(cls, **kwargs: Any) -> float:
        return float("nan")

    def execute(self, audio: dict[str, Any], unique_id: str | None = None) -> tuple[()]:
        _io("SaveAudioTensor").audio_out[str(unique_id)] = audio
        return ()


LIVE_NODES: dict[str, type] = {
    "LoadTensor": LoadTensor,
    "SaveTensor": SaveTensor,
    "LoadAudioTensor": LoadAudioTensor,
    "SaveAudioTensor": SaveAudioTensor,
}
LIVE_DISPLAY_NAMES: dict[str, str] = {
    "LoadTensor": "Load Tensor",
    "SaveTensor": "Save Tensor",
    "LoadAudioTensor": "Load Audio Tensor",
    "SaveAudioTensor": "Save Audio Tensor",
}
