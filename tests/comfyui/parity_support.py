"""ComfyUI's own node classes for the parity tests, imported in this process.

ComfyUI (AGPL) is used here at test time only: the tree that ``scripts/get-comfyui.sh``
unpacks (``COMFYUI_PATH`` overrides it) goes on ``sys.path``, its start-up runs in CPU mode,
and the ``comfy_extras`` modules holding the nodes the built-in engine mirrors are loaded with
ComfyUI's own ``nodes.load_custom_node`` (which takes V1 mappings and V3 entrypoints alike).
When any of that fails the tests skip with the reason.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

#: The comfy_extras modules whose nodes the built-in engine has.
EXTRAS = (
    "nodes_post_processing",
    "nodes_mask",
    "nodes_images",
    "nodes_compositing",
    "nodes_morphology",
    "nodes_canny",
    "nodes_primitive",
)


def comfyui_tree() -> Path:
    default = Path.home() / ".cache" / "comfywhip" / "ComfyUI-0.3.75"
    return Path(os.environ.get("COMFYUI_PATH") or default)


@functools.cache
def _load() -> tuple[dict[str, type] | None, str]:
    tree = comfyui_tree()
    if not (tree / "nodes.py").is_file():
        return None, f"no ComfyUI tree at {tree} (run scripts/get-comfyui.sh)"
    if importlib.util.find_spec("torchvision") is None:  # ComfyUI's nodes.py needs it
        return None, "torchvision is not installed here: run these tests with .venv-comfyui"
    try:
        sys.path.insert(0, str(tree))
        # ComfyUI's package ``utils`` first: nodes.py puts comfy/ (which has a utils.py) on
        # sys.path, and ComfyUI's server.py imports utils.install_util later
        importlib.import_module("utils.install_util")
        cli_args = importlib.import_module("comfy.cli_args")
        cli_args.args.cpu = True  # before comfy.model_management is imported
        nodes = importlib.import_module("nodes")  # ComfyUI's nodes.py

        for name in EXTRAS:
            loaded = asyncio.run(
                nodes.load_custom_node(
                    str(tree / "comfy_extras" / f"{name}.py"), set(), "comfy_extras"
                )
            )
            if not loaded:
                return None, f"ComfyUI could not load comfy_extras/{name}.py"
        return dict(nodes.NODE_CLASS_MAPPINGS), ""
    except Exception as exc:  # any missing dependency: skip with the reason
        _forget(tree)
        return None, f"ComfyUI cannot be imported here: {type(exc).__name__}: {exc}"


def _forget(tree: Path) -> None:
    """Take a half-imported ComfyUI back off sys.path and out of sys.modules, so that its
    top-level names (nodes, server, utils, app) shadow nothing in the other tests."""
    prefix = str(tree)
    sys.path[:] = [p for p in sys.path if not p.startswith(prefix)]
    for name, module in list(sys.modules.items()):
        places = [getattr(module, "__file__", None) or "", *getattr(module, "__path__", [])]
        if any(str(place).startswith(prefix) for place in places):  # namespace packages too
            del sys.modules[name]


def comfyui_nodes() -> dict[str, type]:
    """ComfyUI's NODE_CLASS_MAPPINGS with the extras loaded; skips the test when unavailable."""
    import pytest

    mappings, reason = _load()
    if mappings is None:
        pytest.skip(reason)
    return mappings


def display_names() -> dict[str, str]:
    """ComfyUI's NODE_DISPLAY_NAME_MAPPINGS (V3 schemas' display names included)."""
    import nodes

    return dict(nodes.NODE_DISPLAY_NAME_MAPPINGS)


def category(cls: type) -> str:
    return cls.GET_SCHEMA().category if is_v3(cls) else cls.CATEGORY


def is_v3(cls: type) -> bool:
    return callable(getattr(cls, "define_schema", None))


def run_comfyui(cls: type, kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Run one ComfyUI node class on ``kwargs`` the way its executor calls it."""
    if is_v3(cls):
        output = cls.execute(**kwargs)
        return tuple(output.args)
    result = getattr(cls(), cls.FUNCTION)(**kwargs)
    if isinstance(result, dict):
        result = result["result"]
    return tuple(result)


def set_input_directory(folder: Path) -> None:
    """Where ComfyUI's LoadImage reads files from."""
    import folder_paths

    folder_paths.set_input_directory(str(folder))


#: ComfyUI's audio nodes the built-in engine has (comfy_extras/nodes_audio.py).
AUDIO_NODES = (
    "TrimAudioDuration",
    "SplitAudioChannels",
    "AudioConcat",
    "AudioMerge",
    "AudioAdjustVolume",
    "EmptyAudio",
)


def comfyui_audio_nodes() -> dict[str, type]:
    """ComfyUI's own ``nodes_audio.py`` classes (it imports torchaudio, which
    ``scripts/get-comfyui.sh`` installs); skips the test when they cannot be loaded."""
    import pytest

    comfyui_nodes()
    if importlib.util.find_spec("torchaudio") is None:
        pytest.skip("torchaudio is not installed here: run scripts/get-comfyui.sh again")
    import nodes  # ComfyUI's

    if not all(name in nodes.NODE_CLASS_MAPPINGS for name in AUDIO_NODES):
        path = comfyui_tree() / "comfy_extras" / "nodes_audio.py"
        if not asyncio.run(nodes.load_custom_node(str(path), set(), "comfy_extras")):
            pytest.skip("ComfyUI could not load comfy_extras/nodes_audio.py")
    return {name: nodes.NODE_CLASS_MAPPINGS[name] for name in AUDIO_NODES}
