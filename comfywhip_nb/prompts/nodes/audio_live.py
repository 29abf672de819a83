"""Audio nodes for live streams, where ComfyUI core has none: gain in dB, mute, polarity
invert and a Butterworth low-/high-pass filter (category ``audio/live``).

They run on every buffered chunk (20-500 ms), so each is cheap, keeps the chunk's sample
count, device and float32 dtype, and passes the AUDIO dict's other keys through. The filter
keeps its state in the node instance (a Prompt keeps its node objects between runs, and so
does ComfyUI's executor), so consecutive chunks join without clicks; it starts afresh when the
sample rate, the channel count, the device, the mode or the order changes, and after a chunk
that held NaN or inf.

The names start with ``LiveAudio``, which no ComfyUI node uses (ComfyUI 0.3.75: nothing in
``nodes.py``, ``comfy_extras`` or ``comfy_api_nodes`` matches ``LiveAudio``), so ComfyUI
prompts never mean something else by them; the ComfyUI engine registers these same classes
(``comfyui/startup.py``).
"""

from __future__ import annotations

from typing import Any

import torch

from .audio import check_audio
from .audio_dsp import BiquadCascade, butterworth

__all__ = ["LiveAudioFilter", "LiveAudioGain", "LiveAudioInvert", "LiveAudioMute"]

CATEGORY = "audio/live"
#: The cutoff is kept below this fraction of the sample rate (Nyquist is 0.5).
MAX_CUTOFF_RATIO = 0.49


def _with(audio: dict[str, Any], waveform: torch.Tensor) -> dict[str, Any]:
    return {**audio, "waveform": waveform}


class LiveAudioGain:
    """The audio scaled by ``gain_db`` decibels (+6 dB doubles, -6 dB halves; 0: unchanged).
    Unlike AudioAdjustVolume (whole dB), the gain takes tenths of a dB."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "execute"
    DESCRIPTION = "Change the level of each audio chunk by a gain in dB."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "audio": ("AUDIO",),
                "gain_db": (
                    "FLOAT",
                    {"default": 0.0, "min": -100.0, "max": 40.0, "step": 0.1, "tooltip": "dB"},
                ),
            }
        }

    def execute(self, audio: dict[str, Any], gain_db: float) -> tuple[dict[str, Any]]:
        waveform = check_audio(audio)["waveform"]
        if gain_db == 0:
            return (audio,)
        return (_with(audio, waveform * (10.0 ** (gain_db / 20.0))),)


class LiveAudioMute:
    """Silence of the chunk's shape while ``mute`` is on; the audio itself when off."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "execute"
    DESCRIPTION = "Replace each audio chunk with silence of the same length."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"audio": ("AUDIO",), "mute": ("BOOLEAN", {"default": True})}}

    def execute(self, audio: dict[str, Any], mute: bool = True) -> tuple[dict[str, Any]]:
        waveform = check_audio(audio)["waveform"]
        return (_with(audio, torch.zeros_like(waveform)) if mute else audio,)


class LiveAudioInvert:
    """The audio with its polarity inverted (every sample negated)."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "execute"
    DESCRIPTION = "Invert the polarity of each audio chunk."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"audio": ("AUDIO",)}}

    def execute(self, audio: dict[str, Any]) -> tuple[dict[str, Any]]:
        return (_with(audio, -check_audio(audio)["waveform"]),)


class LiveAudioFilter:
    """A Butterworth low-pass or high-pass at ``cutoff_hz`` (-3 dB there, 6 dB per octave per
    ``order`` beyond), continuous across chunks. The cutoff is capped at 0.49 x the rate."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "execute"
    DESCRIPTION = "Low-pass or high-pass filter whose state carries over from chunk to chunk."

    def __init__(self) -> None:
        self._cascade: BiquadCascade | None = None
        self._stream: tuple[Any, ...] | None = None
        self._cutoff = 0.0

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "audio": ("AUDIO",),
                "mode": (["lowpass", "highpass"], {"default": "lowpass"}),
                "cutoff_hz": (
                    "FLOAT",
                    {"default": 1000.0, "min": 10.0, "max": 24000.0, "step": 1.0},
                ),
                "order": (
                    "INT",
                    {"default": 2, "min": 1, "max": 8, "tooltip": "6 dB per octave per order"},
                ),
            }
        }

    def execute(
        self, audio: dict[str, Any], mode: str, cutoff_hz: float, order: int = 2
    ) -> tuple[dict[str, Any]]:
        waveform, rate = check_audio(audio)["waveform"], audio["sample_rate"]
        if not 1 <= order <= 8:
            raise ValueError(f"order must be 1..8, got {order}")
        cutoff = min(max(float(cutoff_hz), 1.0), MAX_CUTOFF_RATIO * rate)
        stream = (rate, tuple(waveform.shape[:-1]), waveform.device, mode, order)
        if self._cascade is None or stream != self._stream:
            sections = butterworth(mode, cutoff, rate, order)
            self._cascade, self._stream, self._cutoff = BiquadCascade(sections), stream, cutoff
        elif cutoff != self._cutoff:
            self._cascade.set_sections(butterworth(mode, cutoff, rate, order))
            self._cutoff = cutoff
        # float64 keeps a low cutoff's long response exact; MPS has no float64
        dtype = torch.float32 if waveform.device.type == "mps" else torch.float64
        rows = waveform.reshape(-1, waveform.shape[-1]).to(dtype)
        out = self._cascade(rows).to(torch.float32).reshape(waveform.shape)
        return (_with(audio, out),)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "LiveAudioGain": LiveAudioGain,
    "LiveAudioMute": LiveAudioMute,
    "LiveAudioInvert": LiveAudioInvert,
    "LiveAudioFilter": LiveAudioFilter,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "LiveAudioGain": "Live Audio Gain",
    "LiveAudioMute": "Live Audio Mute",
    "LiveAudioInvert": "Live Audio Invert",
    "LiveAudioFilter": "Live Audio Filter",
}
