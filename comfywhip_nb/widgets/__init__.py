"""ipywidgets for a running ``WhipServer``: ``server.dashboard()`` composes them all.

Threading rules (details in ``_common.py``): one background refresher per dashboard gathers
data and hands every widget change to the kernel's own thread (``_kernel.py``); the live
video is played by the browser over WHEP (``PlayerWidget``), with the kernel's JPEG preview
as the fallback (images pulled, never pushed, a bounded number awaiting acknowledgement).
"""

from __future__ import annotations

from ._common import FrameFlow, Refresher
from ._kernel import KernelThread
from .dashboard import Dashboard
from .inspector import WhipInspector, sdp_html, trace_html
from .player import LiveView, PlayerWidget
from .plot import StatsPlot
from .preview import FramePreview
from .prompt_editor import PromptEditor, prompt_errors_html
from .status import SessionTable, status_card_html

__all__ = [
    "Dashboard",
    "FrameFlow",
    "FramePreview",
    "KernelThread",
    "LiveView",
    "PlayerWidget",
    "PromptEditor",
    "Refresher",
    "SessionTable",
    "StatsPlot",
    "WhipInspector",
    "prompt_errors_html",
    "sdp_html",
    "status_card_html",
    "trace_html",
]
