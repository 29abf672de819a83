"""What a prompt asks of the audio stream, read the same way by both engines."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .graph import id_key

__all__ = ["DEFAULT_BUFFER_MS", "audio_buffer_ms"]

DEFAULT_BUFFER_MS = 500.0
"""``LoadAudioTensor``'s own default (ComfyStream's)."""


def audio_buffer_ms(graphs: Iterable[Mapping[str, Any]]) -> float | None:
    """The first ``LoadAudioTensor``'s ``buffer_size`` (ms) in API-format ``graphs`` (node
    ids in natural order): the audio each run takes. None when no graph loads audio; the
    default when the input is left out or linked."""
    for graph in graphs:
        for node_id in sorted(graph, key=id_key):
            node = graph[node_id]
            if node.get("class_type") == "LoadAudioTensor":
                value = node.get("inputs", {}).get("buffer_size", DEFAULT_BUFFER_MS)
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
                return float(value) if ok else DEFAULT_BUFFER_MS
    return None
