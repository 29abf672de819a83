"""Aggregate A B A B legs into one line per configuration and check issue 6's targets.

Means over repetitions per side, then ratios of the means (B / A). Each target becomes a
row ``{target, config, value, limit, passed}``; a target whose legs failed is ``None``
(reported as ERROR rather than silently passing or missing).
"""

from __future__ import annotations

import statistics
from typing import Any

__all__ = ["HOLD_FPS", "check_targets", "holds", "summarize"]

HOLD_FPS = 29.0
"""(b): a stack holds N sessions when their mean processed fps stays at or above this."""

AVERAGED = (
    "fps",
    "fps_min",
    "sent_fps",
    "p50_ms",
    "p95_ms",
    "server_p50_ms",
    "server_p95_ms",
    "cpu_ms_per_frame",
    "cpu_share",
    "max_gap_ms",
    "dropped",
    "queue_growth",
    "lost",
    "lost_share",
    "stall_ms",
    "stall_median_ms",
    "swap_max_gap_ms",
    "e2e_p50_ms",
    "e2e_p95_ms",
)


def _mean(values: list[Any]) -> float | None:
    numbers = [v for v in values if isinstance(v, (int, float))]
    return round(statistics.fmean(numbers), 3) if numbers else None


def _ratio(b: float | None, a: float | None) -> float | None:
    return round(b / a, 4) if a and b is not None else None


def summarize(config: dict[str, Any]) -> dict[str, Any]:
    """Per-side means, B/A ratios and per-repetition fps ratios of one configuration."""
    sides: dict[str, dict[str, Any]] = {}
    for side in ("A", "B"):
        legs = [g for g in config["legs"] if g["spec"]["side"] == side and "error" not in g]
        sides[side] = {key: _mean([g.get(key) for g in legs]) for key in AVERAGED}
        sides[side]["legs"] = len(legs)
        sides[side]["min_sessions_after"] = min(
            (g["sessions_after"] for g in legs if g.get("sessions_after") is not None),
            default=None,
        )
    a, b = sides["A"], sides["B"]
    pairs = list(
        zip(
            [g for g in config["legs"] if g["spec"]["side"] == "A"],
            [g for g in config["legs"] if g["spec"]["side"] == "B"],
            strict=False,
        )
    )
    return {
        "A": a,
        "B": b,
        "fps_ratio": _ratio(b["fps"], a["fps"]),
        "p50_ratio": _ratio(b["p50_ms"], a["p50_ms"]),
        "p95_ratio": _ratio(b["p95_ms"], a["p95_ms"]),
        "cpu_ratio": _ratio(b["cpu_ms_per_frame"], a["cpu_ms_per_frame"]),
        "pair_fps_ratios": [_ratio(y.get("fps"), x.get("fps")) for x, y in pairs],
    }


def holds(side: dict[str, Any]) -> bool:
    return side["fps"] is not None and side["fps"] >= HOLD_FPS


INFO = "info"
"""``passed`` of a row that informs without a target."""


def _row(target: str, config: str, value: Any, limit: str, passed: bool | str | None) -> dict:
    return {"target": target, "config": config, "value": value, "limit": limit, "passed": passed}


