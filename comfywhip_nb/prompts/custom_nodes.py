"""Load ComfyUI custom-node modules into the built-in engine (``comfywhip serve --nodes X``).

A ComfyUI custom node package exposes ``NODE_CLASS_MAPPINGS`` (and optionally
``NODE_DISPLAY_NAME_MAPPINGS``) at module level; this imports one — a module name, a ``.py``
file, or a package folder with ``__init__.py`` — and registers those classes. Importing runs
the module's code: only load nodes you trust, exactly as in ComfyUI.

The built-in engine runs V1 nodes only. A pack that fails to import, that needs ComfyUI's own
modules, or that holds V3 nodes (``comfy_api.latest.io.ComfyNode`` / ``comfy_entrypoint``) is
refused with a message naming the pack and the missing module and pointing at the ComfyUI
engine (``--comfyui PATH``). A pack's own stream ends (ComfyStream's ``tensor_utils`` defines
``LoadTensor``/``SaveTensor``, which read ComfyStream's global tensor cache) are skipped with a
warning: the built-ins of the same names and inputs take their place.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from .registry import STREAM_ENDS, register_nodes

__all__ = ["load_nodes_module"]

logger = logging.getLogger(__name__)

#: Top-level modules that only exist inside a ComfyUI installation.
COMFYUI_MODULES = frozenset(
    {
        "comfy",
        "comfy_api",
        "comfy_api_nodes",
        "comfy_execution",
        "comfy_extras",
        "execution",
        "folder_paths",
        "latent_preview",
        "node_helpers",
        "nodes",
        "server",
    }
)
NEEDS_COMFYUI = (
    "V3 nodes and full custom node packs need the ComfyUI engine: "
    "run with --comfyui PATH (WhipServer(comfyui=PATH))"
)


def _pack_name(spec: str) -> str:
    path = Path(spec)
    if path.suffix == ".py":
        return path.parent.name if path.stem == "__init__" else path.stem
    return path.name if path.is_dir() else spec


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
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return module
    return importlib.import_module(spec)


def _import_error(pack: str, exc: BaseException) -> ValueError:
    """The refusal for a pack whose import failed: which pack, which module, what to do."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        if top in COMFYUI_MODULES:
            why = f"it imports ComfyUI's own module {exc.name!r}, which only ComfyUI has"
        elif top == "comfystream":
            why = (
                "it imports 'comfystream' (ComfyStream's tensor_utils): the built-in engine "
                "already has LoadTensor, SaveTensor, LoadAudioTensor and SaveAudioTensor, so "
                "this pack is not needed here"
            )
        else:
            why = f"missing module {exc.name!r} ({exc})"
        return ValueError(f"custom node pack {pack!r} failed to import: {why}. {NEEDS_COMFYUI}")
    return ValueError(
        f"custom node pack {pack!r} failed to import: {type(exc).__name__}: {exc}. {NEEDS_COMFYUI}"
    )


def _is_v3(cls: Any) -> bool:
    """A V3 node: a ``comfy_api`` ``ComfyNode`` subclass, or a class with ``define_schema``."""
    if not isinstance(cls, type):
        return False
    if callable(getattr(cls, "define_schema", None)):
        return True
    return any(
        base.__name__ == "ComfyNode" and base.__module__.startswith("comfy_api")
        for base in cls.__mro__
    )


def load_nodes_module(spec: str) -> list[str]:
    """Import ``spec`` and register its ``NODE_CLASS_MAPPINGS``; returns the class names.

    Raises ValueError, naming the pack, when it cannot run in the built-in engine."""
    pack = _pack_name(spec)
    try:
        module = _import(spec)
    except ValueError:
        raise
    except Exception as exc:  # a pack's import may raise anything; report, never crash
        raise _import_error(pack, exc) from exc
    mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
    if not isinstance(mappings, dict) or not mappings:
        if callable(getattr(module, "comfy_entrypoint", None)):
            raise ValueError(
                f"custom node pack {pack!r} is a V3 extension (comfy_entrypoint, no "
                f"NODE_CLASS_MAPPINGS). {NEEDS_COMFYUI}"
            )
        raise ValueError(f"{spec} defines no NODE_CLASS_MAPPINGS dict")
    v3 = sorted(str(name) for name, cls in mappings.items() if _is_v3(cls))
    if v3:
        raise ValueError(
            f"custom node pack {pack!r} has V3 nodes (comfy_api io.ComfyNode): "
            f"{', '.join(v3)}. {NEEDS_COMFYUI}"
        )
    ends = sorted(name for name in mappings if name in STREAM_ENDS)
    if ends:
        logger.warning(
            "custom node pack %r defines %s; the built-in %s of the same names and inputs "
            "stay in place (a pack's own versions read ComfyStream's tensor cache, which the "
            "built-in engine does not fill)",
            pack,
            ", ".join(ends),
            "node" if len(ends) == 1 else "nodes",
        )
        mappings = {name: cls for name, cls in mappings.items() if name not in STREAM_ENDS}
    display = getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {}
    display = {name: label for name, label in display.items() if name in mappings}
    if mappings:
        register_nodes(mappings, display)
    return sorted(mappings)
