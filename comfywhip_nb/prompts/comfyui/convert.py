"""API-format graphs on their way into ComfyUI: shape checks, ComfyStream's stream-end rules,
and ComfyUI's validation results as our ``PromptError``. No ComfyUI import here.

ComfyStream's rules (``convert_prompt`` in ComfyStream):

* every ``PrimaryInputLoadImage`` becomes a ``LoadTensor`` (the live frame);
* a ``LoadImage`` becomes the live frame only when the graph has no
  ``PrimaryInputLoadImage`` and exactly one ``LoadImage``, and (where ComfyStream would refuse
  the graph as "too many inputs") no ``LoadTensor`` either. Any other ``LoadImage`` loads its
  file from ComfyUI's input folder: a reference image is never replaced by the camera;
* ``PreviewImage`` and ``SaveImage`` become ``SaveTensor``: nothing is written per frame.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from ..graph import MAX_NODES, NodeError, PromptError

__all__ = ["apply_stream_rules", "check_shape", "errors_from_validation"]

LIVE_INPUT = "LoadTensor"
LIVE_OUTPUTS = ("PreviewImage", "SaveImage")


def check_shape(graph: Any, index: int | None) -> dict[str, dict[str, Any]]:
    """Refuse what ComfyUI's validator would crash on (it expects well-formed nodes)."""

    def fail(message: str, node_id: str | None = None, class_type: str | None = None) -> None:
        raise PromptError([NodeError(node_id, class_type, message, graph=index)])

    if not isinstance(graph, dict):
        fail(f"a graph must be an object mapping node ids to nodes, got {type(graph).__name__}")
    if isinstance(graph.get("nodes"), list) or ("nodes" in graph and "links" in graph):
        fail("this is a UI-format workflow; export it with 'Save (API Format)'")
    if not graph:
        fail("the prompt is empty")
    if len(graph) > MAX_NODES:
        fail(f"the prompt has {len(graph)} nodes; at most {MAX_NODES} are allowed")
    out: dict[str, dict[str, Any]] = {}
    ids = {str(k) for k in graph}
    for raw_id, node in graph.items():
        node_id = str(raw_id)
        if not isinstance(node, dict):
            fail("a node must be an object with 'class_type' and 'inputs'", node_id)
        class_type = node.get("class_type")
        if not isinstance(class_type, str) or not class_type:
            fail("the node has no 'class_type'", node_id)
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            fail(f"'inputs' must be an object, got {type(inputs).__name__}", node_id, class_type)
        for name, value in inputs.items():
            is_link = isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)
            if is_link and (not isinstance(value[0], str) or value[0] not in ids):
                fail(f"input {name!r} links to a missing node {value[0]!r}", node_id, class_type)
        out[node_id] = {**node, "inputs": dict(inputs)}
    return copy.deepcopy(out)


def apply_stream_rules(graph: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The graph with ComfyStream's stream ends in place (see the module docstring)."""
    by_class: dict[str, list[str]] = {}
    for node_id, node in graph.items():
        by_class.setdefault(node["class_type"], []).append(node_id)
    primaries = by_class.get("PrimaryInputLoadImage", [])
    live = list(primaries)
    loads = by_class.get("LoadImage", [])
    if not primaries and len(loads) == 1 and LIVE_INPUT not in by_class:
        live.append(loads[0])
    out = dict(graph)
    for node_id in live:
        meta = graph[node_id].get("_meta")
        out[node_id] = {"class_type": LIVE_INPUT, "inputs": {}, **({"_meta": meta} if meta else {})}
    for kind in LIVE_OUTPUTS:
        for node_id in by_class.get(kind, []):
            node = graph[node_id]
            images = node["inputs"].get("images")
            entry: dict[str, Any] = {"class_type": "SaveTensor", "inputs": {"images": images}}
            if node.get("_meta"):
                entry["_meta"] = node["_meta"]
            out[node_id] = entry
    return out


_NODE_IN_DETAILS = re.compile(r"Node ID '#([^']+)'")


def errors_from_validation(
    graph: dict[str, dict[str, Any]],
    error: dict[str, Any] | None,
    node_errors: dict[str, Any],
    index: int | None,
) -> PromptError:
    """ComfyUI's ``validate_prompt`` answer as one PromptError, in ComfyUI's wording."""
    errors: list[NodeError] = []
    for node_id, entry in node_errors.items():
        class_type = entry.get("class_type") or graph.get(node_id, {}).get("class_type")
        for reason in entry.get("errors", []):
            details = str(reason.get("details") or "")
            message = str(reason.get("message", "invalid"))
            text = f"{message}: {details}" if details else message
            input_name = (reason.get("extra_info") or {}).get("input_name")
            errors.append(NodeError(str(node_id), class_type, text, input_name, index))
    if not errors and error is not None:
        details = str(error.get("details") or "")
        found = _NODE_IN_DETAILS.search(details)
        node_id = found.group(1) if found else None
        class_type = graph.get(node_id, {}).get("class_type") if node_id else None
        message = str(error.get("message", "invalid prompt"))
        text = message if found or not details else f"{message}: {details}"
        errors.append(NodeError(node_id, class_type, text, None, index))
    if not errors:
        errors.append(NodeError(None, None, "ComfyUI refused the prompt", None, index))
    return PromptError(errors)
