"""ipywidgets for a running ``WhipServer``: ``server.dashboard()`` composes them all
(``AudioPlayer`` is also usable alone: ``AudioPlayer(server)``).

Threading rules (details in ``_common.py``): one background refresher per dashboard gathers
data and hands every widget change to the kernel's own thread (``_kernel.py``); the live
video is played by the browser over WHEP (``PlayerWidget``), with the kernel's JPEG preview
as the fallback (images pulled, never pushed, a bounded number awaiting acknowledgement).
"""

from __future__ import annotations

from ._common import FrameFlow, Refresher
from ._kernel import KernelThread
from .audio_meters import AudioMeters
from .audio_player import AudioClip, AudioPlayer, wav_bytes
from .dashboard import Dashboard
from .inspector import WhipInspector, sdp_html, trace_html
from .player import LiveView, PlayerWidget
from .plot import StatsPlot
from .preview import FramePreview
from .prompt_editor import PromptEditor, prompt_errors_html
from .status import SessionTable, status_card_html

__all__ = [
    "AudioClip",
    "AudioMeters",
    "AudioPlayer",
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
    "wav_bytes",
]
