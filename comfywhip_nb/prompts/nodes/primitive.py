"""Primitive constants (``comfy_extras/nodes_primitive.py``): an INT or FLOAT widget as an output,
to feed one value into several nodes."""

from __future__ import annotations

import sys
from typing import Any


class PrimitiveInt:
    """The widget's integer, as ComfyUI's ``PrimitiveInt``."""

    CATEGORY = "utils/primitive"
    RETURN_TYPES = ("INT",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        bounds = {"min": -sys.maxsize, "max": sys.maxsize, "control_after_generate": True}
        return {"required": {"value": ("INT", bounds)}}

    def execute(self, value: int) -> tuple[int]:
        return (value,)


class PrimitiveFloat:
    """The widget's float, as ComfyUI's ``PrimitiveFloat``."""

    CATEGORY = "utils/primitive"
    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("FLOAT", {"min": -sys.maxsize, "max": sys.maxsize})}}

    def execute(self, value: float) -> tuple[float]:
        return (value,)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "PrimitiveInt": PrimitiveInt,
    "PrimitiveFloat": PrimitiveFloat,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {"PrimitiveInt": "Int", "PrimitiveFloat": "Float"}
