"""Prompt graphs and request headers shared by the tests (import as ``from graphs import ...``).

One definition each, so a test file names the graph it runs instead of redefining it.
"""

from __future__ import annotations

import time
from typing import Any

INVERT: dict[str, Any] = {
    "1": {"class_type": "LoadTensor", "inputs": {}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
}
"""Every frame inverted: the colour a viewer sees says which prompt ran."""

PASSTHROUGH: dict[str, Any] = {
    "1": {"class_type": "LoadTensor", "inputs": {}},
    "2": {"class_type": "SaveTensor", "inputs": {"images": ["1", 0]}},
}

UNKNOWN_NODE: dict[str, Any] = {"1": {"class_type": "NoSuchNode", "inputs": {}}}


def blend(
    first: dict[str, Any], second: dict[str, Any], output: str = "PreviewImage"
) -> dict[str, Any]:
    """``first`` and ``second`` (nodes "1" and "2") into ImageBlend "normal" at factor 1, so
    the output is exactly node 2's image: the colour says which image it was."""
    return {
        "1": first,
        "2": second,
        "3": {
            "class_type": "ImageBlend",
            "inputs": {
                "image1": ["1", 0],
                "image2": ["2", 0],
                "blend_factor": 1.0,
                "blend_mode": "normal",
            },
        },
        "4": {"class_type": output, "inputs": {"images": ["3", 0]}},
    }


def reference_image(
    live: str = "PrimaryInputLoadImage", file: str = "ref.png", output: str = "PreviewImage"
) -> dict[str, Any]:
    """A live input (``live``: a class name) blended with a reference ``LoadImage`` of
    ``file``: ComfyStream's rule makes node 2 read its file, never the camera."""
    first: dict[str, Any] = {"class_type": live, "inputs": {"image": "live.png"}}
    if live == "LoadTensor":
        first = {"class_type": "LoadTensor", "inputs": {}}
    return blend(first, {"class_type": "LoadImage", "inputs": {"image": file}}, output)


SDP = {"Content-Type": "application/sdp"}
FRAG = {"Content-Type": "application/trickle-ice-sdpfrag"}
JSON = {"Content-Type": "application/json"}


class AudioScale:
    """A custom V1 audio node registered by the audio tests: multiplies the waveform by
    ``factor`` (and can be told to sleep or to fail)."""

    CATEGORY = "test"
    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "audio": ("AUDIO",),
                "factor": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0}),
            },
            "optional": {
                "sleep": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0}),
                "fail": ("BOOLEAN", {"default": False}),
            },
        }

    def run(
        self, audio: dict, factor: float = 1.0, sleep: float = 0.0, fail: bool = False
    ) -> tuple[dict]:
        if fail:
            raise RuntimeError("scale refused")
        time.sleep(sleep)
        return ({**audio, "waveform": audio["waveform"] * factor},)
