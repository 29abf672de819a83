"""registry.py: ComfyUI custom node classes, ``register_nodes``, ``@node`` and the catalogue."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import pytest
import torch

from comfywhip_nb.prompts import (
    AUDIO,
    IMAGE,
    MASK,
    NODE_CLASS_MAPPINGS,
    PromptError,
    load_prompt,
    node,
    node_catalogue,
    register_nodes,
)
from comfywhip_nb.prompts.custom_nodes import load_nodes_module
from comfywhip_nb.prompts.graph import parse_prompt
from comfywhip_nb.prompts.registry import unregister_nodes


@pytest.fixture
def cleanup() -> Iterator[list[str]]:
    """Names registered by a test are removed afterwards, so tests do not see each other's."""
    names: list[str] = []
    yield names
    unregister_nodes(*names)


def frame() -> torch.Tensor:
    return torch.rand(1, 12, 16, 3, generator=torch.Generator().manual_seed(3))


# A custom node exactly as a ComfyUI custom-node pack writes one.
class Posterize:
    """Round each channel to ``levels`` steps."""

    def __init__(self) -> None:
        self.runs = 0

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "levels": ("INT", {"default": 4, "min": 2, "max": 64, "step": 1}),
                "mode": (["round", "floor"],),
            },
            "optional": {"strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0})},
        }

    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "changed")
    FUNCTION = "posterize"
    CATEGORY = "custom/color"

    def posterize(
        self, image: torch.Tensor, levels: int, mode: str, strength: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.runs += 1
        step = levels - 1
        op = torch.round if mode == "round" else torch.floor
        out = image * (1 - strength) + op(image * step) / step * strength
        return (out, (out != image).any(-1).float())


class Recorder:
    """A ComfyUI output node (OUTPUT_NODE, no outputs) that returns the {"ui": ...} form."""

    seen: ClassVar[list[tuple[int, ...]]] = []

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"mask": ("MASK",)},
            "hidden": {"prompt": "PROMPT", "node": "UNIQUE_ID"},
        }

    RETURN_TYPES = ()
    FUNCTION = "record"
    OUTPUT_NODE = True
    CATEGORY = "custom"

    def record(self, mask: torch.Tensor, prompt: dict[str, Any], node: str) -> dict[str, Any]:
        assert prompt[node]["class_type"] == "TestRecorder"
        Recorder.seen.append(tuple(mask.shape))
        return {"ui": {"text": ["ok"]}, "result": ()}


GRAPH = {
    "1": {"class_type": "LoadTensor", "inputs": {}},
    "2": {
        "class_type": "TestPosterize",
        "inputs": {"image": ["1", 0], "levels": 3, "mode": "round"},
    },
    "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
    "4": {"class_type": "TestRecorder", "inputs": {"mask": ["2", 1]}},
}


def test_comfyui_custom_node_class_registers_and_runs(cleanup: list[str]) -> None:
    register_nodes(
        {"TestPosterize": Posterize, "TestRecorder": Recorder}, {"TestPosterize": "Posterize!"}
    )
    cleanup += ["TestPosterize", "TestRecorder"]
    Recorder.seen.clear()
    x = frame()
    out = load_prompt(GRAPH).run(x)
    np.testing.assert_allclose(out.numpy(), np.round(x.numpy() * 2) / 2, atol=1e-6)
    assert Recorder.seen == [(1, 12, 16)]  # custom output nodes run too
    entry = node_catalogue()["TestPosterize"]
    assert entry["display_name"] == "Posterize!" and entry["category"] == "custom/color"
    assert entry["output"] == ["IMAGE", "MASK"] and entry["output_name"] == ["image", "changed"]
    assert entry["input"]["required"]["levels"] == [
        "INT",
        {"default": 4, "min": 2, "max": 64, "step": 1},
    ]
    assert node_catalogue()["TestRecorder"]["output_node"] is True


