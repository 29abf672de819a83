"""ComfyUI-style prompt engine: API-format graphs validated up front, then run per frame::

    from comfywhip_nb.prompts import load_prompt
    prompt = load_prompt({"1": {"class_type": "LoadTensor", "inputs": {}},
                          "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
                          "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}}})
    out = prompt.run(frame)  # IMAGE [B,H,W,3] float 0..1 in and out

``graph`` validates (PromptError), ``executor`` runs (Prompt, load_prompt, presets),
``registry`` holds the node classes (register_nodes, @node, node_catalogue) and ``nodes``
the built-ins.
"""

from __future__ import annotations

from .executor import NodeExecutionError, Prompt, list_presets, load_preset, load_prompt
from .graph import NodeError, PromptError
from .registry import (
    AUDIO,
    IMAGE,
    MASK,
    NODE_CLASS_MAPPINGS,
    NODE_DISPLAY_NAME_MAPPINGS,
    node,
    node_catalogue,
    register_nodes,
)

__all__ = [
    "AUDIO",
    "IMAGE",
    "MASK",
    "NODE_CLASS_MAPPINGS",
    "NODE_DISPLAY_NAME_MAPPINGS",
    "NodeError",
    "NodeExecutionError",
    "Prompt",
    "PromptError",
    "list_presets",
    "load_preset",
    "load_prompt",
    "node",
    "node_catalogue",
    "register_nodes",
]
