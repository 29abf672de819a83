"""Prompt graphs and request headers shared by the tests (import as ``from graphs import ...``).

One definition each, so a test file names the graph it runs instead of redefining it.
"""

from __future__ import annotations

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

SDP = {"Content-Type": "application/sdp"}
FRAG = {"Content-Type": "application/trickle-ice-sdpfrag"}
JSON = {"Content-Type": "application/json"}
