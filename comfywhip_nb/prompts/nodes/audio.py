"""Audio ends of the stream, after ComfyStream's ``LoadAudioTensor``/``SaveAudioTensor``.

AUDIO is ComfyUI's dict ``{"waveform": tensor [B, channels, samples], "sample_rate": int}``.
ComfyStream's node waits until ``buffer_size`` milliseconds have arrived; here the session's
audio worker (``pipeline/audio.py``) collects them before the run (``Prompt.audio_buffer_ms``
reads the input), and the node returns the chunk it is handed (``Prompt.run_audio``).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["LoadAudioTensor", "SaveAudioTensor", "check_audio"]


def check_audio(value: Any) -> dict[str, Any]:
    """Fail with a readable message when something other than AUDIO reaches an audio input."""
    if not isinstance(value, dict) or not isinstance(value.get("waveform"), torch.Tensor):
        raise TypeError("AUDIO must be a dict {'waveform': tensor, 'sample_rate': int}")
    rate = value.get("sample_rate")
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        raise ValueError(f"AUDIO sample_rate must be a positive int, got {rate!r}")
    return value


class LoadAudioTensor:
    """The current audio chunk (AUDIO); ``buffer_size`` (ms) sets its length (see above)."""

    CATEGORY = "audio_utils"
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {},
            "optional": {"buffer_size": ("FLOAT", {"default": 500.0, "min": 1.0, "max": 60000.0})},
            "hidden": {"audio": "STREAM_AUDIO"},
        }

    def execute(
        self, audio: dict[str, Any] | None = None, buffer_size: float = 500.0
    ) -> tuple[dict[str, Any]]:
        if audio is None:
            raise RuntimeError("LoadAudioTensor has no audio: this run was given none")
        return (check_audio(audio),)


class SaveAudioTensor:
    """The processed audio chunk leaving the prompt."""

    CATEGORY = "audio_utils"
    RETURN_TYPES = ()
    FUNCTION = "execute"
    OUTPUT_NODE = True
    STREAM_OUTPUT = ("audio", "audio")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"audio": ("AUDIO",)}}

    def execute(self, audio: dict[str, Any]) -> tuple[()]:
        check_audio(audio)
        return ()


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "LoadAudioTensor": LoadAudioTensor,
    "SaveAudioTensor": SaveAudioTensor,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "LoadAudioTensor": "Load Audio Tensor",
    "SaveAudioTensor": "Save Audio Tensor",
}