def test_custom_inputs_are_validated_like_builtins(cleanup: list[str]) -> None:
    register_nodes({"TestPosterize": Posterize, "TestRecorder": Recorder})
    cleanup += ["TestPosterize", "TestRecorder"]
    bad = json.loads(json.dumps(GRAPH))
    bad["2"]["inputs"].update(levels=1, mode="ceil", strength=2.0)
    bad["3"]["inputs"]["images"] = ["2", 1]  # MASK into IMAGE
    with pytest.raises(PromptError) as info:
        load_prompt(bad)
    messages = [(e.node_id, e.input_name) for e in info.value.errors]
    assert messages == [("2", "levels"), ("2", "mode"), ("2", "strength"), ("3", "images")]


def test_validation_never_creates_or_runs_nodes(cleanup: list[str]) -> None:
    class Untouchable:
        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "go"
        CATEGORY = "test"

        def __init__(self) -> None:
            raise AssertionError("created during validation")

        @classmethod
        def INPUT_TYPES(cls) -> dict[str, Any]:
            return {"required": {"image": ("IMAGE",)}}

        def go(self, image: torch.Tensor) -> tuple[torch.Tensor]:
            raise AssertionError("run during validation")

    register_nodes({"TestUntouchable": Untouchable})
    cleanup.append("TestUntouchable")
    graph = {**GRAPH, "2": {"class_type": "TestUntouchable", "inputs": {"image": ["1", 0]}}}
    del graph["4"]
    assert parse_prompt(graph)[0].nodes["2"].class_type == "TestUntouchable"
    with pytest.raises(PromptError, match="could not create the node"):
        load_prompt(graph)  # building the Prompt creates the instances: reported by node


def test_broken_classes_are_refused_and_nothing_is_registered() -> None:
    class NoFunction:
        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "missing"

        @classmethod
        def INPUT_TYPES(cls) -> dict[str, Any]:
            return {}

    before = dict(NODE_CLASS_MAPPINGS)
    with pytest.raises(TypeError, match="FUNCTION"):
        register_nodes({"TestOk": Posterize, "TestNoFunction": NoFunction})
    with pytest.raises(TypeError, match="INPUT_TYPES"):
        register_nodes({"TestPlain": object})
    with pytest.raises(TypeError):
        register_nodes({"TestInstance": Posterize()})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="reserved"):
        register_nodes({"PreviewImage": Posterize})
    assert dict(NODE_CLASS_MAPPINGS) == before


def test_input_types_that_raise_are_reported(cleanup: list[str]) -> None:
    class Broken:
        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "go"

        @classmethod
        def INPUT_TYPES(cls) -> dict[str, Any]:
            raise OSError("models folder missing")

        def go(self) -> tuple[()]:
            return ()

    register_nodes({"TestBroken": Broken})
    cleanup.append("TestBroken")
    graph = {**GRAPH, "2": {"class_type": "TestBroken", "inputs": {}}}
    del graph["4"], graph["3"]
    graph["3"] = {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}}
    with pytest.raises(PromptError) as info:
        load_prompt(graph)
    assert [(e.node_id, e.class_type) for e in info.value.errors] == [("2", "TestBroken")]
    assert "models folder missing" in str(info.value)
    assert node_catalogue()["TestBroken"]["input"] == {"required": {}, "optional": {}}


