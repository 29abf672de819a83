"""comfywhip_nb: a WHIP (RFC 9725) server in a notebook kernel running ComfyUI-style prompts.

Public API (re-exports only)::

    from comfywhip_nb import WhipServer, WHIPClient, load_prompt
"""

from __future__ import annotations

import logging

from .client.whip_client import PublishError, WHIPClient
from .errors import WhipError
from .prompts import Prompt, PromptError, load_prompt, node, register_nodes
from .rtc.ice import IceServer
from .rtc.sessions import SessionInfo
from .server import WhipServer

__all__ = [
    "IceServer",
    "Prompt",
    "PromptError",
    "PublishError",
    "SessionInfo",
    "WHIPClient",
    "WhipError",
    "WhipServer",
    "load_prompt",
    "node",
    "register_nodes",
]

__version__ = "0.1.0"

# library etiquette: no output unless the application configures logging
logging.getLogger(__name__).addHandler(logging.NullHandler())
