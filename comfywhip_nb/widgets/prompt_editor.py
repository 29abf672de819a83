"""PromptEditor: edit API-format JSON, pick a bundled preset, validate and hot-swap.

The node list shows what the server's engine offers (the built-in nodes, or every node of
the ComfyUI given as ``comfyui=``) with each node's inputs, read once when the editor opens.

Apply goes through ``server.set_prompts``, which validates before swapping: on a
``PromptError`` nothing changes and each node error is listed with its node id and class.
Button handlers run on the kernel thread; the refresher only refreshes the target list and
the version line.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets

from ._common import Refresher, close_tree, esc

__all__ = ["PromptEditor", "prompt_errors_html", "prompt_to_json"]

DEFAULT = ("default", None)
MONO_CSS = (
    "<style>.comfywhip-json textarea{font-family:var(--jp-code-font-family,monospace);"
    "font-size:12px}</style>"
)


def prompt_to_json(prompt: Any) -> str:
    """Pretty API-format JSON of a ``Prompt`` (or a dict/list); ``""`` for passthrough."""
    if prompt is None:
        return ""
    graphs = getattr(prompt, "graphs", None)
    if graphs is not None:
        value: Any = graphs[0] if len(graphs) == 1 else graphs
    elif isinstance(prompt, (dict, list)):
        value = prompt
    elif isinstance(prompt, str):
        value = json.loads(prompt)
    else:
        return str(prompt)
    return json.dumps(value, indent=2)


def prompt_errors_html(exc: BaseException) -> str:
    """Node errors as a table (id, class, input, message); other errors as one line."""
    errors = getattr(exc, "errors", None)
    if not errors:
        return f'<div style="color:#cf222e">{esc(type(exc).__name__)}: {esc(exc)}</div>'
    cell = 'style="text-align:left;vertical-align:top;padding:2px 12px 2px 0"'
    rows = "".join(
        "<tr>"
        f"<td {cell}><code>{esc(e.node_id if e.node_id is not None else '-')}</code></td>"
        f"<td {cell}>{esc(e.class_type or '-')}</td>"
        f"<td {cell}>{esc(getattr(e, 'input_name', None) or '-')}</td>"
        f"<td {cell}>{esc(e.message)}</td></tr>"
        for e in errors
    )
    head = "".join(f"<th {cell}>{name}</th>" for name in ("node", "class", "input", "problem"))
    return (
        '<div style="color:#cf222e;font-size:12px">Not applied: the prompt is invalid '
        "(the running prompt is unchanged).</div>"
        '<table class="comfywhip-errors" style="font-size:12px;border-collapse:collapse;'
        f'line-height:1.4"><tr>{head}</tr>{rows}</table>'
    )


class PromptEditor(widgets.VBox):
    """JSON editor with presets, a target (server default, a channel or a session) and Apply."""

    def __init__(self, server: Any, *, autostart: bool = True) -> None:
        self.server = server
        self._refresher: Refresher | None = None
        presets = _preset_names()
        self.presets = widgets.Dropdown(
            options=[("(choose a preset)", "")] + [(n, n) for n in presets],
            value="",
            description="preset",
            layout=widgets.Layout(width="260px"),
            style={"description_width": "48px"},
        )
        self.target = widgets.Dropdown(
            options=[("server default", DEFAULT)],
            value=DEFAULT,
            description="apply to",
            layout=widgets.Layout(width="300px"),
            style={"description_width": "60px"},
        )
        self.editor = widgets.Textarea(
            placeholder='{"1": {"class_type": "LoadTensor", "inputs": {}}, ...}  '
            "(empty = passthrough)",
            layout=widgets.Layout(width="100%", height="200px"),
        )
        self.editor.add_class("comfywhip-json")
        self.apply_button = widgets.Button(
            description="Apply",
            button_style="primary",
            icon="check",
            tooltip="validate, then hot-swap (nothing changes on error)",
        )
        self.load_button = widgets.Button(
            description="Load current", icon="download", tooltip="show the target's prompt"
        )
        self.format_button = widgets.Button(description="Format JSON", icon="indent")
        self.catalogue = _catalogue(server)
        self.nodes = widgets.Combobox(
            options=list(self.catalogue),
            placeholder=f"{len(self.catalogue)} nodes: type to search",
            description="node",
            ensure_option=True,
            layout=widgets.Layout(width="300px"),
            style={"description_width": "36px"},
        )
        self.node_info = widgets.HTML()
        self.message = widgets.HTML()
        self.versions = widgets.HTML()
        super().__init__(
            [
                widgets.HTML(MONO_CSS),
                widgets.HBox([self.presets, self.target]),
                widgets.HBox([self.nodes, self.node_info]),
                self.editor,
                widgets.HBox([self.apply_button, self.load_button, self.format_button]),
                self.message,
                self.versions,
            ]
        )
        self.add_class("comfywhip-prompt-editor")
        self.presets.observe(self._on_preset, names="value")
        self.nodes.observe(self._on_node, names="value")
        self.apply_button.on_click(lambda _b: self.apply())
        self.load_button.on_click(lambda _b: self.load_current())
        self.format_button.on_click(lambda _b: self._format())
        self.applied_versions: list[int] = []
        self._prefill()
        if autostart:
            self._refresher = Refresher(server, [self]).start()

    # -- kernel thread: user actions -------------------------------------------------------
    def _prefill(self) -> None:
        """Start from the server's default prompt, so Apply is never a surprise."""
        with contextlib.suppress(Exception):  # a stopped server has no core: start empty
            self.editor.value = prompt_to_json(self.server.core.prompts.channel_entry(None).prompt)

    def _on_preset(self, change: Mapping[str, Any]) -> None:
        name = change["new"]
        if not name:
            return
        try:
            from ..prompts import load_preset

            self.editor.value = prompt_to_json(load_preset(name))
            self.message.value = (
                f'<span style="font-size:12px">preset <b>{esc(name)}</b> loaded: '
                "press Apply to run it</span>"
            )
        except Exception as exc:
            self.message.value = prompt_errors_html(exc)

    def _on_node(self, change: Mapping[str, Any]) -> None:
        info = self.catalogue.get(change["new"])
        self.node_info.value = node_signature_html(change["new"], info) if info else ""

    def _format(self) -> None:
        text = self.editor.value.strip()
        if not text:
            return
        try:
            self.editor.value = json.dumps(json.loads(text), indent=2)
        except json.JSONDecodeError as exc:
            self.message.value = f'<div style="color:#cf222e">invalid JSON: {esc(exc)}</div>'

    def _target_kwargs(self) -> dict[str, Any]:
        kind, name = self.target.value
        if kind == "channel":
            return {"channel": name}
        if kind == "session":
            return {"session": name}
        return {}

    def apply(self, text: str | None = None) -> int | None:
        """Validate and swap the editor's prompt (or ``text``); returns the new version."""
        if text is not None:
            self.editor.value = text
        text = self.editor.value.strip()
        try:
            version = self.server.set_prompts(text or None, **self._target_kwargs())
        except Exception as exc:  # PromptError, JSON errors, a vanished session
            self.message.value = prompt_errors_html(exc)
            return None
        self.applied_versions.append(version)
        what = "passthrough" if not text else "prompt"
        self.message.value = (
            f'<span style="color:#1a7f37;font-size:12px">✓ {what} applied as version '
            f"{version} to {esc(self.target.label)}</span>"
        )
        if self._refresher is not None:
            self._refresher.wake()  # the refresher owns the version line
        return version

    def load_current(self) -> None:
        kind, name = self.target.value
        try:
            if kind == "session":
                info = dict(self.server.sessions).get(name)
                channel = info.channel_id if info is not None else None
                note = " (the session's channel/default prompt; a per-session prompt is not shown)"
            else:
                channel, note = name, ""
            entry = self.server.core.prompts.channel_entry(channel)
            self.editor.value = prompt_to_json(entry.prompt)
            self.message.value = (
                f'<span style="font-size:12px">loaded version {entry.version} '
                f"({esc(entry.source)}){esc(note)}</span>"
            )
        except Exception as exc:
            self.message.value = prompt_errors_html(exc)

    # -- refresher thread ------------------------------------------------------------------
    def _refresh_versions(self, sessions: Mapping[str, Any]) -> None:
        try:
            default = self.server.core.prompts.channel_entry(None).version
        except Exception:
            return
        parts = [f"server default v{default}" if default else "server default: passthrough"]
        parts += [
            f"{esc(sid[:8])} runs v{info.prompt_version} ({esc(info.prompt_source)})"
            for sid, info in sessions.items()
        ]
        value = f'<span style="font-size:12px;color:#656d76">{" · ".join(parts)}</span>'
        if self.versions.value != value:
            self.versions.value = value

    def tick(self, now: float, sessions: Mapping[str, Any]) -> float:
        channels = sorted({info.channel_id for info in sessions.values()})
        with contextlib.suppress(Exception):  # the store is gone once the server stops
            channels = sorted(set(channels) | set(self.server.core.prompts.channels()))
        options = [("server default", DEFAULT)]
        options += [(f"channel {c}", ("channel", c)) for c in channels]
        options += [
            (f"session {sid[:8]}", ("session", sid))
            for sid, info in sorted(sessions.items(), key=lambda kv: kv[1].created_at)
            if info.kind != "whep"
        ]
        if list(self.target.options) != options:
            current = self.target.value
            with self.target.hold_sync():
                self.target.options = options
                values = [v for _, v in options]
                self.target.value = current if current in values else DEFAULT
        self._refresh_versions(sessions)
        return 1.0

    def on_server_stopped(self) -> None:
        self.versions.value = '<span style="font-size:12px;color:#656d76">server stopped</span>'

    def close(self) -> None:
        refresher = getattr(self, "_refresher", None)  # None also after a failed __init__
        if refresher is not None:
            refresher.stop()
        close_tree(self)


