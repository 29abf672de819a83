"""Property tests: random graphs built from the node catalogue.

Valid graphs validate, round-trip through JSON and run to an IMAGE; a single mutation of a valid
graph is reported as a PromptError naming the mutated node; arbitrary JSON-like input gives a
Prompt or a PromptError, never another exception.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfywhip_nb.prompts import (
    NodeExecutionError,
    Prompt,
    PromptError,
    load_prompt,
    node_catalogue,
)

STREAM_ENDS = {"LoadTensor", "SaveTensor", "LoadAudioTensor", "SaveAudioTensor"}
#: The image nodes: these graphs run on a frame (the audio nodes: tests/test_nodes_audio.py).
CATALOGUE = {
    name: entry
    for name, entry in node_catalogue().items()
    if entry["python_module"].startswith("comfywhip_nb.prompts.nodes")
    and name not in STREAM_ENDS
    and not entry["category"].startswith("audio")
}
# Keep random images small: caps on the span above each widget's minimum.
INT_SPAN = {"width": 64, "height": 64, "x": 64, "y": 64, "batch_size": 1, "amount": 1, "length": 2}
INT_SPAN |= {"blur_radius": 5, "sharpen_radius": 5, "colors": 255, "color": 0xFFFFFF}
FLOAT_SPAN = {"megapixels": 0.01, "scale_by": 1.2}
#: Nodes that raise where ComfyUI raises: mismatched sizes, batches or channels, blur radii as
#: large as the image.
RAISE_LIKE_COMFYUI = {
    "ImageBatch",
    "ImageBlend",
    "ImageBlur",
    "ImageSharpen",
    "ImageCompositeMasked",
    "ImageToMask",
    "ImageYUVToRGB",
}
SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def widget(draw: st.DrawFn, name: str, kind: Any, options: dict[str, Any]) -> Any:
    if isinstance(kind, list):
        return draw(st.sampled_from(kind))
    if kind == "INT":
        low = max(options.get("min", 0), -8)  # GrowMask, PrimitiveInt: small negatives
        if name == "batch_index":
            return draw(st.integers(0, 4))
        return draw(
            st.integers(low, min(options.get("max", low + 64), low + INT_SPAN.get(name, 64)))
        )
    if kind == "FLOAT":
        low = max(float(options.get("min", 0.0)), -8.0)
        high = min(options.get("max", low + 2.0), low + FLOAT_SPAN.get(name, 2.0))
        return draw(st.floats(low, high, allow_nan=False))
    if kind == "BOOLEAN":
        return draw(st.booleans())
    return draw(st.text(max_size=5))


@st.composite
def valid_graphs(draw: st.DrawFn) -> dict[str, Any]:
    graph: dict[str, Any] = {"1": {"class_type": "LoadTensor", "inputs": {}}}
    outputs: list[tuple[str, int, str]] = [("1", 0, "IMAGE")]
    for n in range(2, 2 + draw(st.integers(1, 5))):
        available = {t for *_, t in outputs}

        def usable(name: str, available: set[str] = available) -> bool:
            required = CATALOGUE[name]["input"]["required"].values()
            links = [
                e[0]
                for e in required
                if isinstance(e[0], str) and e[0] not in ("INT", "FLOAT", "BOOLEAN", "STRING")
            ]
            return all(t in available for t in links)

        class_type = draw(st.sampled_from(sorted(c for c in CATALOGUE if usable(c))))
        entry = CATALOGUE[class_type]
        inputs: dict[str, Any] = {}
        sections = [
            entry["input"]["required"],
            draw(st.sampled_from([{}, entry["input"]["optional"]])),
        ]
        for name, spec in [item for section in sections for item in section.items()]:
            kind, options = spec[0], spec[1] if len(spec) > 1 else {}
            if isinstance(kind, str) and kind not in ("INT", "FLOAT", "BOOLEAN", "STRING"):
                sources = [o for o in outputs if o[2] == kind]
                if not sources:  # an optional input (a MASK) with nothing to feed it
                    continue
                src, idx, _ = draw(st.sampled_from(sources))
                inputs[name] = [src, idx]
            else:
                inputs[name] = widget(draw, name, kind, options)
        if class_type == "Canny":  # its VALIDATE_INPUTS wants low <= high
            low, high = sorted((inputs["low_threshold"], inputs["high_threshold"]))
            inputs.update(low_threshold=low, high_threshold=high)
        graph[str(n)] = {"class_type": class_type, "inputs": inputs}
        outputs += [(str(n), i, t) for i, t in enumerate(entry["output"])]
    images = [o for o in outputs if o[2] == "IMAGE"]
    src, idx, _ = draw(st.sampled_from(images[-2:]))
    graph[str(len(graph) + 1)] = {"class_type": "SaveTensor", "inputs": {"images": [src, idx]}}
    return graph


@SETTINGS
@given(valid_graphs())
def test_valid_random_graphs_run_to_an_image(graph: dict[str, Any]) -> None:
    prompt = load_prompt(graph)
    assert load_prompt(prompt.to_json()).graphs == prompt.graphs
    try:
        out = prompt.run(torch.rand(1, 16, 24, 3))
    except NodeExecutionError as exc:
        # ComfyUI fails on these inputs too, and the built-in nodes follow it (test_parity.py)
        assert exc.class_type in RAISE_LIKE_COMFYUI, str(exc)
        assert isinstance(exc.__cause__, (ValueError, RuntimeError, IndexError)), str(exc)
        return
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert out.ndim == 4 and out.shape[-1] in (3, 4) and out.numel() > 0  # 4: RGBA nodes
    assert torch.isfinite(out).all()


def mutations(graph: dict[str, Any], node_id: str) -> list[tuple[str, Any]]:
    """(kind, argument) pairs that make this node invalid."""
    entry = graph[node_id]
    spec = CATALOGUE.get(
        entry["class_type"], {"input": {"required": {"images": ["IMAGE"]}, "optional": {}}}
    )
    found: list[tuple[str, Any]] = [("class", None)]
    for name, value in entry["inputs"].items():
        kind = {**spec["input"]["optional"], **spec["input"]["required"]}[name][0]
        if name in spec["input"]["required"]:
            found.append(("drop", name))
        if isinstance(value, list):
            found += [("dangling", name), ("index", name), ("malformed", name), ("literal", name)]
        else:
            found.append(("type", name))
            if isinstance(kind, list):
                found.append(("combo", name))
            elif kind in ("INT", "FLOAT"):
                found.append(("range", name))
    return found


@SETTINGS
@given(valid_graphs(), st.data())
def test_each_mutation_is_reported_on_the_mutated_node(
    graph: dict[str, Any], data: st.DataObject
) -> None:
    node_id = data.draw(st.sampled_from(sorted(i for i in graph if i != "1")))
    kind, name = data.draw(st.sampled_from(mutations(graph, node_id)))
    entry = graph[node_id]
    inputs = entry["inputs"]
    if kind == "class":
        entry["class_type"] += "Zz"
    elif kind == "drop":
        del inputs[name]
    elif kind == "dangling":
        inputs[name] = ["999", 0]
    elif kind == "index":
        inputs[name] = [inputs[name][0], 7]
    elif kind == "malformed":
        inputs[name] = inputs[name][:1]
    elif kind == "literal":
        inputs[name] = 0.5
    elif kind == "type":
        inputs[name] = {"not": "a value"}
    elif kind == "combo":
        inputs[name] = "no such choice"
    else:  # range
        options = {
            **CATALOGUE[entry["class_type"]]["input"]["optional"],
            **CATALOGUE[entry["class_type"]]["input"]["required"],
        }[name][1]
        inputs[name] = options["max"] + 1 if "max" in options else options["min"] - 1
    try:
        load_prompt(json.dumps(graph))
    except PromptError as exc:
        assert node_id in [e.node_id for e in exc.errors], (kind, name, str(exc))
    else:
        raise AssertionError(f"mutation {kind} of {name!r} on node {node_id} was accepted")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=25,
)
node_like = st.fixed_dictionaries(
    {
        "class_type": st.sampled_from(
            [*sorted(CATALOGUE), *sorted(STREAM_ENDS), "PreviewImage", "Nope"]
        ),
        "inputs": st.dictionaries(
            st.sampled_from(["image", "images", "mask", "width", "blur_radius", "x"]),
            json_values,
            max_size=4,
        ),
    }
)
hostile = json_values | st.dictionaries(
    st.sampled_from(["1", "2", "3", "4"]), node_like | json_values, max_size=4
)


@SETTINGS
@given(hostile | st.lists(hostile, max_size=3) | hostile.map(json.dumps) | st.text(max_size=30))
def test_arbitrary_input_gives_a_prompt_or_a_prompt_error(value: Any) -> None:
    try:
        result = load_prompt(value)
    except PromptError as exc:
        assert exc.errors and str(exc)
        json.dumps(exc.to_dict())
    else:
        assert isinstance(result, Prompt)
