"""Write a run's results: ``bench.json`` (everything), ``bench.md`` (tables) and ``bench.png``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["write_report"]


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _verdict(passed: bool | str | None) -> str:
    return {True: "PASS", False: "MISS", None: "ERROR", "info": "INFO"}[passed]


def _busy_note(meta: dict[str, Any]) -> list[str]:
    """A loaded machine makes absolute numbers and even short-leg ratios noisy: say so."""
    try:
        load = max(float(meta["load_start"].split()[0]), float(meta["load_end"].split()[0]))
    except (ValueError, IndexError, AttributeError):
        return []
    if load <= (meta.get("cpus") or 1):
        return []
    return [
        f"**Busy machine**: load average {load:.1f} on {meta['cpus']} CPUs; other processes "
        "competed for CPU during the legs. Compare the per-pair ratios before trusting a "
        "single figure.",
        "",
    ]


def markdown(run: dict[str, Any]) -> str:
    meta = run["meta"]
    lines = [
        "# comfywhip bench",
        "",
        f"Command: `{meta['command']}`  ",
        f"When: {meta['started']} · {meta['cpus']} CPUs · load average at start "
        f"{meta['load_start']} / end {meta['load_end']} · {meta['duration_s']:.0f} s  ",
        f"Settings: {meta['settings']}",
        "",
        "Ratios are B / A measured in the same run, legs alternating A B A B.",
        "",
        *_busy_note(meta),
        "## Targets (issue 6)",
        "",
        "| target | configuration | measured | target | verdict |",
        "|---|---|---|---|---|",
    ]
    for row in run["targets"]:
        lines.append(
            f"| {row['target']} | {row['config']} | {_fmt(row['value'], 3)} | {row['limit']} "
            f"| {_verdict(row['passed'])} |"
        )
    lines += [
        "",
        "## Configurations",
        "",
        "| configuration | A | B | fps A | fps B | fps B/A | p50 ms A | p50 ms B | p95 ms A "
        "| p95 ms B | CPU ms/frame A | CPU ms/frame B | CPU B/A | dropped B | queue growth A "
        "| per-pair fps B/A |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for config in run["configs"]:
        s, labels = config["summary"], config["labels"]
        a, b = s["A"], s["B"]
        pairs = ", ".join(_fmt(r, 3) for r in s["pair_fps_ratios"])
        lines.append(
            f"| {config['name']} | {labels['A']} | {labels['B']} | {_fmt(a['fps'])} | "
            f"{_fmt(b['fps'])} | {_fmt(s['fps_ratio'], 3)} | {_fmt(a['p50_ms'])} | "
            f"{_fmt(b['p50_ms'])} | {_fmt(a['p95_ms'])} | {_fmt(b['p95_ms'])} | "
            f"{_fmt(a['cpu_ms_per_frame'], 2)} | {_fmt(b['cpu_ms_per_frame'], 2)} | "
            f"{_fmt(s['cpu_ratio'], 3)} | {_fmt(b['dropped'], 0)} | "
            f"{_fmt(a['queue_growth'], 0)} | {pairs} |"
        )
    extra = [c for c in run["configs"] if c["scenario"] == "d"]
    for config in extra:
        a, b = config["summary"]["A"], config["summary"]["B"]
        lines += [
            "",
            f"(d) {config['name']}: frames lost (mean per leg) {_fmt(a['lost'])} without swaps"
            f" vs {_fmt(b['lost'])} with swaps; stall after a swap (longest gap within 3 frame "
            f"intervals, minus one interval) median {_fmt(b['stall_median_ms'])} ms, worst "
            f"{_fmt(b['stall_ms'])} ms; at the same instants without swapping median "
            f"{_fmt(a['stall_median_ms'])} ms, worst {_fmt(a['stall_ms'])} ms.",
        ]
    for config in (c for c in run["configs"] if c["scenario"] == "h"):
        a, b = config["summary"]["A"], config["summary"]["B"]
        lines += [
            "",
            f"(h) {config['name']}: audio buffers per second {_fmt(a['fps'])} / "
            f"{_fmt(b['fps'])}, received -> processed latency p50 {_fmt(a['p50_ms'], 2)} / "
            f"{_fmt(b['p50_ms'], 2)} ms, p95 {_fmt(a['p95_ms'], 2)} / {_fmt(b['p95_ms'], 2)} ms, "
            f"buffers dropped {_fmt(a['dropped'])} / {_fmt(b['dropped'])}; end to end "
            f"(publisher send -> processed) p50 {_fmt(a['e2e_p50_ms'], 2)} / "
            f"{_fmt(b['e2e_p50_ms'], 2)} ms, p95 {_fmt(a['e2e_p95_ms'], 2)} / "
            f"{_fmt(b['e2e_p95_ms'], 2)} ms (passthrough / audio prompt; in the table above "
            "fps is audio buffers per second).",
        ]
    errors = [(c["name"], g["error"]) for c in run["configs"] for g in c["legs"] if "error" in g]
    if errors:
        lines += ["", "## Errors", ""] + [f"- {name}: {err}" for name, err in errors]
    return "\n".join(lines) + "\n"


def plot(run: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = run["configs"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5), dpi=100)
    names = [c["name"] for c in configs]
    xs = range(len(configs))
    for ax, key, title in (
        (axes[0][0], "fps", "processed fps per stream (mean of reps)"),
        (axes[0][1], "p50_ms", "p50 capture -> processed latency (ms)"),
    ):
        a = [c["summary"]["A"][key] or 0 for c in configs]
        b = [c["summary"]["B"][key] or 0 for c in configs]
        ax.bar([x - 0.2 for x in xs], a, 0.4, label="A (baseline / off)", color="tab:gray")
        ax.bar([x + 0.2 for x in xs], b, 0.4, label="B (project / on)", color="tab:blue")
        for x, config in zip(xs, configs, strict=True):  # each repetition, to show the drift
            for leg in config["legs"]:
                if leg.get(key) is not None:
                    dx = -0.2 if leg["spec"]["side"] == "A" else 0.2
                    ax.plot(x + dx, leg[key], "k.", ms=4)
        ax.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=7)
        ax.set_title(title, fontsize=10)
        values = [v for v in a + b if v > 0]
        if values and max(values) > 10 * min(values):  # a growing queue dwarfs the rest
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    ax = axes[1][0]
    series = [c for c in configs if c["scenario"] == "c"] or configs[:1]
    for config in series[:2]:
        for leg in config["legs"][:2]:
            points = leg.get("latency_series") or []
            if points:
                label = f"{config['name']}: {leg['spec']['label']}"
                ax.plot([p[0] for p in points], [p[1] for p in points], label=label, lw=1)
    ax.set_xlabel("seconds into the measured window")
    ax.set_ylabel("latency (ms)")
    ax.set_title("per-frame latency over a window (first repetition)", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[1][1]
    b_configs = [c for c in configs if c["scenario"] == "b"]
    if b_configs:
        for codec in sorted({c["codec"] for c in b_configs}):
            group = [c for c in b_configs if c["codec"] == codec]
            ns = [c["extra"]["n"] for c in group]
            for side, style in (("A", "--"), ("B", "-")):
                fps = [c["summary"][side]["fps"] or 0 for c in group]
                ax.plot(
                    ns,
                    fps,
                    style,
                    marker="o",
                    label=f"{codec} {'baseline' if side == 'A' else 'project'}",
                )
        ax.axhline(29, color="red", lw=0.8, ls=":", label="29 fps: holds")
        ax.set_xscale("log", base=2)
        ticks = sorted({c["extra"]["n"] for c in b_configs})
        ax.set_xticks(ticks, [str(n) for n in ticks])
        ax.set_ylim(0, 35)
        ax.set_xlabel("concurrent 30 fps sessions")
        ax.set_ylabel("mean processed fps per session")
        ax.set_title("(b) sessions at scale", fontsize=10)
        ax.legend(fontsize=8)
    else:
        cpu_a = [c["summary"]["A"]["cpu_ms_per_frame"] or 0 for c in configs]
        cpu_b = [c["summary"]["B"]["cpu_ms_per_frame"] or 0 for c in configs]
        ax.bar([x - 0.2 for x in xs], cpu_a, 0.4, label="A", color="tab:gray")
        ax.bar([x + 0.2 for x in xs], cpu_b, 0.4, label="B", color="tab:blue")
        ax.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=7)
        ax.set_title("receiver CPU ms per processed frame", fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(f"comfywhip bench ({run['meta']['command']})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(run: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write the three files into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "bench.json", "md": out / "bench.md", "png": out / "bench.png"}
    paths["json"].write_text(json.dumps(run, indent=1))
    paths["md"].write_text(markdown(run))
    plot(run, paths["png"])
    return paths
