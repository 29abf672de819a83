"""Built-in nodes, one module per family, with ComfyUI's class names, inputs and defaults.

Audio is ComfyUI's AUDIO dict ``{"waveform": [B, C, T] float32, "sample_rate": int}``
(``audio``, ``audio_core``, ``audio_live``; ``audio_dsp`` holds their signal processing).
Images are ComfyUI IMAGE tensors: float32 ``[B, H, W, C]`` in 0..1, channels last. Filters
permute to ``[B, C, H, W]`` for ``conv2d`` without ``.contiguous()``: torch runs the
channels-last layout directly, about 3x faster than copying (see PERF_NOTES.md).
"""

from __future__ import annotations

from . import (
    audio,
    audio_core,
    audio_live,
    compose,
    filters,
    image,
    io,
    mask,
    morphology,
    primitive,
)

__all__ = ["BUILTIN_DISPLAY_NAMES", "BUILTIN_NODES", "MAX_RESOLUTION"]

MAX_RESOLUTION = image.MAX_RESOLUTION

BUILTIN_NODES: dict[str, type] = {
    **io.NODE_CLASS_MAPPINGS,
    **image.NODE_CLASS_MAPPINGS,
    **filters.NODE_CLASS_MAPPINGS,
    **mask.NODE_CLASS_MAPPINGS,
    **compose.NODE_CLASS_MAPPINGS,
    **morphology.NODE_CLASS_MAPPINGS,
    **primitive.NODE_CLASS_MAPPINGS,
    **audio.NODE_CLASS_MAPPINGS,
    **audio_core.NODE_CLASS_MAPPINGS,
    **audio_live.NODE_CLASS_MAPPINGS,
}

BUILTIN_DISPLAY_NAMES: dict[str, str] = {
    **io.NODE_DISPLAY_NAME_MAPPINGS,
    **image.NODE_DISPLAY_NAME_MAPPINGS,
    **filters.NODE_DISPLAY_NAME_MAPPINGS,
    **mask.NODE_DISPLAY_NAME_MAPPINGS,
    **compose.NODE_DISPLAY_NAME_MAPPINGS,
    **morphology.NODE_DISPLAY_NAME_MAPPINGS,
    **primitive.NODE_DISPLAY_NAME_MAPPINGS,
    **audio.NODE_DISPLAY_NAME_MAPPINGS,
    **audio_core.NODE_DISPLAY_NAME_MAPPINGS,
    **audio_live.NODE_DISPLAY_NAME_MAPPINGS,
}
