"""PlayerWidget: the processed video over WHEP, played by the browser itself.

The front end (``player.js``, an anywidget ES module) signals straight to the server's
``/whep`` endpoint and plays the answer in a ``<video>``: frames never pass through the
kernel, so the video runs at full rate whatever the kernel does (a blocking cell included).
It needs the browser to reach the server's HTTP port and its UDP media ports.

``LiveView`` pairs it with the kernel's JPEG ``FramePreview`` as the fallback: in mode
``"auto"`` the front end reports when WHEP cannot work from this browser (a remote kernel,
JupyterHub, Colab: the server's address is not reachable, or UDP is blocked) and the kernel
switches to the preview, with the one-line reason; ``"whep"`` and ``"jpeg"`` force a mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anywidget
import ipywidgets as widgets
import traitlets

from ._common import close_tree, esc
from .preview import FramePreview

__all__ = ["MODES", "LiveView", "PlayerWidget"]

MODES = ("auto", "whep", "jpeg")


class PlayerWidget(anywidget.AnyWidget):
    """A WHEP ``<video>`` of a channel (``target=""``: the default channel) or a session.

    ``server_url`` is the server's address *as the browser sees it* (``server.url`` unless
    the browser reaches it elsewhere, e.g. through a tunnel). The front end sets ``active``
    (``"whep"`` once media flows, ``"jpeg"`` after falling back) and ``status`` (one line).
    """

    _esm = Path(__file__).with_name("player.js")

    server_url = traitlets.Unicode("").tag(sync=True)
    target = traitlets.Unicode("").tag(sync=True)
    token = traitlets.Unicode("").tag(sync=True)
    mode = traitlets.Enum(MODES, default_value="auto").tag(sync=True)
    show_input = traitlets.Bool(False).tag(sync=True)
    width = traitlets.Unicode("640px").tag(sync=True)
    fit = traitlets.Enum(("contain", "cover", "fill"), default_value="contain").tag(sync=True)
    fallback_after = traitlets.Float(5.0).tag(sync=True)
    active = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)

    def __init__(self, server: Any = None, target: str = "", **kwargs: Any) -> None:
        if server is not None:
            kwargs.setdefault("server_url", server.url)
            token = getattr(getattr(server, "config", None), "token", None)
            if token:
                kwargs.setdefault("token", token)
        super().__init__(target=target, **kwargs)
        self.add_class("comfywhip-player-widget")


class LiveView(widgets.VBox):
    """The dashboard's live video: the WHEP player, with the JPEG preview as its fallback.

    ``mode``: ``"auto"`` (player; the preview takes over when the browser reports that WHEP
    cannot work), ``"whep"`` (player only) or ``"jpeg"`` (the preview only).
    """

    def __init__(
        self,
        server: Any,
        *,
        mode: str = "auto",
        url: str | None = None,
        target: str = "",
        show_input: bool = False,
        max_fps: float = 15.0,
        max_in_flight: int = 2,
        fallback_after: float = 5.0,
        autostart: bool = True,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        self.server = server
        self.player = PlayerWidget(
            server,
            target=target,
            mode=mode,
            show_input=show_input,
            fallback_after=fallback_after,
            **({"server_url": url} if url else {}),
        )
        self.preview = FramePreview(
            server,
            max_fps=max_fps,
            show_input=show_input,
            max_in_flight=max_in_flight,
            autostart=autostart,
            track_views=False,  # switched on once the preview is the live view (_apply)
        )
        self.reason = widgets.HTML()
        self.reason.add_class("comfywhip-live-reason")
        self.mode = widgets.ToggleButtons(
            options=[("auto", "auto"), ("WHEP video", "whep"), ("JPEG preview", "jpeg")],
            value=mode,
            style={"button_width": "96px"},
            tooltips=[
                "WHEP in the browser, JPEG preview if the browser cannot reach the server",
                "always the WHEP player",
                "always the kernel's JPEG preview (works wherever the notebook works)",
            ],
        )
        super().__init__([self.mode, self.player, self.preview, self.reason])
        self.add_class("comfywhip-live")
        self.player.observe(self._on_player, names=["active", "status"])
        self.mode.observe(self._on_mode, names="value")
        self._apply()

    @property
    def using_jpeg(self) -> bool:
        """Whether the JPEG preview is the live view now (chosen, or fallen back to)."""
        return self.player.mode == "jpeg" or (
            self.player.mode == "auto" and self.player.active == "jpeg"
        )

    def _on_mode(self, change: Mapping[str, Any]) -> None:
        self.player.active = ""
        self.player.status = ""
        self.player.mode = change["new"]
        self._apply()

    def _on_player(self, change: Mapping[str, Any]) -> None:
        self._apply()

    def _apply(self) -> None:
        """Kernel thread (front-end events and the constructor): show what is live."""
        jpeg = self.using_jpeg
        self.preview.layout.display = "flex" if jpeg else "none"
        if self.preview.live.value != jpeg:
            self.preview.live.value = jpeg  # a hidden preview encodes nothing
        if jpeg:
            self.preview._shown.track()
            self.preview.mark_displayed()
        status = self.player.status
        if self.player.mode == "auto" and self.player.active == "jpeg" and status:
            text = f'<span style="font-size:12px;color:#9a6700">{esc(status)}</span>'
        else:
            text = ""
        if self.reason.value != text:
            self.reason.value = text

    def tick(self, now: float, sessions: Mapping[str, Any]) -> float:
        return self.preview.tick(now, sessions)

    def prepare(self, now: float, sessions: Mapping[str, Any]) -> None:
        self.preview.prepare(now, sessions)

    def on_server_stopped(self) -> None:
        self.preview.on_server_stopped()

    def mark_displayed(self) -> None:
        if self.using_jpeg:
            self.preview.mark_displayed()

    def close(self) -> None:
        preview = getattr(self, "preview", None)  # None after a failed __init__
        if preview is not None:
            preview.close()
        close_tree(self)
