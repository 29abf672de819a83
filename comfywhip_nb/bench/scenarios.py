"""Scenarios (a)-(f) of issue 6 as A/B leg pairs, and the per-leg metrics.

Every configuration is a pair of legs, A and B, run A B A B ... so that drift on a shared
machine hits both sides; results are reported as ratios B / A. In (a)-(c) A is the raw
baseline and B the project; (d) and (e) compare the project with itself (no swap vs a hot
swap every second, no preview vs a 15 fps preview), since the raw stack has neither.
(f) reuses the CPU time measured in (a). (g) runs the same prompts through the built-in
engine (A) and a real ComfyUI (B, ``--comfyui PATH``); it is not in the default set.
(h) publishes audio alone and compares no audio prompt (A, passthrough) with a 20 ms audio
prompt (B) on the project (``audio.py``); it runs once per bench run, not once per codec.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass, field, replace
from typing import Any

from .audio import AUDIO_BUFFER_MS

__all__ = ["Config", "LegSpec", "Settings", "configs_for", "leg_metrics"]

SCENARIOS = "abcdefgh"
DEFAULT_SCENARIOS = "abcdefh"
"""(g) needs a ComfyUI folder, so it runs only when asked for."""
ENGINE_PROMPTS = ("invert", "blur")
STALL_WINDOW_INTERVALS = 3
"""Gaps of frames processed within this many input intervals after a swap count as stall."""


@dataclass(frozen=True)
class Settings:
    """What ``comfywhip bench`` was asked to do."""

    quick: bool = False
    scenarios: str = DEFAULT_SCENARIOS
    codecs: tuple[str, ...] = ("VP8", "H264")
    duration: float = 5.0
    warmup: float = 1.5
    reps: int = 2
    size: tuple[int, int] | None = None
    b_sessions: tuple[int, ...] = (1, 2, 4, 8, 16)
    swap_duration: float = 20.0
    settle: float = 10.0
    comfyui: str | None = None
    """The ComfyUI folder for (g)."""
    overhead_reps: int = 30
    """Frames per engine for (g)'s in-process per-frame overhead."""


@dataclass(frozen=True)
class LegSpec:
    """One run of one stack: a publisher with ``sessions`` streams against one receiver."""

    scenario: str
    config: str
    side: str
    stack: str
    label: str
    width: int
    height: int
    fps: float | None
    sessions: int
    codec: str
    warmup: float
    duration: float
    delay: float = 0.0
    preview: str = "frame"
    preview_hz: float = 0.0
    swap_every: float = 0.0
    swap_dry: bool = False
    """Note the swap instants without swapping: the control for (d)'s stall measure."""
    settle: bool = False
    """Let a start-up receive backlog drain first (input the stack is expected to sustain)."""
    prompt: str = "invert"
    """The receiver's prompt (``project.PROMPTS``); (c) replaces it with a slow node."""
    audio: str = ""
    """(h): "passthrough" (no audio prompt) or "prompt" (``audio.audio_prompt``); the
    publisher then sends audio only. Empty: a video leg."""

    def describe(self) -> str:
        if self.audio:
            many = f" x{self.sessions}" if self.sessions > 1 else ""
            return f"({self.scenario}) audio Opus{many} {self.label}"
        rate = f"{self.fps:g} fps" if self.fps else "unpaced"
        many = f" x{self.sessions}" if self.sessions > 1 else ""
        return f"({self.scenario}) {self.height}p {rate}{many} {self.codec} {self.label}"


@dataclass(frozen=True)
class Config:
    """An A/B pair of legs measured together."""

    scenario: str
    name: str
    a: LegSpec
    b: LegSpec
    extra: dict[str, Any] = field(default_factory=dict)


def _size(settings: Settings, default: tuple[int, int]) -> tuple[int, int]:
    return settings.size or default


