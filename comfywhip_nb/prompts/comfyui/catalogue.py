"""ComfyUI's node list in ``/object_info``'s shape, for ``get_nodes`` and the editor.

``server.PromptServer.node_info`` is a closure inside ComfyUI's aiohttp routes, so its few
lines are mirrored here: V3 nodes describe themselves (``GET_NODE_INFO_V1``), V1 nodes give
INPUT_TYPES, RETURN_TYPES and friends.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["object_info"]

logger = logging.getLogger(__name__)


def node_info(name: str, cls: type, display_names: dict[str, str]) -> dict[str, Any]:
    from comfy_api.internal import _ComfyNodeInternal

    if issubclass(cls, _ComfyNodeInternal):
        return dict(cls.GET_NODE_INFO_V1())
    inputs = cls.INPUT_TYPES()
    outputs = tuple(getattr(cls, "RETURN_TYPES", ()))
    return {
        "input": inputs,
        "input_order": {key: list(value) for key, value in inputs.items()},
        "output": outputs,
        "output_is_list": getattr(cls, "OUTPUT_IS_LIST", [False] * len(outputs)),
        "output_name": getattr(cls, "RETURN_NAMES", outputs),
        "name": name,
        "display_name": display_names.get(name, name),
        "description": getattr(cls, "DESCRIPTION", ""),
        "python_module": getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"),
        "category": getattr(cls, "CATEGORY", "sd"),
        "output_node": getattr(cls, "OUTPUT_NODE", False) is True,
    }


def object_info() -> dict[str, dict[str, Any]]:
    """Every registered node, sorted by name; a node whose description fails is skipped
    (and logged), as ComfyUI does."""
    import folder_paths
    import nodes

    out: dict[str, dict[str, Any]] = {}
    with folder_paths.cache_helper:
        for name in sorted(nodes.NODE_CLASS_MAPPINGS):
            try:
                out[name] = node_info(
                    name, nodes.NODE_CLASS_MAPPINGS[name], nodes.NODE_DISPLAY_NAME_MAPPINGS
                )
            except Exception as exc:
                logger.warning("WHIP: ComfyUI node %s cannot describe itself: %s", name, exc)
    return out
