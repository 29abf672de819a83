"""A real ComfyUI as the prompt engine (``WhipServer(comfyui=PATH)``).

Nothing here imports ComfyUI until ``ComfyUIEngine(PATH)`` is made: without the option the
package never touches it. ``startup`` loads the folder in process, ``live_nodes`` adds the
stream's ends, ``convert`` applies ComfyStream's rules and maps ComfyUI's validation errors,
``engine`` runs prompts with ComfyUI's executor and ``catalogue`` lists its nodes.
"""

from __future__ import annotations

from .engine import ComfyUIEngine, ComfyUINodeError, ComfyUIPrompt
from .startup import ComfyUIRuntime, PackFailure

__all__ = ["ComfyUIEngine", "ComfyUINodeError", "ComfyUIPrompt", "ComfyUIRuntime", "PackFailure"]