def _catalogue(server: Any) -> dict[str, dict[str, Any]]:
    """The engine's nodes as ``/object_info`` entries; empty when it cannot say."""
    try:
        return dict(server.engine.catalogue())
    except Exception:
        return {}


def node_signature_html(name: str, info: Mapping[str, Any]) -> str:
    """``Name (category): input TYPE, ... -> OUTPUTS`` for the node list."""
    inputs = []
    for group in ("required", "optional"):
        for key, spec in (info.get("input", {}).get(group) or {}).items():
            spec = spec if isinstance(spec, (list, tuple)) else [spec]
            kind = spec[0] if spec else "*"
            kind = "COMBO" if isinstance(kind, (list, tuple)) else str(kind)
            inputs.append(f"{esc(key)} <i>{esc(kind)}</i>" + ("" if group == "required" else "?"))
    outputs = ", ".join(esc(o) for o in info.get("output", ())) or "(output node)"
    category = esc(info.get("category", ""))
    return (
        f'<span style="font-size:12px"><b>{esc(name)}</b> ({category}): '
        f"{', '.join(inputs) or 'no inputs'} &rarr; {outputs}</span>"
    )


def _preset_names() -> list[str]:
    try:
        from ..prompts import list_presets

        return list(list_presets())
    except Exception:  # the prompt engine is optional for the editor's layout
        return []
