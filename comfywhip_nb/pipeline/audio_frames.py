"""``av.AudioFrame`` <-> float arrays, ComfyUI's AUDIO dict and levels.

aiortc hands over decoded audio as packed s16 (Opus: stereo 48 kHz; PCMU/PCMA: mono 8 kHz),
but any PyAV format is accepted here. Internally audio is float32 ``[channels, samples]`` in
-1..1 (int16 / 32768, ComfyStream's scaling). A prompt's ``LoadAudioTensor`` gets ComfyStream's
layout: the channels mixed down to mono, as AUDIO ``{"waveform": [1, 1, T], "sample_rate"}``.
"""

from __future__ import annotations

import fractions
import math
from typing import Any

import av
import numpy as np
import torch

__all__ = [
    "FRAME_MS",
    "array_to_frames",
    "audio_from_prompt",
    "frame_to_array",
    "level_db",
    "to_prompt_audio",
]

FRAME_MS = 20
"""WebRTC's audio frame: 20 ms (960 samples at 48 kHz, 160 at 8 kHz)."""
SILENCE_DB = -120.0
"""The level reported for digital silence (a finite number, so JSON stays valid)."""

_SCALE = {"s16": 32768.0, "s32": 2147483648.0, "flt": 1.0, "dbl": 1.0}


def frame_to_array(frame: av.AudioFrame) -> np.ndarray:
    """float32 ``[channels, samples]`` in -1..1 for a frame of any PyAV sample format."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    fmt = frame.format
    if not fmt.is_planar:  # packed: one plane [1, samples * channels], interleaved
        data = data.reshape(-1, channels).T
    name = fmt.name.rstrip("p")
    if name == "u8":
        return (data.astype(np.float32) - 128.0) / 128.0
    scale = _SCALE.get(name)
    if scale is None:
        raise ValueError(f"unsupported audio sample format {fmt.name!r}")
    out = data.astype(np.float32, copy=True)
    if scale != 1.0:
        out /= scale
    return out


def to_prompt_audio(samples: np.ndarray, sample_rate: int) -> dict[str, Any]:
    """ComfyStream's LoadAudioTensor output for ``[channels, samples]``: mono AUDIO."""
    mono = samples.mean(axis=0, dtype=np.float32) if samples.shape[0] > 1 else samples[0]
    waveform = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32)).view(1, 1, -1)
    return {"waveform": waveform, "sample_rate": int(sample_rate)}


def audio_from_prompt(out: Any) -> tuple[np.ndarray, int]:
    """``[channels, samples]`` float32 and the rate from what reached SaveAudioTensor.

    Accepts AUDIO with a ``[B, C, T]`` waveform (batch 0 is used), and ``[C, T]`` or ``[T]``
    as some nodes return. Raises TypeError/ValueError naming what is wrong.
    """
    if not isinstance(out, dict) or not isinstance(out.get("waveform"), torch.Tensor):
        raise TypeError(
            "the audio prompt must end in AUDIO {'waveform': tensor [B, C, T], 'sample_rate'},"
            f" got {type(out).__name__}"
        )
    rate = out.get("sample_rate")
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        raise ValueError(f"AUDIO sample_rate must be a positive int, got {rate!r}")
    waveform = out["waveform"].detach()
    if waveform.ndim == 3:
        waveform = waveform[0]
    elif waveform.ndim == 1:
        waveform = waveform.unsqueeze(0)
    if waveform.ndim != 2 or not waveform.is_floating_point() or waveform.shape[0] == 0:
        raise ValueError(
            f"AUDIO waveform must be a float tensor [B, C, T], got "
            f"{tuple(out['waveform'].shape)} {out['waveform'].dtype}"
        )
    array = waveform.to("cpu", torch.float32).numpy()
    return np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=-1.0), rate


def array_to_frames(
    samples: np.ndarray, sample_rate: int, pts: int, frame_samples: int | None = None
) -> list[av.AudioFrame]:
    """Packed s16 frames (mono or stereo; more channels are mixed down to stereo) of
    ``frame_samples`` each (20 ms by default; the last may be shorter), stamped from ``pts``
    in ``1/sample_rate``."""
    channels = samples.shape[0]
    if channels > 2:
        samples = np.stack([samples[0::2].mean(axis=0), samples[1::2].mean(axis=0)])
        channels = 2
    layout = "stereo" if channels == 2 else "mono"
    step = frame_samples or max(1, sample_rate * FRAME_MS // 1000)
    ints = (np.clip(samples, -1.0, 32767 / 32768) * 32768.0).astype(np.int16)
    time_base = fractions.Fraction(1, sample_rate)
    frames = []
    for start in range(0, ints.shape[1], step):
        block = ints[:, start : start + step]
        packed = np.ascontiguousarray(block.T).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(packed, format="s16", layout=layout)
        frame.sample_rate = sample_rate
        frame.pts, frame.time_base = pts + start, time_base
        frames.append(frame)
    return frames


def level_db(samples: np.ndarray) -> float:
    """RMS level in dBFS (a full-scale sine reads -3 dB); ``SILENCE_DB`` for silence."""
    if samples.size == 0:
        return SILENCE_DB
    rms = math.sqrt(float(np.mean(np.square(samples, dtype=np.float64))))
    return max(SILENCE_DB, 20.0 * math.log10(rms)) if rms > 0 else SILENCE_DB
