"""Which prompt each session runs: default, per channel, per session; all versioned.

Resolution order for a session: its own prompt (``?prompts=`` on POST, or
``set_prompts(p, session=id)``), then its channel's prompt, then the server default. Every
swap gets a new, server-wide increasing version number, so ``prompt_version`` in the stats
says which swap a processed frame came from. Validation (``load_prompt``) happens before a
swap is recorded: an invalid prompt changes nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["PromptStore", "VersionedPrompt"]


@dataclass(frozen=True)
class VersionedPrompt:
    prompt: Any
    """A validated ``comfywhip_nb.prompts.Prompt`` (None = passthrough)."""
    version: int
    source: str
    """``session``, ``channel`` or ``default``."""


class PromptStore:
    """Thread-safe: the kernel thread and the event loop both read and write it."""

    def __init__(self, default: Any = None) -> None:
        self._lock = threading.Lock()
        self._version = 0
        self._default = VersionedPrompt(default, 0, "default")
        self._channels: dict[str, VersionedPrompt] = {}
        if default is not None:
            self._default = VersionedPrompt(default, self._next(), "default")

    def _next(self) -> int:
        self._version += 1
        return self._version

    def set_default(self, prompt: Any) -> VersionedPrompt:
        with self._lock:
            self._default = VersionedPrompt(prompt, self._next(), "default")
            return self._default

    def set_channel(self, channel: str, prompt: Any) -> VersionedPrompt:
        """Set (or, with ``prompt=None``, clear) the prompt of one channel."""
        with self._lock:
            if prompt is None:
                self._channels.pop(channel, None)
                return VersionedPrompt(self._default.prompt, self._next(), "default")
            entry = VersionedPrompt(prompt, self._next(), "channel")
            self._channels[channel] = entry
            return entry

    def new_session_version(self, prompt: Any) -> VersionedPrompt:
        with self._lock:
            return VersionedPrompt(prompt, self._next(), "session")

    def for_channel(self, channel: str) -> VersionedPrompt:
        with self._lock:
            return self._channels.get(channel, self._default)

    def channel_entry(self, channel: str | None) -> VersionedPrompt:
        """The entry a GET /prompts shows: the channel's own, else the default."""
        with self._lock:
            if channel is None:
                return self._default
            return self._channels.get(channel, self._default)

    def channels(self) -> dict[str, VersionedPrompt]:
        with self._lock:
            return dict(self._channels)
