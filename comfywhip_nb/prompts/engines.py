"""Which engine turns API-format prompts into something the processor runs.

* ``BuiltinEngine`` (the default, nothing to install): this package's executor and nodes.
* ``ComfyUIEngine`` (``comfyui=PATH``, ``--comfyui PATH`` or ``COMFYUI_PATH``): a real ComfyUI
  folder loaded in process; imported only when asked for.

Both give ``load(p, allowed_dir=...)`` -> a prompt with ``run``/``run_timed``/``graphs``/
``device`` (the processor's ``RunnablePrompt``), raising ``PromptError``; and ``catalogue()``
-> ``{class_type: /object_info entry}``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

__all__ = ["BuiltinEngine", "PromptEngine", "comfyui_path_from_env", "make_engine"]

ENV_VAR = "COMFYUI_PATH"


class PromptEngine(Protocol):
    name: str

    def load(self, p: Any, *, allowed_dir: str | Path | None = None) -> Any: ...

    def catalogue(self) -> dict[str, dict[str, Any]]: ...


class BuiltinEngine:
    """The package's own engine."""

    name = "builtin"

    def load(self, p: Any, *, allowed_dir: str | Path | None = None) -> Any:
        from .executor import load_prompt

        return load_prompt(p, allowed_dir=allowed_dir)

    def catalogue(self) -> dict[str, dict[str, Any]]:
        from .registry import node_catalogue

        return node_catalogue()

    def __repr__(self) -> str:
        return "<BuiltinEngine>"


BUILTIN = BuiltinEngine()


def comfyui_path_from_env() -> str | None:
    return os.environ.get(ENV_VAR) or None


def make_engine(comfyui: str | os.PathLike[str] | None) -> Any:
    """The built-in engine, or ComfyUI from ``comfyui`` (started in this process)."""
    if comfyui is None or str(comfyui) == "":
        return BUILTIN
    from .comfyui import ComfyUIEngine

    return ComfyUIEngine(comfyui)
