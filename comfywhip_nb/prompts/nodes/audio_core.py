"""ComfyUI's audio nodes that need no model and no file (``comfy_extras/nodes_audio.py`` of
ComfyUI 0.3.75): same class names, inputs, defaults, categories and results.

AUDIO is ComfyUI's dict ``{"waveform": tensor [B, C, T] float32, "sample_rate": int}``. In a
stream these run on every buffered chunk (LoadAudioTensor's ``buffer_size``, 20-500 ms), so
``TrimAudioDuration`` trims each chunk and ``AudioConcat`` lengthens each one: that is
ComfyUI's meaning applied per chunk. The sample-count-preserving live nodes are in
``audio_live.py``.

Not here, and why: ``EmptyLatentAudio``, ``VAEEncodeAudio``, ``VAEDecodeAudio`` and
``ConditioningStableAudio`` need a model (Stable Audio's VAE or conditioning); ``LoadAudio``,
``SaveAudio``, ``SaveAudioMP3``, ``SaveAudioOpus``, ``PreviewAudio`` and ``RecordAudio`` read
or write files (or the browser's recorder), which a stream never does: the chunk enters by
``LoadAudioTensor`` and leaves by ``SaveAudioTensor``. The ComfyUI engine has them all.

Deliberate departures, none of which changes a result ComfyUI gives: the resampler is our own
copy of torchaudio's (``audio_dsp.resample``, compared with it in tests/comfyui) and refuses
rate pairs whose kernel would be huge; ``EmptyAudio`` makes its zeros on the prompt's device,
keeps them between runs (ComfyUI's output cache does the same) and refuses a rate <= 0 or more
than 2^27 samples; the second input of AudioConcat/AudioMerge moves to the first's device.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from .audio import check_audio
from .audio_dsp import resample

__all__ = [
    "AudioAdjustVolume",
    "AudioConcat",
    "AudioMerge",
    "EmptyAudio",
    "SplitAudioChannels",
    "TrimAudioDuration",
]

logger = logging.getLogger(__name__)

#: Most samples (all channels) EmptyAudio allocates: 2^27 floats, 512 MiB.
MAX_EMPTY_SAMPLES = 1 << 27
_BIG = 0xFFFFFFFFFFFFFFFF


def _audio(waveform: torch.Tensor, rate: int) -> dict[str, Any]:
    return {"waveform": waveform, "sample_rate": rate}


def match_rates(
    wave1: torch.Tensor, rate1: int, wave2: torch.Tensor, rate2: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """ComfyUI's ``match_audio_sample_rates``: the lower-rate input is resampled up."""
    wave2 = wave2.to(wave1.device)
    if rate1 == rate2:
        return wave1, wave2, rate1
    if rate1 > rate2:
        logger.info("Resampling audio2 from %sHz to %sHz for merging.", rate2, rate1)
        return wave1, resample(wave2, rate2, rate1), rate1
    logger.info("Resampling audio1 from %sHz to %sHz for merging.", rate1, rate2)
    return resample(wave1, rate1, rate2), wave2, rate2


class TrimAudioDuration:
    """The part of the audio from ``start_index`` (seconds; negative counts from the end)
    lasting ``duration`` seconds."""

    CATEGORY = "audio"
    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "trim"
    DESCRIPTION = "Trim audio tensor into chosen time range."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "audio": ("AUDIO",),
                "start_index": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": -_BIG,
                        "max": _BIG,
                        "step": 0.01,
                        "tooltip": "Start time in seconds, can be negative to count from the "
                        "end (supports sub-seconds).",
                    },
                ),
                "duration": (
                    "FLOAT",
                    {"default": 60.0, "min": 0.0, "step": 0.01, "tooltip": "Duration in seconds"},
                ),
            }
        }

    def trim(
        self, audio: dict[str, Any], start_index: float, duration: float
    ) -> tuple[dict[str, Any]]:
        waveform, rate = check_audio(audio)["waveform"], audio["sample_rate"]
        length = waveform.shape[-1]
        start = round(start_index * rate)
        start = max(0, min(length + start if start_index < 0 else start, length - 1))
        end = max(0, min(start + round(duration * rate), length))
        if start >= end:
            raise ValueError(
                "AudioTrim: Start time must be less than end time and be within the audio length."
            )
        return (_audio(waveform[..., start:end], rate),)


class SplitAudioChannels:
    """A stereo input's left and right channels as two mono AUDIO outputs."""

    CATEGORY = "audio"
    RETURN_TYPES = ("AUDIO", "AUDIO")
    RETURN_NAMES = ("left", "right")
    FUNCTION = "separate"
    DESCRIPTION = "Separates the audio into left and right channels."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"audio": ("AUDIO",)}}

    def separate(self, audio: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        waveform, rate = check_audio(audio)["waveform"], audio["sample_rate"]
        if waveform.shape[1] != 2:
            raise ValueError("AudioSplit: Input audio has only one channel.")
        return _audio(waveform[..., 0:1, :], rate), _audio(waveform[..., 1:2, :], rate)


class AudioConcat:
    """``audio2`` after (or before) ``audio1``; mono becomes stereo, rates are matched."""

    CATEGORY = "audio"
    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "concat"
    DESCRIPTION = "Concatenates the audio1 to audio2 in the specified direction."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "audio1": ("AUDIO",),
                "audio2": ("AUDIO",),
                "direction": (
                    ["after", "before"],
                    {
                        "default": "after",
                        "tooltip": "Whether to append audio2 after or before audio1.",
                    },
                ),
            }
        }

    def concat(
        self, audio1: dict[str, Any], audio2: dict[str, Any], direction: str
    ) -> tuple[dict[str, Any]]:
        wave1, wave2 = check_audio(audio1)["waveform"], check_audio(audio2)["waveform"]
        if wave1.shape[1] == 1:
            wave1 = wave1.repeat(1, 2, 1)
        if wave2.shape[1] == 1:
            wave2 = wave2.repeat(1, 2, 1)
        wave1, wave2, rate = match_rates(wave1, audio1["sample_rate"], wave2, audio2["sample_rate"])
        if direction not in ("after", "before"):
            raise ValueError(f"direction must be 'after' or 'before', got {direction!r}")
        parts = (wave1, wave2) if direction == "after" else (wave2, wave1)
        return (_audio(torch.cat(parts, dim=2), rate),)