def test_node_decorator_builds_a_comfyui_class(cleanup: list[str]) -> None:
    @node(category="custom/fx", return_names=("image", "alpha"))
    def test_tint(
        image: IMAGE,
        amount: Annotated[float, {"min": 0.0, "max": 1.0}] = 0.5,
        channel: Literal["red", "green", "blue"] = "red",
        invert: bool = False,
        label: str = "x",
        mask: MASK | None = None,
    ) -> tuple[IMAGE, MASK]:
        """Push one channel towards 1."""
        index = ["red", "green", "blue"].index(channel)
        out = image.clone()
        out[..., index] = out[..., index] * (1 - amount) + amount
        out = 1 - out if invert else out
        return out, out[..., index]

    cleanup.append("test_tint")
    assert test_tint.INPUT_TYPES() == {
        "required": {
            "image": ("IMAGE",),
            "amount": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0}),
            "channel": (["red", "green", "blue"], {"default": "red"}),
            "invert": ("BOOLEAN", {"default": False}),
            "label": ("STRING", {"default": "x"}),
        },
        "optional": {"mask": ("MASK",)},
    }
    assert test_tint.RETURN_TYPES == ("IMAGE", "MASK") and test_tint.RETURN_NAMES == (
        "image",
        "alpha",
    )
    assert (
        test_tint.CATEGORY == "custom/fx" and test_tint.DESCRIPTION == "Push one channel towards 1."
    )
    assert NODE_CLASS_MAPPINGS["test_tint"] is test_tint
    graph = {
        "1": {"class_type": "LoadTensor", "inputs": {}},
        "2": {
            "class_type": "test_tint",
            "inputs": {
                "image": ["1", 0],
                "amount": 1.0,
                "channel": "green",
                "invert": False,
                "label": "",
            },
        },
        "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
    }
    out = load_prompt(graph).run(frame())
    assert torch.all(out[..., 1] == 1.0)
    graph["2"]["inputs"]["amount"] = 1.5
    with pytest.raises(PromptError, match=r"above max 1\.0"):
        load_prompt(graph)


def test_node_decorator_bare_with_tensor_and_string_annotations(cleanup: list[str]) -> None:
    @node
    def test_dim(image: torch.Tensor, factor: float = 0.5) -> torch.Tensor:
        return image * factor

    @node(name="TestMaskOf", category="custom")
    def anything(image: "IMAGE", threshold: "float" = 0.5) -> "MASK":  # noqa: UP037 - string form on purpose
        return (image.mean(-1) > threshold).float()

    cleanup += ["test_dim", "TestMaskOf"]
    assert anything.INPUT_TYPES()["required"]["image"] == ("IMAGE",)
    assert anything.RETURN_TYPES == ("MASK",) and test_dim.RETURN_TYPES == ("IMAGE",)
    graph = {
        "1": {"class_type": "LoadTensor", "inputs": {}},
        "2": {"class_type": "test_dim", "inputs": {"image": ["1", 0], "factor": 0.25}},
        "3": {"class_type": "TestMaskOf", "inputs": {"image": ["2", 0], "threshold": 0.1}},
        "4": {"class_type": "MaskToImage", "inputs": {"mask": ["3", 0]}},
        "5": {"class_type": "SaveTensor", "inputs": {"images": ["4", 0]}},
    }
    x = frame()
    expected = (x.numpy().mean(-1) * 0.25 > 0.1).astype(np.float32)
    np.testing.assert_allclose(load_prompt(graph).run(x)[..., 0].numpy(), expected)


def test_node_decorator_refuses_untyped_parameters(cleanup: list[str]) -> None:
    with pytest.raises(TypeError, match="needs a type annotation"):

        @node
        def test_untyped(image, amount: float = 1.0) -> IMAGE:  # type: ignore[no-untyped-def]
            return image

    with pytest.raises(TypeError, match="unsupported annotation"):

        @node
        def test_weird(image: IMAGE, points: list[int]) -> IMAGE:
            return image

    assert "test_untyped" not in NODE_CLASS_MAPPINGS and "test_weird" not in NODE_CLASS_MAPPINGS


LATENT = Annotated[dict, "LATENT"]  # any ComfyUI type name works the same way


