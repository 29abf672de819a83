"""Custom node packs the ComfyUI tests write into their copy of ``custom_nodes/``.

* ``whiptest_nodes``: V1 and V3 classes in one ``NODE_CLASS_MAPPINGS`` — a V1 tint, a V3
  gain, a V1 loader that counts its runs in a file, a V1 node that always raises, and a V3
  node with a lazy input whose unused branch would raise;
* ``whiptest_v3ext``: a V3 extension (``comfy_entrypoint``) with one node;
* ``whiptest_broken``: imports a module that does not exist.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

NODES = '''
import torch
from comfy_api.latest import io

COUNTERS = {counters!r}


def _count(name):
    with open(COUNTERS + "/" + name, "a") as fh:
        fh.write("x")


class WhipTestTint:
    """V1: multiply R, G, B by constants."""

    CATEGORY = "whiptest"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "tint"

    @classmethod
    def INPUT_TYPES(cls):
        return {{"required": {{"image": ("IMAGE",),
                             "r": ("FLOAT", {{"default": 1.0, "min": 0.0, "max": 1.0}}),
                             "g": ("FLOAT", {{"default": 1.0, "min": 0.0, "max": 1.0}}),
                             "b": ("FLOAT", {{"default": 1.0, "min": 0.0, "max": 1.0}})}}}}

    def tint(self, image, r, g, b):
        scale = torch.tensor([r, g, b], dtype=image.dtype, device=image.device)
        return (image * scale,)


class WhipTestGain(io.ComfyNode):
    """V3: image * gain, clamped."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WhipTestGain",
            category="whiptest",
            inputs=[io.Image.Input("image"), io.Float.Input("gain", default=1.0, min=0.0, max=4.0)],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, image, gain) -> io.NodeOutput:
        return io.NodeOutput((image * gain).clamp(0.0, 1.0))


class WhipTestCountingLoader:
    """V1 'model loader': no inputs, so ComfyUI runs it once per prompt; counts its runs."""

    CATEGORY = "whiptest"
    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {{"required": {{}}}}

    def load(self):
        _count("loader")
        return (0.5,)


class WhipTestBoom:
    """V1: raises on every run."""

    CATEGORY = "whiptest"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "boom"

    @classmethod
    def INPUT_TYPES(cls):
        return {{"required": {{"image": ("IMAGE",)}}}}

    def boom(self, image):
        raise RuntimeError("whiptest boom")


class WhipTestLazySwitch(io.ComfyNode):
    """V3 with lazy inputs: only the chosen branch is evaluated."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WhipTestLazySwitch",
            category="whiptest",
            inputs=[io.Boolean.Input("use_a", default=True),
                    io.Image.Input("a", lazy=True), io.Image.Input("b", lazy=True)],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def check_lazy_status(cls, use_a, a=None, b=None):
        return ["a"] if use_a else ["b"]

    @classmethod
    def execute(cls, use_a, a=None, b=None) -> io.NodeOutput:
        return io.NodeOutput(a if use_a else b)


NODE_CLASS_MAPPINGS = {{
    "WhipTestTint": WhipTestTint,
    "WhipTestGain": WhipTestGain,
    "WhipTestCountingLoader": WhipTestCountingLoader,
    "WhipTestBoom": WhipTestBoom,
    "WhipTestLazySwitch": WhipTestLazySwitch,
}}
'''

V3_EXTENSION = """
from typing_extensions import override
from comfy_api.latest import ComfyExtension, io


class WhipTestMirror(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WhipTestMirror",
            display_name="Whip Test Mirror",
            category="whiptest",
            inputs=[io.Image.Input("image")],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, image) -> io.NodeOutput:
        return io.NodeOutput(image.flip(2))


class WhipTestExtension(ComfyExtension):
    @override
    async def get_node_list(self):
        return [WhipTestMirror]


async def comfy_entrypoint():
    return WhipTestExtension()
"""

BROKEN = """
import whiptest_missing_dependency  # not installed anywhere

NODE_CLASS_MAPPINGS = {}
"""


def write_packs(custom_nodes: Path, counters: Path) -> None:
    counters.mkdir(parents=True, exist_ok=True)
    for name, source in (
        ("whiptest_nodes", NODES.format(counters=str(counters))),
        ("whiptest_v3ext", V3_EXTENSION),
        ("whiptest_broken", BROKEN),
    ):
        pack = custom_nodes / name
        pack.mkdir(parents=True, exist_ok=True)
        (pack / "__init__.py").write_text(textwrap.dedent(source), encoding="utf-8")


def write_tiny_upscaler(models: Path) -> str:
    """A 2x Real-ESRGAN "Compact" (SRVGGNetCompact) with random weights, small enough to run
    per frame on a CPU, saved where ComfyUI's UpscaleModelLoader looks; returns its name."""
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    model = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=2)
    folder = models / "upscale_models"
    folder.mkdir(parents=True, exist_ok=True)
    name = "whiptest_compact_x2.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / name))
    return name