class AudioMerge:
    """``audio1`` combined sample by sample with ``audio2`` (trimmed or zero-padded to
    ``audio1``'s length); scaled back into -1..1 when the result exceeds it."""

    CATEGORY = "audio"
    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "merge"
    DESCRIPTION = "Combine two audio tracks by overlaying their waveforms."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "audio1": ("AUDIO",),
                "audio2": ("AUDIO",),
                "merge_method": (
                    ["add", "mean", "subtract", "multiply"],
                    {"tooltip": "The method used to combine the audio waveforms."},
                ),
            }
        }

    def merge(
        self, audio1: dict[str, Any], audio2: dict[str, Any], merge_method: str
    ) -> tuple[dict[str, Any]]:
        wave1, wave2, rate = match_rates(
            check_audio(audio1)["waveform"],
            audio1["sample_rate"],
            check_audio(audio2)["waveform"],
            audio2["sample_rate"],
        )
        length1, length2 = wave1.shape[-1], wave2.shape[-1]
        if length2 > length1:
            wave2 = wave2[..., :length1]
        elif length2 < length1:
            wave2 = torch.nn.functional.pad(wave2, (0, length1 - length2))
        if merge_method == "add":
            waveform = wave1 + wave2
        elif merge_method == "subtract":
            waveform = wave1 - wave2
        elif merge_method == "multiply":
            waveform = wave1 * wave2
        elif merge_method == "mean":
            waveform = (wave1 + wave2) / 2
        else:
            raise ValueError(f"unknown merge_method {merge_method!r}")
        peak = waveform.abs().max()
        if peak > 1.0:
            waveform = waveform / peak
        return (_audio(waveform, rate),)


class AudioAdjustVolume:
    """The audio scaled by ``volume`` dB (0: the input itself)."""

    CATEGORY = "audio"
    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "adjust_volume"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "audio": ("AUDIO",),
                "volume": (
                    "INT",
                    {
                        "default": 1,
                        "min": -100,
                        "max": 100,
                        "tooltip": "Volume adjustment in decibels (dB). 0 = no change, "
                        "+6 = double, -6 = half, etc",
                    },
                ),
            }
        }

    def adjust_volume(self, audio: dict[str, Any], volume: int) -> tuple[dict[str, Any]]:
        if volume == 0:
            return (audio,)
        waveform = check_audio(audio)["waveform"]
        return (_audio(waveform * 10 ** (volume / 20), audio["sample_rate"]),)


class EmptyAudio:
    """Silence: ``duration`` seconds of zeros, float32 ``[1, channels, samples]``."""

    CATEGORY = "audio"
    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "create_empty_audio"
    STREAM_DEVICE = True

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._made: tuple[tuple[int, int, int], torch.Tensor] | None = None

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "duration": (
                    "FLOAT",
                    {
                        "default": 60.0,
                        "min": 0.0,
                        "max": _BIG,
                        "step": 0.01,
                        "tooltip": "Duration of the empty audio clip in seconds",
                    },
                ),
                "sample_rate": (
                    "INT",
                    {"default": 44100, "tooltip": "Sample rate of the empty audio clip."},
                ),
                "channels": (
                    "INT",
                    {
                        "default": 2,
                        "min": 1,
                        "max": 2,
                        "tooltip": "Number of audio channels (1 for mono, 2 for stereo).",
                    },
                ),
            }
        }

    def create_empty_audio(
        self, duration: float, sample_rate: int, channels: int
    ) -> tuple[dict[str, Any]]:
        if sample_rate <= 0:
            raise ValueError(f"EmptyAudio: sample_rate must be positive, got {sample_rate}")
        samples = round(duration * sample_rate)
        if samples * channels > MAX_EMPTY_SAMPLES:
            raise ValueError(
                f"EmptyAudio: {samples} samples x {channels} channels is more than "
                f"{MAX_EMPTY_SAMPLES} (about {MAX_EMPTY_SAMPLES // (channels * sample_rate)} s)"
            )
        key = (samples, channels, sample_rate)
        if self._made is None or self._made[0] != key:
            zeros = torch.zeros((1, channels, samples), dtype=torch.float32, device=self.device)
            self._made = (key, zeros)
        return (_audio(self._made[1], sample_rate),)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "TrimAudioDuration": TrimAudioDuration,
    "SplitAudioChannels": SplitAudioChannels,
    "AudioConcat": AudioConcat,
    "AudioMerge": AudioMerge,
    "AudioAdjustVolume": AudioAdjustVolume,
    "EmptyAudio": EmptyAudio,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "TrimAudioDuration": "Trim Audio Duration",
    "SplitAudioChannels": "Split Audio Channels",
    "AudioConcat": "Audio Concat",
    "AudioMerge": "Audio Merge",
    "AudioAdjustVolume": "Audio Adjust Volume",
    "EmptyAudio": "Empty Audio",
}