def configs_for(scenario: str, settings: Settings, codec: str, sessions: int = 1) -> list[Config]:
    """The configurations of one scenario for one codec (``sessions`` is N for (b))."""
    w720, h720 = _size(settings, (1280, 720))
    w480, h480 = _size(settings, (640, 480))
    base = {"codec": codec, "warmup": settings.warmup, "duration": settings.duration}
    raw = {"stack": "baseline", "label": "baseline", "side": "A"}
    ours = {"stack": "project", "label": "project", "side": "B"}

    def pair(name: str, extra: dict[str, Any] | None = None, **kw: Any) -> Config:
        a = LegSpec(scenario=scenario, config=name, **raw, **base, **kw)  # type: ignore[arg-type]
        b = replace(a, **ours)
        return Config(scenario, name, a, b, extra or {})

    if scenario == "a":
        return [
            pair(
                f"a {h720}p30 {codec}", width=w720, height=h720, fps=30.0, sessions=1, settle=True
            ),
            pair(f"a {h720}p max {codec}", width=w720, height=h720, fps=None, sessions=1),
        ]
    if scenario == "b":
        name = f"b {h480}p30 x{sessions} {codec}"
        return [
            pair(
                name,
                {"n": sessions},
                width=w480,
                height=h480,
                fps=30.0,
                sessions=sessions,
                settle=True,
            )
        ]
    if scenario == "c":
        delay = 2.0 / 30.0
        name = f"c {h480}p30 slow node {codec}"
        return [pair(name, width=w480, height=h480, fps=30.0, sessions=1, delay=delay)]
    project = {"stack": "project", "side": "A", "width": w480, "height": h480, "fps": 30.0}
    if scenario == "d":
        a = LegSpec(
            scenario="d",
            config=f"d {h480}p30 hot swap {codec}",
            label="no swap",
            sessions=1,
            swap_every=1.0,
            swap_dry=True,
            **project,  # type: ignore[arg-type]
            **{**base, "duration": settings.swap_duration},
        )
        b = replace(a, side="B", label="swap every 1 s", swap_dry=False)
        return [Config("d", a.config, a, b)]
    if scenario == "e":
        a = LegSpec(
            scenario="e",
            config=f"e {h720}p30 preview {codec}",
            label="preview off",
            sessions=1,
            preview="none",
            **{**project, "width": w720, "height": h720},  # type: ignore[arg-type]
            **base,
        )
        b = replace(a, side="B", label="preview 15 fps", preview_hz=15.0)
        return [Config("e", a.config, a, b)]
    if scenario == "g":
        configs = []
        for prompt in ENGINE_PROMPTS:
            a = LegSpec(
                scenario="g",
                config=f"g {h720}p30 {prompt} {codec}",
                label="built-in engine",
                sessions=1,
                prompt=prompt,
                settle=True,
                **{**project, "width": w720, "height": h720},  # type: ignore[arg-type]
                **base,
            )
            b = replace(a, side="B", stack="comfyui", label="ComfyUI engine")
            configs.append(Config("g", a.config, a, b, {"prompt": prompt}))
        return configs
    if scenario == "h":
        a = LegSpec(
            scenario="h",
            config=f"h audio {AUDIO_BUFFER_MS:g} ms prompt Opus",
            label="no audio prompt",
            sessions=1,
            audio="passthrough",
            **{**project, "fps": None},  # type: ignore[arg-type]
            **{**base, "codec": "Opus"},
        )
        b = replace(a, side="B", label=f"audio prompt {AUDIO_BUFFER_MS:g} ms", audio="prompt")
        return [Config("h", a.config, a, b, {"buffer_ms": AUDIO_BUFFER_MS})]
    return []  # (f) is computed from (a)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _downsample(points: list[tuple[float, float]], limit: int = 200) -> list[list[float]]:
    step = max(1, len(points) // limit)
    return [[round(t, 4), round(v, 2)] for t, v in points[::step]]


def _max_gaps_after_swaps(times: list[float], swaps: list[float], interval: float) -> list[float]:
    """For each swap: the longest gap between processed frames in the few intervals after."""
    gaps = []
    for swap in swaps:
        window_end = swap + STALL_WINDOW_INTERVALS * interval
        worst = 0.0
        for prev, cur in itertools.pairwise(times):
            if cur >= swap and prev <= window_end:
                worst = max(worst, cur - prev)
        gaps.append(worst)
    return gaps


def leg_metrics(spec: LegSpec, measure: dict[str, Any], send_times: list[list[float]]) -> dict:
    """Fps, latency, CPU, drops and stalls of one leg from the receiver's raw records."""
    t0, t1 = measure["t0"], measure["t1"]
    span = max(t1 - t0, 1e-6)
    records = measure["records"]
    counts = [0] * spec.sessions
    latencies: list[float] = []
    server_latencies: list[float] = []
    series: list[tuple[float, float]] = []
    times: dict[int, list[float]] = {s: [] for s in range(spec.sessions)}
    bad = 0
    for session, _index, _received, processed_at in measure["before_window"] + records:
        if session < spec.sessions:
            times[session].append(processed_at)
    for session, index, received_at, processed_at in records:
        if session >= spec.sessions or index >= len(send_times[session]):
            bad += 1
            continue
        latency = processed_at - send_times[session][index]
        if latency < 0:  # a misread stamp: cannot be sent after it was processed
            bad += 1
            continue
        counts[session] += 1
        latencies.append(latency * 1e3)
        server_latencies.append((processed_at - received_at) * 1e3)
        series.append((processed_at - t0, latency * 1e3))
    sent = [sum(1 for t in ts if t0 <= t <= t1) for ts in send_times]
    # frames sent early enough in the window to be processed before it ends, never processed
    seen = {(s, i) for s, i, _, _ in records}
    due = [
        (s, i) for s, ts in enumerate(send_times) for i, t in enumerate(ts) if t0 <= t <= t1 - 0.5
    ]
    lost = sum(1 for key in due if key not in seen)
    fps = [c / span for c in counts]
    before, after = measure["counters_before"], measure["counters_after"]
    interval = 1.0 / spec.fps if spec.fps else None
    gaps = [b - a for ts in times.values() for a, b in itertools.pairwise(ts)]
    result: dict[str, Any] = {
        "spec": spec.__dict__,
        "window_s": round(span, 3),
        "settle_s": round(measure.get("settle_s", 0.0), 3),
        "fps": round(statistics.fmean(fps), 2) if fps else 0.0,
        "fps_min": round(min(fps), 2) if fps else 0.0,
        "sent_fps": round(statistics.fmean(sent) / span, 2) if sent else 0.0,
        "frames": sum(counts),
        "p50_ms": _percentile(latencies, 0.5),
        "p95_ms": _percentile(latencies, 0.95),
        "server_p50_ms": _percentile(server_latencies, 0.5),
        "server_p95_ms": _percentile(server_latencies, 0.95),
        "cpu_ms_per_frame": measure["cpu_s"] * 1e3 / sum(counts) if sum(counts) else None,
        "cpu_share": measure["cpu_s"] / span,
        "max_gap_ms": max(gaps) * 1e3 if gaps else None,
        "lost": lost,
        "lost_share": lost / len(due) if due else 0.0,
        "unreadable": measure["unreadable"],
        "misread": bad,
        "dropped": after.get("frames_dropped", 0) - before.get("frames_dropped", 0),
        "queue_growth": after.get("queued", 0) - before.get("queued", 0),
        "sessions_before": before.get("sessions"),
        "sessions_after": after.get("sessions"),
        "errors": after.get("errors", []),
        "latency_series": _downsample(series),
    }
    swaps = measure.get("swaps") or []
    if swaps and interval:
        merged = sorted(t for ts in times.values() for t in ts)
        swap_gaps = _max_gaps_after_swaps(merged, swaps, interval)
        stalls = [max(0.0, gap - interval) * 1e3 for gap in swap_gaps]
        result["swaps"] = len(swaps)
        result["swap_max_gap_ms"] = max(swap_gaps) * 1e3
        result["stall_ms"] = max(stalls)
        result["stall_median_ms"] = statistics.median(stalls)
    for key in ("p50_ms", "p95_ms", "server_p50_ms", "server_p95_ms", "cpu_ms_per_frame"):
        if result[key] is not None:
            result[key] = round(result[key], 2)
    return result
