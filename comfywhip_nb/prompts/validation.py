"""Turn prompt JSON that arrived over the network into a validated Prompt, off the loop.

Over the network a prompt is JSON data, never a file path (a string would make
``load_prompt`` read a file on the server). Validation (and the optional warm-up run) can
take a while, so it runs in the default executor. Every problem is a ``PromptError``;
callers (HTTP, the ComfyStream control channel) turn it into their own error with
``describe_prompt_error``.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

from .executor import load_prompt
from .graph import PromptError

__all__ = ["NotPromptData", "describe_prompt_error", "load_prompt_data"]


class NotPromptData(PromptError):
    """The data is not a prompt at all (not a JSON object or list): no node to blame."""


async def load_prompt_data(
    raw: Any, warmup: bool = False, image_dir: str | Path | None = None, *, engine: Any = None
) -> Any:
    """Validate decoded prompt JSON (dict or list) in the executor; ``PromptError`` if bad.
    Reference images (a LoadImage that is not the live frame) are read from ``image_dir``,
    the server's allowed folder; without one they are refused. ``engine`` is the server's
    (``core.engine``: a real ComfyUI reads them from its own input folder); None: built-in."""
    if not isinstance(raw, (dict, list)):
        raise NotPromptData(
            "prompts must be a JSON object (API format) or a list of them, "
            f"got {type(raw).__name__}"
        )
    load = engine.load if engine is not None else load_prompt
    loop = asyncio.get_running_loop()
    prompt = await loop.run_in_executor(None, functools.partial(load, raw, allowed_dir=image_dir))
    if warmup:
        from .warmup import warm_up

        await loop.run_in_executor(None, warm_up, prompt)
    return prompt


def describe_prompt_error(exc: PromptError) -> tuple[str, dict[str, Any]]:
    """The message and the details (error, node_errors) a client gets for ``exc``."""
    if isinstance(exc, NotPromptData):
        return str(exc), {}
    return f"invalid prompts: {exc}", exc.to_dict()
