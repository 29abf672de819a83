"""Audio level meters and audio stats for one session row of the session table.

Why widgets and not an HTML bar: a ``FloatProgress`` per level is one small model whose
``value`` changes, where an HTML bar would resend the whole row's markup. Rows are pooled
(``status.SessionTable``), so the number of meter models is bounded by the largest number
of simultaneous sessions. Values are rounded to half a dB so a steady tone sends nothing.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from ._common import esc

__all__ = ["FLOOR_DB", "AudioMeters", "audio_stats_html", "meter_value"]

FLOOR_DB = -60.0
"""The meters' scale: -60..0 dBFS (anything quieter shows as an empty bar)."""
MUTED = "var(--jp-ui-font-color2, #656d76)"


def meter_value(level_db: float) -> float:
    """A level in dBFS clamped to the meter's scale, rounded to half a dB."""
    return round(min(0.0, max(FLOOR_DB, float(level_db))) * 2) / 2


def bar_style(level_db: float) -> str:
    """Green below -12 dBFS, amber up to -3, red above (close to clipping)."""
    if level_db > -3.0:
        return "danger"
    if level_db > -12.0:
        return "warning"
    return "success"


def _db(level_db: float) -> str:
    return f"{level_db:.0f} dB" if level_db > FLOOR_DB else "silent"


def audio_stats_html(info: Any) -> str:
    """One line of a session's audio numbers (the session table's audio line)."""
    rate = f"{info.audio_sample_rate / 1000:g} kHz" if info.audio_sample_rate else "- kHz"
    buffer = f"{info.audio_buffer_ms:.0f} ms buffer" if info.audio_buffer_ms else "passthrough"
    parts = [
        rate,
        f"{info.audio_frames_in} in / {info.audio_frames_out} out",
        f"{info.audio_buffers_dropped} buffers dropped",
        f"latency {info.audio_latency_ms:.0f} / {info.audio_latency_p95_ms:.0f} ms (p50/p95)",
        buffer,
    ]
    text = f'<span style="color:{MUTED}">audio</span> ' + " · ".join(esc(p) for p in parts)
    error = info.audio_last_error or ""
    if error:
        text += f' <span title="{esc(error)}" style="color:#cf222e">{esc(error)}</span>'
    return (
        f'<div style="font-size:12px;white-space:nowrap;overflow:hidden;'
        f'text-overflow:ellipsis">{text}</div>'
    )


def _meter(label: str) -> widgets.FloatProgress:
    return widgets.FloatProgress(
        value=FLOOR_DB,
        min=FLOOR_DB,
        max=0.0,
        description=label,
        bar_style="success",
        style={"description_width": "24px"},
        layout=widgets.Layout(width="150px", height="18px"),
    )


class AudioMeters:
    """Input and output level meters plus the audio stats line of one session row.

    ``box`` is hidden for sessions without audio. Kernel thread only (``show``/``hide`` run
    in the refresher's hand-off, like the rest of the row).
    """

    def __init__(self) -> None:
        self.level_in = _meter("in")
        self.level_out = _meter("out")
        self.level_in.add_class("comfywhip-level-in")
        self.level_out.add_class("comfywhip-level-out")
        self.numbers = widgets.HTML(layout=widgets.Layout(width="120px"))
        self.stats = widgets.HTML(layout=widgets.Layout(flex="1 1 auto", min_width="0"))
        self.box = widgets.HBox(
            [self.level_in, self.level_out, self.numbers, self.stats],
            layout=widgets.Layout(display="none", align_items="center", padding="0 0 2px 8px"),
        )
        self.box.add_class("comfywhip-audio-meters")

    @property
    def visible(self) -> bool:
        return self.box.layout.display != "none"

    def show(self, info: Any) -> None:
        if not info.has_audio:
            self.hide()
            return
        for meter, level in (
            (self.level_in, info.audio_level_in_db),
            (self.level_out, info.audio_level_out_db),
        ):
            value, style = meter_value(level), bar_style(level)
            if meter.value != value:
                meter.value = value
            if meter.bar_style != style:
                meter.bar_style = style
        numbers = (
            f'<span style="font-size:12px;font-family:var(--jp-code-font-family, monospace)">'
            f"{esc(_db(info.audio_level_in_db))} / {esc(_db(info.audio_level_out_db))}</span>"
        )
        if self.numbers.value != numbers:
            self.numbers.value = numbers
        stats = audio_stats_html(info)
        if self.stats.value != stats:
            self.stats.value = stats
        if self.box.layout.display != "flex":
            self.box.layout.display = "flex"

    def hide(self) -> None:
        if self.box.layout.display != "none":
            self.box.layout.display = "none"
