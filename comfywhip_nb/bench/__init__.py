"""``comfywhip bench``: the project against a raw aiortc + PyAV + torch receiver, same run.

Lives inside the package (not only in ``benchmarks/``) so the installed console script can
run it. Scenarios (a)-(f) of issue 6 and (h), the audio latency of issue 15, each an A/B pair
of legs alternated A B A B; see ``benchmarks/README.md`` for what each one measures and
``scenarios.py`` for the legs.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from .scenarios import DEFAULT_SCENARIOS, SCENARIOS, Settings

__all__ = ["build_parser", "main", "settings_from_args"]

QUICK = Settings(
    quick=True,
    scenarios=DEFAULT_SCENARIOS,
    codecs=("VP8",),
    duration=1.5,
    warmup=0.5,
    reps=2,
    b_sessions=(1, 2),
    swap_duration=2.5,
    settle=2.0,
)
FULL = Settings()


def _size(value: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 640x480, got {value!r}") from None
    if width < 96 or height < 16 or width % 2 or height % 2:
        raise argparse.ArgumentTypeError("size must be even and at least 96x16")
    return width, height


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="comfywhip bench",
        description="Fps, latency and CPU of the project against a same-run raw baseline.",
    )
    parser.add_argument("--quick", action="store_true", help="short run (under 2 minutes)")
    parser.add_argument("--out", default="bench-out", help="output folder (default bench-out)")
    parser.add_argument(
        "--scenarios",
        help=f"comma-separated subset of {','.join(SCENARIOS)} "
        f"(default {','.join(DEFAULT_SCENARIOS)}; g needs --comfyui)",
    )
    parser.add_argument(
        "--codec", choices=["VP8", "H264"], help="one codec (default: both; VP8 with --quick)"
    )
    parser.add_argument("--duration", type=float, help="measured seconds per leg")
    parser.add_argument("--warmup", type=float, help="seconds before each measured window")
    parser.add_argument("--reps", type=int, help="A B alternations per configuration")
    parser.add_argument("--size", type=_size, help="override every resolution, e.g. 160x120")
    parser.add_argument(
        "--max-sessions", type=int, help="largest N tried in (b) (powers of two up to it)"
    )
    parser.add_argument("--swap-duration", type=float, help="seconds of hot swapping in (d)")
    parser.add_argument(
        "--comfyui",
        metavar="PATH",
        help="ComfyUI folder for (g), built-in vs ComfyUI engine (default $COMFYUI_PATH)",
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = QUICK if args.quick else FULL
    if args.scenarios:
        wanted = "".join(s.strip().lower() for s in args.scenarios.split(",") if s.strip())
        unknown = sorted(set(wanted) - set(SCENARIOS))
        if unknown or not wanted:
            raise SystemExit(f"bench: unknown scenarios {unknown}; choose from {SCENARIOS}")
        settings = replace(settings, scenarios="".join(s for s in SCENARIOS if s in wanted))
    if "f" in settings.scenarios and "a" not in settings.scenarios:
        settings = replace(settings, scenarios="a" + settings.scenarios)  # (f) reads (a)'s CPU
    changes: dict[str, object] = {}
    if args.codec:
        changes["codecs"] = (args.codec,)
    for name in ("duration", "warmup", "reps", "size", "swap_duration"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    comfyui = args.comfyui or os.environ.get("COMFYUI_PATH") or None
    if "g" in settings.scenarios:
        if not comfyui:
            raise SystemExit("bench: scenario g needs --comfyui PATH (or $COMFYUI_PATH)")
        changes["comfyui"] = str(Path(comfyui).expanduser().resolve())
    if args.max_sessions:
        changes["b_sessions"] = tuple(n for n in (1, 2, 4, 8, 16, 32) if n <= args.max_sessions)
    return replace(settings, **changes)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0 when it completed (targets missed are reported, not
    failed: they are measurements), 1 when legs errored."""
    from .report import write_report
    from .runner import Runner, count_legs
    from .targets import check_targets

    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    command = "comfywhip bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    started, load_start = time.strftime("%Y-%m-%d %H:%M:%S"), _load()
    t0 = time.monotonic()
    with Runner(settings, count_legs(settings)) as runner:
        configs = runner.run_all()
    run = {
        "meta": {
            "command": command,
            "started": started,
            "duration_s": time.monotonic() - t0,
            "cpus": os.cpu_count(),
            "load_start": load_start,
            "load_end": _load(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "settings": asdict(settings),
        },
        "configs": configs,
        "targets": check_targets(configs),
    }
    paths = write_report(run, Path(args.out))
    print()
    for row in run["targets"]:
        verdict = {True: "PASS", False: "MISS", None: "ERROR", "info": "INFO"}[row["passed"]]
        target = f"{row['target']}: {row['value']} (target {row['limit']})"
        print(f"{verdict:5s} {target} [{row['config']}]")
    print(f"\nbench: wrote {', '.join(str(p) for p in paths.values())}")
    errored = any("error" in leg for config in configs for leg in config["legs"])
    return 1 if errored else 0


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"
