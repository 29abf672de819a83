"""The publishing side: a WHIP client built on aiortc, and the media it can send.

``whip_client`` holds ``WHIPClient`` (POST the offer, trickle candidates, DELETE on exit) and
``run_publish`` behind ``comfywhip publish``; ``sources`` the built-in test pattern, sine
audio, and image, video-file and camera sources.
"""

from __future__ import annotations

from .whip_client import PublishError, WHIPClient, run_publish

__all__ = ["PublishError", "WHIPClient", "run_publish"]
