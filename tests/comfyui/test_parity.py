"""Parity: every built-in node with a ComfyUI name against ComfyUI 0.3.75's own class.

Same seeded inputs to both, at several sizes (odd ones included), with default and
non-default widget values: either both raise, or every output matches within 1e-3. The
INPUT_TYPES of both are compared too (types, combo choices, default/min/max/step), and
RETURN_TYPES, CATEGORY and display names.
Runs where ComfyUI can be imported (the venv of ``scripts/get-comfyui.sh``); skips otherwise.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import parity_support

from comfywhip_nb.prompts.nodes import BUILTIN_DISPLAY_NAMES, BUILTIN_NODES
from comfywhip_nb.prompts.nodes.load_image import LoadImage
from comfywhip_nb.prompts.registry import STREAM_ENDS, entry_kind

SIZES = [(1, 32, 48), (2, 17, 23), (1, 9, 7)]
WIDGET_OPTIONS = ("default", "min", "max", "step")

Inputs = Callable[[torch.Generator, tuple[int, int, int]], dict[str, Any]]


def image(gen: torch.Generator, b: int, h: int, w: int, c: int = 3) -> torch.Tensor:
    return torch.rand(b, h, w, c, generator=gen)


def mask(gen: torch.Generator, b: int, h: int, w: int) -> torch.Tensor:
    return torch.rand(b, h, w, generator=gen)


def one_image(gen: torch.Generator, size: tuple[int, int, int]) -> dict[str, Any]:
    return {"image": image(gen, *size)}


def rgba(gen: torch.Generator, size: tuple[int, int, int]) -> dict[str, Any]:
    return {"image": image(gen, *size, c=4)}


def one_mask(gen: torch.Generator, size: tuple[int, int, int]) -> dict[str, Any]:
    return {"mask": mask(gen, *size)}


def pair(
    name1: str, name2: str, shape2: Callable[[tuple[int, int, int]], tuple[int, ...]], c2: int = 3
) -> Inputs:
    def make(gen: torch.Generator, size: tuple[int, int, int]) -> dict[str, Any]:
        return {name1: image(gen, *size), name2: image(gen, *shape2(size), c=c2)}

    return make


def same(size: tuple[int, int, int]) -> tuple[int, ...]:
    return size


def smaller(size: tuple[int, int, int]) -> tuple[int, ...]:
    return (1, max(1, size[1] // 2 + 1), max(1, size[2] // 3 + 2))


def palette_image(gen: torch.Generator, size: tuple[int, int, int]) -> dict[str, Any]:
    levels = torch.randint(0, 3, (*size, 3), generator=gen).float() / 2
    return {"image": levels}


def yuv_planes(gen: torch.Generator, size: tuple[int, int, int]) -> dict[str, Any]:
    return {"Y": image(gen, *size), "U": image(gen, *size), "V": image(gen, *size)}


def masks_pair(shape2: Callable[[tuple[int, int, int]], tuple[int, ...]]) -> Inputs:
    def make(gen: torch.Generator, size: tuple[int, int, int]) -> dict[str, Any]:
        s2 = shape2(size)
        return {"destination": mask(gen, *size), "source": mask(gen, s2[0], *s2[1:3])}

    return make


def composite_inputs(with_mask: bool, c2: int = 3) -> Inputs:
    def make(gen: torch.Generator, size: tuple[int, int, int]) -> dict[str, Any]:
        small = smaller(size)
        out = {"destination": image(gen, *size), "source": image(gen, *small, c=c2)}
        if with_mask:
            out["mask"] = mask(gen, 1, 5, 6)
        return out

    return make


def join_inputs(gen: torch.Generator, size: tuple[int, int, int]) -> dict[str, Any]:
    return {"image": image(gen, *size), "alpha": mask(gen, 1, 11, 13)}


@dataclass
class Case:
    widgets: dict[str, Any] = field(default_factory=dict)
    inputs: Inputs = one_image


CASES: dict[str, list[Case]] = {
    "ImageInvert": [Case()],
    "ImageScale": [
        Case(),
        Case({"upscale_method": "bilinear", "width": 20, "height": 0}),
        Case({"upscale_method": "nearest-exact", "width": 33, "height": 17, "crop": "center"}),
        Case({"upscale_method": "area", "width": 64, "height": 40}),
        Case({"upscale_method": "bicubic", "width": 31, "height": 29, "crop": "center"}),
        Case({"upscale_method": "lanczos", "width": 30, "height": 21}),
        Case({"upscale_method": "lanczos", "width": 0, "height": 13}, rgba),
    ],
    "ImageScaleBy": [
        Case(),
        Case({"upscale_method": "bilinear", "scale_by": 0.5}),
        Case({"upscale_method": "lanczos", "scale_by": 1.3}),
        Case({"upscale_method": "area", "scale_by": 0.37}),
        Case({"upscale_method": "bicubic", "scale_by": 2.0}),
    ],
    "ImageScaleToTotalPixels": [
        Case({"megapixels": 0.01}),
        Case({"upscale_method": "area", "megapixels": 0.02}),
        Case({"upscale_method": "lanczos", "megapixels": 0.01}),
    ],
    "ImageCrop": [
        Case(),
        Case({"width": 10, "height": 7, "x": 3, "y": 2}),
        Case({"width": 100, "height": 100, "x": 40, "y": 5}),
    ],
    "ImageFlip": [Case({"flip_method": m}) for m in ["x-axis: vertically", "y-axis: horizontally"]],
    "ImageRotate": [
        Case({"rotation": r}) for r in ["none", "90 degrees", "180 degrees", "270 degrees"]
    ],
    "EmptyImage": [
        Case({"width": 13, "height": 9}, lambda g, s: {}),
        Case({"width": 33, "height": 17, "batch_size": 2, "color": 0x336699}, lambda g, s: {}),
    ],
    "ImageBatch": [
        Case(inputs=pair("image1", "image2", same)),
        Case(inputs=pair("image1", "image2", smaller)),
        Case(inputs=pair("image1", "image2", same, c2=4)),
        Case(inputs=pair("image1", "image2", smaller, c2=1)),
    ],
    "RepeatImageBatch": [Case(), Case({"amount": 3})],
    "ImageFromBatch": [
        Case(),
        Case({"batch_index": 1, "length": 2}),
        Case({"batch_index": 5, "length": 9}),
    ],
    "ImageBlur": [
        Case(),
        Case({"blur_radius": 3, "sigma": 0.7}),
        Case({"blur_radius": 10, "sigma": 2.0}),
        Case({"blur_radius": 31, "sigma": 5.0}),
    ],
    "ImageSharpen": [
        Case(),
        Case({"sharpen_radius": 2, "sigma": 0.5, "alpha": 0.3}),
        Case({"sharpen_radius": 8, "sigma": 2.0, "alpha": 2.5}),
    ],
    "ImageBlend": [
        *[
            Case({"blend_factor": 0.7, "blend_mode": m}, pair("image1", "image2", same))
            for m in ["normal", "multiply", "screen", "overlay", "soft_light", "difference"]
        ],
        Case({"blend_mode": "overlay"}, pair("image1", "image2", smaller)),
        Case({"blend_mode": "multiply"}, pair("image1", "image2", same, c2=4)),
        Case(inputs=lambda g, s: {"image1": image(g, *s, c=4), "image2": image(g, *s)}),
    ],
    "ImageQuantize": [
        Case(),
        Case({"colors": 8, "dither": "none"}),
        Case({"colors": 4, "dither": "floyd-steinberg"}),
        Case({"colors": 16, "dither": "bayer-2"}),
        Case({"colors": 8, "dither": "bayer-4"}),
        Case({"colors": 5, "dither": "bayer-8"}),
        Case({"colors": 3, "dither": "bayer-16"}),
    ],
    "Canny": [
        Case(),
        Case({"low_threshold": 0.1, "high_threshold": 0.3}),
        Case({"low_threshold": 0.05, "high_threshold": 0.5}),
    ],
    "ImageToMask": [
        *[Case({"channel": c}) for c in ["red", "green", "blue"]],
        Case({"channel": "alpha"}, rgba),
        Case({"channel": "alpha"}),
    ],
    "MaskToImage": [Case(inputs=one_mask)],
    "InvertMask": [Case(inputs=one_mask)],
    "ThresholdMask": [Case(inputs=one_mask), Case({"value": 0.2}, one_mask)],
    "ImageColorToMask": [Case(inputs=palette_image), Case({"color": 0x7F007F}, palette_image)],
    "SolidMask": [
        Case({"width": 13, "height": 9}, lambda g, s: {}),
        Case({"value": 0.3, "width": 33, "height": 17}, lambda g, s: {}),
    ],
    "MaskComposite": [
        *[
            Case({"operation": op, "x": 3, "y": 2}, masks_pair(smaller))
            for op in ["multiply", "add", "subtract", "and", "or", "xor"]
        ],
        Case({"operation": "add", "x": 0, "y": 0}, masks_pair(same)),
    ],
    "FeatherMask": [
        Case(inputs=one_mask),
        Case({"left": 3, "top": 2, "right": 5, "bottom": 4}, one_mask),
        Case({"left": 100, "top": 100, "right": 100, "bottom": 100}, one_mask),
    ],
    "GrowMask": [
        Case(inputs=one_mask),
        Case({"expand": 2}, one_mask),
        Case({"expand": -2, "tapered_corners": False}, one_mask),
        Case({"expand": 3, "tapered_corners": False}, one_mask),
        Case({"expand": -1}, one_mask),
    ],
    "ImageCompositeMasked": [
        Case(inputs=composite_inputs(False)),
        Case({"x": 5, "y": 3}, composite_inputs(True)),
        Case({"x": 40, "y": 12, "resize_source": True}, composite_inputs(True)),
        Case({"x": 2, "y": 1}, composite_inputs(False, c2=4)),
    ],
    "SplitImageWithAlpha": [Case(), Case(inputs=rgba)],
    "JoinImageWithAlpha": [Case(inputs=join_inputs)],
    "ImageStitch": [
        *[
            Case(
                {"direction": d, "match_image_size": m, "spacing_width": sw, "spacing_color": c},
                pair("image1", "image2", smaller),
            )
            for d, m, sw, c in [
                ("right", True, 0, "white"),
                ("down", True, 4, "red"),
                ("left", False, 0, "black"),
                ("up", False, 6, "white"),
                ("right", False, 2, "blue"),
            ]
        ],
        Case(inputs=pair("image1", "image2", same, c2=4)),
        Case(inputs=lambda g, s: {"image1": image(g, *s)}),  # no image2: image1 unchanged
    ],
    "ResizeAndPadImage": [
        Case({"target_width": 40, "target_height": 40}),
        Case(
            {
                "target_width": 33,
                "target_height": 21,
                "padding_color": "black",
                "interpolation": "bilinear",
            }
        ),
        Case({"target_width": 20, "target_height": 50, "interpolation": "lanczos"}),
    ],
    "GetImageSize": [Case()],
    "ImageAddNoise": [Case(), Case({"seed": 12345, "strength": 0.2})],
    "ImageRGBToYUV": [Case()],
    "ImageYUVToRGB": [Case(inputs=yuv_planes)],
    "Morphology": [
        *[
            Case({"operation": op})
            for op in ["erode", "dilate", "open", "close", "gradient", "bottom_hat", "top_hat"]
        ],
        Case({"operation": "dilate", "kernel_size": 5}),
        Case({"operation": "erode", "kernel_size": 4}),
        Case({"operation": "gradient", "kernel_size": 8}),
    ],
    "PrimitiveInt": [Case({"value": 7}, lambda g, s: {}), Case({"value": -3}, lambda g, s: {})],
    "PrimitiveFloat": [Case({"value": 0.25}, lambda g, s: {})],
}
#: ComfyUI's LoadImage lists the files of its input folder as a combo; ours names one file.
INPUT_TYPES_DIFFER = {"LoadImage": "a combo of the input folder's files in ComfyUI, a STRING here"}


@pytest.fixture(scope="module")
def comfy() -> dict[str, type]:
    return parity_support.comfyui_nodes()


def shared_names(comfy: dict[str, type]) -> list[str]:
    audio = {n for n, c in BUILTIN_NODES.items() if str(c.CATEGORY).startswith("audio")}
    # the audio nodes' parity (and LiveAudio*, ours in ComfyUI too): test_audio_nodes.py
    return sorted(n for n in BUILTIN_NODES if n in comfy and n not in STREAM_ENDS | audio)


def test_every_shared_node_has_parity_cases(comfy: dict[str, type]) -> None:
    assert set(shared_names(comfy)) - {"LoadImage"} == set(CASES)


def normalise(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for section in ("required", "optional"):
        for name, entry in (spec.get(section) or {}).items():
            kind, options = entry_kind(entry)
            widget = {k: options[k] for k in WIDGET_OPTIONS if k in options}
            out[name] = {"section": section, "kind": kind, **widget}
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_input_types_and_outputs_match(comfy: dict[str, type], name: str) -> None:
    ours, theirs = BUILTIN_NODES[name], comfy[name]
    assert normalise(ours.INPUT_TYPES()) == normalise(theirs.INPUT_TYPES())
    assert tuple(ours.RETURN_TYPES) == tuple(theirs.RETURN_TYPES)
    assert str(ours.CATEGORY) == parity_support.category(theirs)
    labels = parity_support.display_names()
    assert BUILTIN_DISPLAY_NAMES.get(name, name) == labels.get(name, name)


def widget_values(cls: type, overrides: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, entry in (cls.INPUT_TYPES().get("required") or {}).items():
        kind, options = entry_kind(entry)
        if isinstance(kind, list):
            values[name] = options.get("default", kind[0])
        elif kind in ("INT", "FLOAT", "BOOLEAN", "STRING") and "default" in options:
            values[name] = options["default"]
    return {**values, **overrides}


def clone(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else value


def outcome(run: Callable[[], tuple[Any, ...]]) -> tuple[Any, ...] | BaseException:
    try:
        return run()
    except Exception as exc:
        return exc


def assert_same(name: str, ours: Any, theirs: Any) -> None:
    if isinstance(theirs, BaseException) or isinstance(ours, BaseException):
        assert isinstance(ours, BaseException) and isinstance(theirs, BaseException), (
            f"{name}: ComfyUI gave {theirs!r:.200}, we gave {ours!r:.200}"
        )
        return
    assert len(ours) >= len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        if isinstance(b, torch.Tensor):
            assert a.shape == b.shape, f"{name} output {i}: {tuple(a.shape)} != {tuple(b.shape)}"
            diff = (a.float().cpu() - b.float().cpu()).abs().max().item() if a.numel() else 0.0
            assert diff <= 1e-3, f"{name} output {i}: max difference {diff}"
        else:
            assert a == b, f"{name} output {i}: {a!r} != {b!r}"


def case_ids() -> list[tuple[str, int, tuple[int, int, int]]]:
    return [
        (n, i, s) for n, cases in sorted(CASES.items()) for i in range(len(cases)) for s in SIZES
    ]


@pytest.mark.parametrize(("name", "index", "size"), case_ids(), ids=str)
def test_results_match(
    comfy: dict[str, type], name: str, index: int, size: tuple[int, int, int]
) -> None:
    case = CASES[name][index]
    ours_cls, theirs_cls = BUILTIN_NODES[name], comfy[name]
    gen = torch.Generator().manual_seed(zlib.crc32(repr((name, index, size)).encode()))
    kwargs = {**case.inputs(gen, size), **widget_values(theirs_cls, case.widgets)}
    theirs = outcome(
        lambda: parity_support.run_comfyui(theirs_cls, {k: clone(v) for k, v in kwargs.items()})
    )
    node = ours_cls(device="cpu") if getattr(ours_cls, "STREAM_DEVICE", False) else ours_cls()
    ours = outcome(
        lambda: tuple(getattr(node, ours_cls.FUNCTION)(**{k: clone(v) for k, v in kwargs.items()}))
    )
    assert_same(f"{name}{case.widgets}", ours, theirs)


def write_images(folder: Path) -> list[str]:
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)).save(folder / "rgb.png")
    Image.fromarray(rng.integers(0, 256, (9, 7, 4), dtype=np.uint8), "RGBA").save(
        folder / "rgba.png"
    )
    gray = Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L")
    gray.save(folder / "gray.jpg")
    palette = Image.fromarray(rng.integers(0, 4, (6, 10), dtype=np.uint8), "P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] * 64)
    palette.info["transparency"] = 0
    palette.save(folder / "palette.png", transparency=0)
    frames = [Image.new("RGB", (5, 4), (i * 60, 0, 0)) for i in range(3)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    return ["rgb.png", "rgba.png", "gray.jpg", "palette.png", "anim.gif"]


def test_load_image_reads_files_as_comfyui(comfy: dict[str, type], tmp_path: Path) -> None:
    parity_support.set_input_directory(tmp_path)
    for file in write_images(tmp_path):
        theirs = parity_support.run_comfyui(comfy["LoadImage"], {"image": file})
        ours = LoadImage(device="cpu").load_image(file, folder=str(tmp_path))
        assert_same(f"LoadImage {file}", ours, theirs)
    assert set(INPUT_TYPES_DIFFER) == {"LoadImage"}
