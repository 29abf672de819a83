"""Load ComfyUI custom-node modules (``comfywhip serve --nodes X``).

A ComfyUI custom node package exposes ``NODE_CLASS_MAPPINGS`` (and optionally
``NODE_DISPLAY_NAME_MAPPINGS``) at module level; this imports one — a module name, a ``.py``
file, or a package folder with ``__init__.py`` — and registers those classes. Importing runs
the module's code: only load nodes you trust, exactly as in ComfyUI.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from .registry import register_nodes

__all__ = ["load_nodes_module"]


def _import(spec: str) -> ModuleType:
    path = Path(spec)
    if path.is_dir():
        path = path / "__init__.py"
    if path.suffix == ".py":
        if not path.is_file():
            raise ValueError(f"custom nodes file not found: {spec}")
        name = f"comfywhip_custom_nodes_{path.resolve().parent.name}_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(
            name,
            path,
            submodule_search_locations=[str(path.parent)] if path.stem == "__init__" else None,
        )
        if module_spec is None or module_spec.loader is None:
            raise ValueError(f"cannot import custom nodes from {spec}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(spec)
    except ImportError as exc:
        raise ValueError(f"cannot import custom nodes module {spec!r}: {exc}") from exc


def load_nodes_module(spec: str) -> list[str]:
    """Import ``spec`` and register its ``NODE_CLASS_MAPPINGS``; returns the class names."""
    module = _import(spec)
    mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
    if not isinstance(mappings, dict) or not mappings:
        raise ValueError(f"{spec} defines no NODE_CLASS_MAPPINGS dict")
    register_nodes(mappings, getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None))
    return sorted(mappings)
