"""executor.py: Prompt.run / run_timed / chains / presets / failures / threads."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from graphs import INVERT

from comfywhip_nb.prompts import (
    NodeExecutionError,
    Prompt,
    PromptError,
    list_presets,
    load_preset,
    load_prompt,
    register_nodes,
)
from comfywhip_nb.prompts.registry import unregister_nodes


def frame(b: int = 1, h: int = 32, w: int = 48) -> torch.Tensor:
    return torch.rand(b, h, w, 3, generator=torch.Generator().manual_seed(7))


FLIP = {
    "1": {"class_type": "LoadTensor", "inputs": {}},
    "2": {
        "class_type": "ImageFlip",
        "inputs": {"image": ["1", 0], "flip_method": "y-axis: horizontally"},
    },
    "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
}


class Boom:
    """A node that fails when run, to check how failures are reported."""

    CATEGORY = "test"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "go"
    calls: ClassVar[list[str]] = []

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",)}, "hidden": {"me": "UNIQUE_ID"}}

    def go(self, image: torch.Tensor, me: str) -> tuple[torch.Tensor]:
        Boom.calls.append(me)
        raise ValueError("kaboom")


@pytest.fixture
def boom() -> Iterator[type]:
    register_nodes({"TestBoom": Boom})
    Boom.calls.clear()
    yield Boom
    unregister_nodes("TestBoom")


def test_passthrough_returns_the_frame_on_its_device() -> None:
    x = frame()
    prompt = Prompt.passthrough()
    out = prompt.run(x)
    assert torch.equal(out, x) and out.device == x.device
    assert prompt.device == torch.device("cuda" if torch.cuda.is_available() else "cpu")


def test_run_matches_numpy_and_run_timed_names_every_node() -> None:
    x = frame(2)
    out, timings = load_prompt(INVERT).run_timed(x)
    np.testing.assert_allclose(out.numpy(), 1.0 - x.numpy(), atol=1e-7)
    assert list(timings) == ["1:LoadTensor", "2:ImageInvert", "3:SaveTensor"]
    assert all(isinstance(t, float) and t >= 0 for t in timings.values())


def test_aliased_prompt_times_canonical_names() -> None:
    graph = {
        "10": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
        "9": {"class_type": "ImageInvert", "inputs": {"image": ["10", 0]}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["9", 0]}},
    }
    _, timings = load_prompt(graph).run_timed(frame())
    assert list(timings) == ["10:LoadTensor", "9:ImageInvert", "2:SaveTensor"]


def test_chain_feeds_each_output_into_the_next_graph() -> None:
    x = frame()
    prompt = load_prompt([INVERT, FLIP])
    out, timings = prompt.run_timed(x)
    np.testing.assert_allclose(out.numpy(), np.flip(1.0 - x.numpy(), 2), atol=1e-7)
    assert "prompt[0]/2:ImageInvert" in timings and "prompt[1]/2:ImageFlip" in timings


def test_to_json_round_trips_and_graphs_are_copies() -> None:
    prompt = load_prompt([INVERT, FLIP])
    again = load_prompt(prompt.to_json())
    assert again.graphs == prompt.graphs
    single = load_prompt(INVERT)
    assert json.loads(single.to_json()) == single.graphs[0]
    copy = single.graphs
    copy[0]["2"]["class_type"] = "Changed"
    assert single.graphs[0]["2"]["class_type"] == "ImageInvert"
    assert load_prompt(single) is single


def test_only_nodes_feeding_an_output_run(boom: type) -> None:
    graph = {**INVERT, "7": {"class_type": "TestBoom", "inputs": {"image": ["1", 0]}}}
    load_prompt(graph).run(frame())
    assert boom.calls == []


def test_a_failing_node_is_named(boom: type) -> None:
    graph = {**INVERT, "7": {"class_type": "TestBoom", "inputs": {"image": ["2", 0]}}}
    graph["3"] = {"class_type": "SaveTensor", "inputs": {"images": ["7", 0]}}
    with pytest.raises(NodeExecutionError) as info:
        load_prompt(graph).run(frame())
    error = info.value
    assert (error.node_id, error.class_type, error.graph) == ("7", "TestBoom", None)
    assert str(error) == "node 7 (TestBoom) failed: ValueError: kaboom"
    assert isinstance(error.__cause__, ValueError)
    assert boom.calls == ["7"]  # the hidden UNIQUE_ID input
    assert json.loads(json.dumps(error.to_dict()))["node_id"] == "7"


def test_run_checks_its_input() -> None:
    prompt = load_prompt(INVERT)
    with pytest.raises(TypeError):
        prompt.run(np.zeros((1, 4, 4, 3)))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        prompt.run(torch.zeros(4, 4, 3))
    with pytest.raises(ValueError):
        prompt.run(torch.zeros(1, 4, 4, 3, dtype=torch.uint8))


def test_generator_prompt_ignores_the_frame() -> None:
    graph = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 6, "height": 5, "batch_size": 2, "color": 0xFF0000},
        },
        "2": {"class_type": "SaveTensor", "inputs": {"images": ["1", 0]}},
    }
    out = load_prompt(graph).run(frame())
    assert (
        out.shape == (2, 5, 6, 3) and torch.all(out[..., 0] == 1) and torch.all(out[..., 1:] == 0)
    )


def test_presets_cover_the_examples_and_all_run() -> None:
    names = list_presets()
    expected = {
        "passthrough",
        "invert",
        "blur",
        "sharpen",
        "edges",
        "flip",
        "quantize",
        "scale_half",
        "chain",
    }
    assert expected <= set(names)
    x = frame()
    for name in names:
        out = load_preset(name).run(x)
        assert out.ndim == 4 and out.shape[-1] == 3 and out.dtype == torch.float32, name
    assert load_preset("scale_half").run(x).shape == (1, 16, 24, 3)
    assert len(load_preset("chain").graphs) == 2
    with pytest.raises(PromptError, match="unknown preset"):
        load_preset("../../etc/passwd")


def test_one_prompt_runs_while_another_thread_builds_prompts() -> None:
    prompt = load_prompt([INVERT, FLIP])
    x = frame(1, 16, 16)
    expected = prompt.run(x)
    failures: list[BaseException] = []
    stop = threading.Event()

    def builder() -> None:
        try:
            while not stop.is_set():
                load_prompt(INVERT)
                load_preset("edges")
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    worker = threading.Thread(target=builder, name="prompt-builder")
    worker.start()
    try:
        for _ in range(30):
            assert torch.equal(prompt.run(x), expected)
    finally:
        stop.set()
        worker.join(timeout=10)
    assert not failures


def test_node_instances_live_as_long_as_the_prompt() -> None:
    seen: list[int] = []

    class Counter:
        CATEGORY = "test"
        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "go"

        def __init__(self) -> None:
            self.count = 0

        @classmethod
        def INPUT_TYPES(cls) -> dict[str, Any]:
            return {"required": {"image": ("IMAGE",)}}

        def go(self, image: torch.Tensor) -> tuple[torch.Tensor]:
            self.count += 1
            seen.append(self.count)
            return (image,)

    register_nodes({"TestCounter": Counter})
    try:
        graph = {**INVERT, "2": {"class_type": "TestCounter", "inputs": {"image": ["1", 0]}}}
        prompt = load_prompt(graph)
        for _ in range(3):
            prompt.run(frame())
        load_prompt(graph).run(frame())
    finally:
        unregister_nodes("TestCounter")
    assert seen == [1, 2, 3, 1]