def test_custom_types_link_between_custom_nodes(cleanup: list[str]) -> None:
    @node(name="TestMakeLatent")
    def make(image: IMAGE) -> LATENT:
        return {"samples": image.mean()}

    @node(name="TestUseLatent")
    def use(image: IMAGE, latent: LATENT) -> IMAGE:
        return image * 0 + latent["samples"]

    cleanup += ["TestMakeLatent", "TestUseLatent"]
    graph = {
        "1": {"class_type": "LoadTensor", "inputs": {}},
        "2": {"class_type": "TestMakeLatent", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "TestUseLatent", "inputs": {"image": ["1", 0], "latent": ["2", 0]}},
        "4": {"class_type": "SaveTensor", "inputs": {"images": ["3", 0]}},
    }
    x = frame()
    assert torch.allclose(load_prompt(graph).run(x), x.mean().expand_as(x))
    graph["4"]["inputs"]["images"] = ["2", 0]
    with pytest.raises(
        PromptError, match="expects IMAGE but output 0 of node 2 \\(TestMakeLatent\\) is LATENT"
    ):
        load_prompt(graph)


def test_node_decorator_audio_node(cleanup: list[str]) -> None:
    @node(name="TestGain", category="audio")
    def gain(audio: AUDIO, factor: float = 2.0) -> AUDIO:
        return {**audio, "waveform": audio["waveform"] * factor}

    cleanup.append("TestGain")
    assert gain.INPUT_TYPES()["required"]["audio"] == ("AUDIO",) and gain.RETURN_TYPES == ("AUDIO",)
    graph = {
        "1": {"class_type": "LoadAudioTensor", "inputs": {}},
        "2": {"class_type": "TestGain", "inputs": {"audio": ["1", 0], "factor": 0.5}},
        "3": {"class_type": "SaveAudioTensor", "inputs": {"audio": ["2", 0]}},
    }
    wave = torch.ones(1, 1, 8)
    out = load_prompt(graph).run_audio({"waveform": wave, "sample_rate": 16000})
    assert torch.equal(out["waveform"], wave * 0.5) and out["sample_rate"] == 16000


