"""ipywidgets for a running ``WhipServer``: ``server.dashboard()`` composes them all.

Threading rules (details in ``_common.py``): one background refresher per dashboard sets
widget values; widgets are displayed from the kernel thread only; images are pulled, never
pushed, with a bounded number of frames awaiting the front end's acknowledgement.
"""

from __future__ import annotations

from ._common import FrameFlow, Refresher
from .dashboard import Dashboard
from .inspector import WhipInspector, sdp_html, trace_html
from .plot import StatsPlot
from .preview import FramePreview
from .prompt_editor import PromptEditor, prompt_errors_html
from .status import SessionTable, status_card_html

__all__ = [
    "Dashboard",
    "FrameFlow",
    "FramePreview",
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