def check_targets(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per target and configuration (and per codec)."""
    rows: list[dict[str, Any]] = []
    by_codec: dict[str, list[dict[str, Any]]] = {}
    for config in configs:
        by_codec.setdefault(config["codec"], []).append(config)
    for codec, group in by_codec.items():
        held: dict[str, int] = {"A": 0, "B": 0}
        b_seen = False
        for config in group:
            s, name, scenario = config["summary"], config["name"], config["scenario"]
            spec = config["legs"][0]["spec"] if config["legs"] else {}
            fps = spec.get("fps")
            if scenario == "a":
                r = s["fps_ratio"]
                rows.append(_row("(a) fps project/baseline", name, r, ">= 0.95", _ge(r, 0.95)))
                if fps:
                    r = s["p50_ratio"]
                    rows.append(_row("(a) p50 latency ratio", name, r, "<= 1.15", _le(r, 1.15)))
                    r = s["cpu_ratio"]
                    rows.append(_row("(f) CPU per frame ratio", name, r, "<= 1.10", _le(r, 1.1)))
            elif scenario == "b":
                b_seen = True
                for side in ("A", "B"):
                    if holds(s[side]) and held[side] == config["extra"]["n"] // 2:
                        held[side] = config["extra"]["n"]
            elif scenario == "c":
                period = max(1.0 / fps, spec.get("delay", 0.0))
                p95 = s["B"]["p95_ms"]
                limit = 3 * period * 1e3
                rows.append(
                    _row("(c) project p95 latency ms", name, p95, f"< {limit:.0f}", _lt(p95, limit))
                )
            elif scenario == "d":
                lost = s["B"]["min_sessions_after"]
                ok = None if lost is None else lost >= spec.get("sessions", 1)
                rows.append(_row("(d) sessions alive after swaps", name, lost, ">= 1", ok))
                # worst stall after a swap beyond the worst gap at the same instants without
                # swapping (the A legs): what the swap itself adds on a noisy machine
                b, a = s["B"]["stall_ms"], s["A"]["stall_ms"]
                excess = None if a is None or b is None else round(max(0.0, b - a), 2)
                limit = 1e3 / fps
                rows.append(
                    _row(
                        "(d) swap stall ms beyond control",
                        name,
                        excess,
                        f"<= {limit:.1f}",
                        _le(excess, limit),
                    )
                )
            elif scenario == "e":
                cost = None if s["fps_ratio"] is None else round(1 - s["fps_ratio"], 4)
                rows.append(_row("(e) preview fps cost", name, cost, "<= 0.03", _le(cost, 0.03)))
                # CPU the preview takes, in cores: B's CPU per second minus what B's frames
                # cost at A's CPU per frame. A receiver CPU-bound on k cores loses about
                # this / k of its fps; at 30 fps with cores to spare it loses none.
                per_frame, b_cpu, b_fps = (
                    s["A"]["cpu_ms_per_frame"],
                    s["B"]["cpu_share"],
                    s["B"]["fps"],
                )
                share = None
                if per_frame and b_cpu and b_fps:
                    share = round(b_cpu - per_frame * b_fps / 1e3, 4)
                rows.append(_row("(e) preview CPU, cores", name, share, "info", INFO))
            elif scenario == "g":
                r = s["fps_ratio"]
                rows.append(
                    _row("(g) fps ComfyUI/built-in engine", name, r, ">= 0.95", _ge(r, 0.95))
                )
                measured = config["extra"].get("overhead", {})
                overhead = measured.get("overhead_ms")
                rows.append(
                    _row(
                        "(g) ComfyUI executor ms/frame", name, overhead, "<= 2", _le(overhead, 2.0)
                    )
                )
                diff = measured.get("prompt_difference_ms")
                rows.append(
                    _row("(g) prompt ms/frame ComfyUI - built-in", name, diff, "info", INFO)
                )
            elif scenario == "h":
                rows += _audio_rows(name, s)
        if b_seen:
            value = f"project {held['B']} / baseline {held['A']}"
            limit = "N(project) >= N(baseline)"
            passed = held["B"] >= held["A"]
            rows.append(_row("(b) sessions held at 30 fps", f"b {codec}", value, limit, passed))
    return rows


def _audio_rows(name: str, s: dict[str, Any]) -> list[dict[str, Any]]:
    """(h): latency of each leg, what the audio prompt adds (B - A), buffers dropped. The
    added p95 target is one 20 ms frame: a prompt that keeps up adds less than a frame."""
    a, b = s["A"], s["B"]
    rows = []
    for key, label in (("p50_ms", "p50"), ("p95_ms", "p95")):
        both = f"{_fmt(a[key])} / {_fmt(b[key])}"
        rows.append(_row(f"(h) audio {label} ms passthrough / prompt", name, both, "info", INFO))
    for key, label in (("p50_ms", "p50"), ("p95_ms", "p95")):
        added = None if a[key] is None or b[key] is None else round(b[key] - a[key], 2)
        if label == "p50":
            rows.append(_row("(h) audio added latency p50 ms", name, added, "info", INFO))
        else:
            limit = "<= 20"
            rows.append(_row("(h) audio added latency p95 ms", name, added, limit, _le(added, 20)))
    both = f"{_fmt(a['e2e_p50_ms'])} / {_fmt(b['e2e_p50_ms'])}"
    rows.append(_row("(h) audio send -> processed p50 ms", name, both, "info", INFO))
    dropped = f"{_fmt(a['dropped'])} / {_fmt(b['dropped'])}"
    ok = None if b["dropped"] is None else b["dropped"] == 0
    rows.append(_row("(h) audio buffers dropped passthrough / prompt", name, dropped, "0 / 0", ok))
    return rows


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ge(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit


def _le(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def _lt(value: float | None, limit: float) -> bool | None:
    return None if value is None else value < limit