def test_a_prompt_keeps_the_classes_it_was_validated_with(cleanup: list[str]) -> None:
    @node(name="TestSwap")
    def first(image: IMAGE) -> IMAGE:
        return image * 0

    cleanup.append("TestSwap")
    graph = {
        "1": {"class_type": "LoadTensor", "inputs": {}},
        "2": {"class_type": "TestSwap", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
    }
    prompt = load_prompt(graph)

    @node(name="TestSwap")
    def second(image: IMAGE) -> IMAGE:
        return image * 0 + 1

    assert torch.all(prompt.run(frame()) == 0)
    assert torch.all(load_prompt(graph).run(frame()) == 1)


def test_catalogue_is_json_and_lists_every_builtin() -> None:
    catalogue = node_catalogue()
    json.dumps(catalogue)
    builtins = {
        *("LoadTensor", "SaveTensor", "LoadAudioTensor", "SaveAudioTensor", "EmptyImage"),
        *("ImageInvert", "ImageScale", "ImageScaleBy", "ImageScaleToTotalPixels", "ImageCrop"),
        *("ImageBlur", "ImageSharpen", "ImageBlend", "ImageQuantize", "Canny"),
        *("ImageFlip", "ImageRotate", "ImageBatch", "RepeatImageBatch", "ImageFromBatch"),
        *("ImageToMask", "MaskToImage", "InvertMask", "ThresholdMask"),
    }
    assert builtins <= set(catalogue)
    assert (
        catalogue["SaveTensor"]["output_node"] is True and catalogue["SaveTensor"]["output"] == []
    )
    assert catalogue["ImageFlip"]["input"]["required"]["flip_method"] == [
        ["x-axis: vertically", "y-axis: horizontally"]
    ]


# --- packs the built-in engine cannot run: clear refusals (custom_nodes.load_nodes_module) ----


def write_pack(root: Path, name: str, code: str) -> Path:
    pack = root / name
    pack.mkdir()
    (pack / "__init__.py").write_text(code, encoding="utf-8")
    return pack


V1_NODE = """
class Halve:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    def run(self, image):
        return (image * 0.5,)
"""


@pytest.mark.parametrize(
    ("code", "texts"),
    [
        (
            "from comfy_api.latest import ComfyExtension, io\n",
            ["'v3pack'", "ComfyUI's own module 'comfy_api'"],
        ),
        ("import folder_paths\n", ["'v3pack'", "ComfyUI's own module 'folder_paths'"]),
        (
            "import not_installed_xyz_module\n",
            ["'v3pack'", "missing module 'not_installed_xyz_module'"],
        ),
        ("raise RuntimeError('boom at import')\n", ["'v3pack'", "RuntimeError: boom at import"]),
        (
            "async def comfy_entrypoint():\n    return None\n",
            ["'v3pack' is a V3 extension (comfy_entrypoint"],
        ),
        (
            V1_NODE + "class V3Node:\n    @classmethod\n    def define_schema(cls):\n"
            "        return None\n\nNODE_CLASS_MAPPINGS = {'TestV3': V3Node, 'TestHalve': Halve}\n",
            ["'v3pack' has V3 nodes (comfy_api io.ComfyNode): TestV3"],
        ),
        (
            "from comfystream import tensor_cache\n",
            ["'v3pack'", "already has LoadTensor, SaveTensor", "not needed here"],
        ),
    ],
)
def test_packs_that_need_comfyui_are_refused_with_the_reason(
    tmp_path: Path, code: str, texts: list[str]
) -> None:
    pack = write_pack(tmp_path, "v3pack", code)
    with pytest.raises(ValueError) as info:
        load_nodes_module(str(pack))
    message = str(info.value)
    for text in texts:
        assert text in message
    assert "--comfyui PATH" in message
    assert "TestHalve" not in NODE_CLASS_MAPPINGS  # a refused pack registers nothing


def test_a_packs_own_tensor_ends_give_way_to_the_builtins(
    tmp_path: Path, cleanup: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    code = (
        V1_NODE
        + """
import queue
image_inputs = queue.Queue()  # ComfyStream's tensor cache, which nothing here fills


class LoadTensor:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "execute"
    CATEGORY = "tensor_utils"

    @classmethod
    def INPUT_TYPES(cls):
        return {"optional": {"timeout_seconds": ("FLOAT", {"default": 1.0})}}

    def execute(self, timeout_seconds=1.0):
        return (image_inputs.get(timeout=timeout_seconds),)


class SaveTensor:
    RETURN_TYPES = ()
    FUNCTION = "execute"
    OUTPUT_NODE = True
    CATEGORY = "tensor_utils"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}

    def execute(self, images):
        return images


NODE_CLASS_MAPPINGS = {"LoadTensor": LoadTensor, "SaveTensor": SaveTensor, "TestHalve": Halve}
"""
    )
    builtin_load, builtin_save = (
        NODE_CLASS_MAPPINGS["LoadTensor"],
        NODE_CLASS_MAPPINGS["SaveTensor"],
    )
    names = load_nodes_module(str(write_pack(tmp_path, "tensor_utils", code)))
    cleanup.append("TestHalve")
    assert names == ["TestHalve"]
    assert NODE_CLASS_MAPPINGS["LoadTensor"] is builtin_load
    assert NODE_CLASS_MAPPINGS["SaveTensor"] is builtin_save
    assert "'tensor_utils' defines LoadTensor, SaveTensor" in caplog.text
    graph = {
        "1": {"class_type": "LoadTensor", "inputs": {"timeout_seconds": 2.0}},
        "2": {"class_type": "TestHalve", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
    }
    x = frame()
    np.testing.assert_allclose(load_prompt(graph).run(x).numpy(), x.numpy() * 0.5, atol=1e-7)


def test_the_stream_ends_cannot_be_replaced() -> None:
    class Impostor:
        RETURN_TYPES = ()
        FUNCTION = "run"
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls) -> dict[str, Any]:
            return {"required": {"images": ("IMAGE",)}}

        def run(self, images: torch.Tensor) -> tuple[()]:
            return ()

    with pytest.raises(ValueError, match="'SaveTensor' is one of the stream's ends"):
        register_nodes({"SaveTensor": Impostor})
    assert NODE_CLASS_MAPPINGS["SaveTensor"] is not Impostor
