"""Optional warm-up: run a new prompt once on a small blank frame before it goes live.

The first run of a prompt can be slow (CUDA context, cuDNN autotune, lazy weights) and may
fail in ways validation cannot see. With ``WhipServer(warmup=True)`` every new prompt runs
once here, in the caller's thread or an executor (never the event loop), before the swap: a
failure is a ``PromptError`` and nothing changes; a slow first run no longer costs a live
frame or trips ``frame_timeout``.
"""

from __future__ import annotations

import time
from typing import Any

import torch

__all__ = ["warm_up"]


def warm_up(prompt: Any, width: int = 64, height: int = 64) -> float:
    """Run ``prompt`` once on a mid-grey ``[1,H,W,3]`` image; returns the seconds it took.

    Raises ``PromptError`` naming the failing node, so callers treat it like validation.
    """
    from .graph import NodeError, PromptError

    image = torch.full((1, height, width, 3), 0.5, dtype=torch.float32)
    started = time.perf_counter()
    try:
        out = prompt.run(image)
    except Exception as exc:
        node_id = getattr(exc, "node_id", None)
        class_type = getattr(exc, "class_type", None)
        message = f"failed its warm-up run: {exc}"
        raise PromptError([NodeError(node_id, class_type, message)]) from exc
    if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[-1] not in (1, 3):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PromptError(
            [NodeError(None, None, f"warm-up run returned {shape}, not an IMAGE [B,H,W,3]")]
        )
    return time.perf_counter() - started
