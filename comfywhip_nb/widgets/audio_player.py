"""AudioPlayer: plays the last seconds of a session's processed audio on demand.

"Play last N s" asks ``server.latest_audio`` for the newest processed audio, writes it as a
16-bit WAV (stdlib ``wave``) and hands it to an ``ipywidgets.Audio``, with one status line
(session, length, rate, channels, level).

Threads: the button handler runs on the kernel's thread and must never wait there, so it only
starts one short-lived fetch thread (one at a time: a click during a fetch is ignored); the
fetch crosses to the server through ``latest_audio`` (bounded by ``WhipServer``'s call
timeout) and hands the widget changes back to the kernel's thread (``KernelThread``). ``play()``
does the same synchronously, for cells and tests. The session list is refreshed by a
``Refresher`` (the dashboard's, or the player's own when standalone).
"""

from __future__ import annotations

import io
import itertools
import math
import threading
import wave
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import numpy as np

from ._common import Refresher, close_tree, esc
from ._kernel import KernelThread

__all__ = ["AudioClip", "AudioPlayer", "wav_bytes"]

MUTED = "var(--jp-ui-font-color2, #656d76)"
NEWEST = ""
"""The source dropdown's value for "the newest session with audio"."""
MAX_SECONDS = 30.0
"""How much processed audio a session keeps (``AudioProcessor.history_s``)."""
NO_AUDIO = (
    "No audio processed yet: publish with audio (<code>WHIPClient.publish(..., audio=True)</code>"
    ", <code>comfywhip publish --audio</code>, or the server's page with a microphone)."
)
_counter = itertools.count(1)


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """float ``[channels, samples]`` (or ``[samples]``) in -1..1 -> a 16-bit PCM WAV file."""
    data = np.atleast_2d(np.asarray(samples, dtype=np.float32))
    pcm = np.clip(np.round(data * 32768.0), -32768, 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(pcm.shape[0])
        out.setsampwidth(2)
        out.setframerate(int(sample_rate))
        out.writeframes(np.ascontiguousarray(pcm.T).tobytes())  # interleaved frames
    return buffer.getvalue()


def _dbfs(value: float) -> float:
    return 20.0 * math.log10(value) if value > 0 else -120.0


@dataclass(frozen=True)
class AudioClip:
    """What one "Play" fetched: the WAV file and the numbers the status line shows."""

    wav: bytes
    samples: np.ndarray
    sample_rate: int
    session_id: str | None
    level_db: float
    peak_db: float

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        return self.samples.shape[1] / self.sample_rate if self.sample_rate else 0.0

    def describe(self) -> str:
        who = f"session {self.session_id[:8]}" if self.session_id else "newest session"
        return (
            f"{who} · {self.duration_s:.1f} s · {self.sample_rate} Hz · {self.channels} ch · "
            f"level {self.level_db:.0f} dBFS (peak {self.peak_db:.0f})"
        )


def fetch_clip(server: Any, seconds: float, session_id: str | None) -> AudioClip | str:
    """The clip, or the sentence to show instead (never raises: it runs on a helper thread)."""
    if not server.running:
        return "The server is stopped."
    try:
        got = server.latest_audio(seconds=seconds, session_id=session_id)
    except KeyError:
        return f"Session {esc((session_id or '')[:8])} is gone."
    except Exception as exc:  # stopped meanwhile, or the loop did not answer in time
        if not server.running:
            return "The server is stopped."
        return f"Could not fetch audio: {esc(type(exc).__name__)}: {esc(exc)}"
    if got is None or got[0].size == 0:
        return NO_AUDIO
    samples, rate = got
    mono = np.asarray(samples, dtype=np.float64)
    rms = math.sqrt(float(np.mean(np.square(mono))))
    peak = float(np.max(np.abs(mono)))
    return AudioClip(
        wav=wav_bytes(samples, rate),
        samples=samples,
        sample_rate=int(rate),
        session_id=session_id,
        level_db=_dbfs(rms),
        peak_db=_dbfs(peak),
    )


class AudioPlayer(widgets.VBox):
    """ "Play last N s" of a session's processed audio (``session_id=None``: the newest
    session with audio; the dropdown picks another). ``autostart=False`` when a dashboard's
    refresher drives it."""

    def __init__(
        self,
        server: Any,
        *,
        seconds: float = 5.0,
        session_id: str | None = None,
        autoplay: bool = True,
        autostart: bool = True,
    ) -> None:
        self.server = server
        self.seconds = widgets.BoundedFloatText(
            value=min(max(seconds, 0.5), MAX_SECONDS),
            min=0.5,
            max=MAX_SECONDS,
            step=0.5,
            description="seconds",
            style={"description_width": "56px"},
            layout=widgets.Layout(width="130px"),
        )
        self.source = widgets.Dropdown(
            options=[("newest session with audio", NEWEST)],
            value=NEWEST,
            description="from",
            style={"description_width": "36px"},
            layout=widgets.Layout(width="280px"),
        )
        if session_id:
            self.source.options = [*self.source.options, (session_id[:8], session_id)]
            self.source.value = session_id
        self.button = widgets.Button(icon="play", layout=widgets.Layout(width="150px"))
        self.audio = widgets.Audio(
            value=b"",
            format="wav",
            autoplay=autoplay,
            loop=False,
            controls=True,
            layout=widgets.Layout(display="none"),
        )
        self.status = widgets.HTML(
            f'<span style="font-size:12px;color:{MUTED}">Press play to hear the last seconds '
            "of processed audio.</span>"
        )
        super().__init__(
            [
                widgets.HBox([self.button, self.seconds, self.source]),
                self.audio,
                self.status,
            ]
        )
        self.add_class("comfywhip-audio-player")
        self._label()
        self.seconds.observe(lambda _change: self._label(), names="value")
        self.button.on_click(lambda _button: self.click())
        self._kernel = KernelThread.current()
        self._lock = threading.Lock()
        self._fetching: threading.Thread | None = None
        #: the last clip shown, and the threads that fetched (the kernel thread never does
        #: from a click)
        self.clip: AudioClip | None = None
        self.fetched_from: set[str] = set()
        self._refresher: Refresher | None = None
        if autostart:
            self._refresher = Refresher(server, [self]).start()

    def _label(self) -> None:
        self.button.description = f"Play last {self.seconds.value:g} s"

    def _target(self) -> str | None:
        return self.source.value or None

    # -- fetching -------------------------------------------------------------------------
    def click(self) -> bool:
        """The button: start one fetch thread and return at once; False while one runs."""
        seconds, session_id = float(self.seconds.value), self._target()
        with self._lock:
            if self._fetching is not None:
                return False
            self._fetching = threading.Thread(
                target=self._fetch_and_show,
                args=(seconds, session_id),
                name=f"comfywhip-audio-player-{next(_counter)}",
                daemon=True,
            )
            thread = self._fetching
        self.button.disabled = True
        self._set_status(f'<span style="color:{MUTED}">fetching…</span>')
        thread.start()
        return True

    def _fetch_and_show(self, seconds: float, session_id: str | None) -> None:
        self.fetched_from.add(threading.current_thread().name)
        result: AudioClip | str = "Could not fetch audio."
        try:
            result = fetch_clip(self.server, seconds, session_id)
        finally:
            with self._lock:
                self._fetching = None
            self._kernel.call(lambda: self._show(result))  # False: the kernel is gone

    def wait(self, timeout: float = 15.0) -> bool:
        """Wait for a running fetch (tests, scripts; never from the kernel thread of a live
        front end); True when none is left."""
        thread = self._fetching
        if thread is not None:
            thread.join(timeout)
        return self._fetching is None

    def play(self, seconds: float | None = None) -> AudioClip | None:
        """Fetch and show now, on the calling thread (a cell); the clip, or None with the
        reason in ``status``."""
        if seconds is not None:
            self.seconds.value = min(max(seconds, 0.5), MAX_SECONDS)
        self.fetched_from.add(threading.current_thread().name)
        result = fetch_clip(self.server, float(self.seconds.value), self._target())
        self._show(result)
        return self.clip if isinstance(result, AudioClip) else None

    def _show(self, result: AudioClip | str) -> None:
        """Kernel thread: the clip into the Audio widget, or the reason into the status."""
        self.button.disabled = False
        if isinstance(result, str):
            self._set_status(result)
            return
        self.clip = result
        self.audio.value = result.wav
        self.audio.layout.display = "flex"
        self._set_status(esc(result.describe()))

    def _set_status(self, text: str) -> None:
        value = f'<span style="font-size:12px">{text}</span>'
        if self.status.value != value:
            self.status.value = value

    # -- the refresher: keep the session list current --------------------------------------
    def tick(self, now: float, sessions: Mapping[str, Any]) -> float:
        with_audio = sorted(
            (s for s in sessions.values() if s.has_audio), key=lambda s: s.created_at
        )
        options = [("newest session with audio", NEWEST)] + [
            (f"{s.id[:8]} ({s.channel_id})", s.id) for s in with_audio
        ]
        chosen = self.source.value
        if chosen and all(value != chosen for _, value in options):
            options.append((f"{chosen[:8]} (gone)", chosen))  # a choice is never switched
        if list(self.source.options) != options:
            self.source.options = options
            self.source.value = chosen
        return 1.0

    def on_server_stopped(self) -> None:
        self._set_status("The server is stopped.")

    def close(self) -> None:
        refresher = getattr(self, "_refresher", None)  # None also after a failed __init__
        if refresher is not None:
            refresher.stop()
        close_tree(self)
