"""Network-fault benchmark (issue 16): processed fps under loss, jitter, a bottleneck and a
blackout, as a share of a clean run measured in the same run.

    sudo .venv/bin/python benchmarks/network_faults.py [--window 8] [--browser]
        [--out benchmarks/results/network_faults.json]

Needs root (network namespaces). A ``comfywhip serve`` process runs in one namespace, the
publisher in another (aiortc in this process on a thread inside the namespace; with
``--browser`` also Debian's headless Chromium with a fake camera, started inside it), and
``/whip-stats`` is read from a third over a clean link. Faults sit on the publisher's link:
loss and blackout are nftables drops (this kernel has no sch_netem), the bottleneck is tc tbf
on the publisher's egress, jitter needs netem and is reported as unavailable without it.

Per condition and publisher: processed fps over the window as a share of the clean runs
(before and after), keyframe requests (PLI) and NACKs the server sent, RTP packets lost,
whether the session survived, and for the blackout the time until processing resumed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import aiohttp  # noqa: E402
import aioice.ice  # noqa: E402
from netlab import Host, Lab, NetnsLoop, unavailable_reason, wait_http  # noqa: E402

from comfywhip_nb.client.whip_client import WHIPClient  # noqa: E402

PORT = 8889
CONDITIONS: list[tuple[str, str, Any]] = [
    ("clean", "none", None),
    ("loss 1 %", "loss", 1),
    ("loss 5 %", "loss", 5),
    ("loss 10 %", "loss", 10),
    ("jitter 50±20 ms", "netem", "delay 50ms 20ms distribution normal"),
    ("1 Mbit/s bottleneck", "rate", "1mbit"),
    ("blackout 3 s", "blackout", 3.0),
    ("clean (again)", "none", None),
]


class Bench:
    def __init__(self, lab: Lab, srv: Host, pub: Host, mon: NetnsLoop, pub_loop: NetnsLoop):
        self.lab, self.srv, self.pub, self.mon, self.pub_loop = lab, srv, pub, mon, pub_loop

    @property
    def base(self) -> str:
        return f"http://{self.srv.address}:{PORT}"

    def entry(self, session_id: str) -> dict[str, Any] | None:
        async def get() -> dict[str, Any]:
            timeout = aiohttp.ClientTimeout(total=5)
            async with (
                aiohttp.ClientSession() as http,
                http.get(self.base + "/whip-stats", timeout=timeout) as r,
            ):
                return json.loads(await r.text())

        return self.mon.run(get()).get(session_id)

    def apply(self, kind: str, value: Any) -> None:
        if kind == "loss":
            self.lab.impair(self.pub, value)
        elif kind == "netem":
            self.lab.netem(self.pub, value)
        elif kind == "rate":
            self.lab.bottleneck(self.pub, value)

    def clear(self) -> None:
        self.lab.impair(self.pub, 0)
        self.lab.bottleneck(self.pub, None)
        with contextlib.suppress(NotImplementedError):
            self.lab.netem(self.pub, None)

    def measure(self, session_id: str, kind: str, value: Any, window: float) -> dict[str, Any]:
        first = self.entry(session_id) or {}
        t0 = time.monotonic()
        result: dict[str, Any] = {}
        try:
            if kind == "blackout":
                self.lab.impair(self.pub, 100)
                time.sleep(value)
                before = (self.entry(session_id) or {}).get("frames_processed", 0)
                self.lab.impair(self.pub, 0)
                cleared = time.monotonic()
                result["recovery_s"] = None
                while time.monotonic() - cleared < 15:
                    now = self.entry(session_id)
                    if now is None:
                        break
                    if os.environ.get("CW_DEBUG"):
                        keys = ("frames_in", "frames_processed", "packets_received", "nacks_sent",
                                "plis_sent", "gap_skips")  # fmt: skip
                        print(round(time.monotonic() - cleared, 2), {k: now.get(k) for k in keys})
                    if now["frames_processed"] > before:
                        result["recovery_s"] = round(time.monotonic() - cleared, 3)
                        break
                    time.sleep(0.05)
                time.sleep(max(0.0, window - (time.monotonic() - cleared)))
            else:
                self.apply(kind, value)
                time.sleep(window)
        except NotImplementedError as exc:
            self.clear()
            return {"unavailable": str(exc)}
        last = self.entry(session_id) or {}
        elapsed = time.monotonic() - t0
        self.clear()
        time.sleep(2)
        after = self.entry(session_id)

        def delta(key: str) -> int:
            return int(last.get(key, 0)) - int(first.get(key, 0))

        result.update(
            fps=round(delta("frames_processed") / elapsed, 2),
            plis_sent=delta("plis_sent"),
            nacks_sent=delta("nacks_sent"),
            packets_lost=delta("packets_lost"),
            gap_skips=delta("gap_skips"),
            survived=bool(after and after["connection_state"] == "connected"),
        )
        return result


def aiortc_publisher(bench: Bench, size: tuple[int, int], fps: int) -> Callable[[], Any]:
    async def open_() -> tuple[str, WHIPClient]:
        client = WHIPClient(bench.base + "/whip")
        await client.publish("testsrc", width=size[0], height=size[1], fps=fps)
        await client.wait_connected(30)
        return client.resource_url.rsplit("/", 1)[1], client

    def start() -> tuple[str, Callable[[], None]]:
        session_id, client = bench.pub_loop.run(open_())
        return session_id, lambda: bench.pub_loop.run(client.unpublish())

    return start


def browser_publisher(bench: Bench, tmp: Path) -> Callable[[], Any] | None:
    """Chromium inside the publisher namespace, driven over Playwright's pipe."""
    chromium = Path("/usr/bin/chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not chromium.exists():
        return None
    wrapper = tmp / "chromium-in-ns"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {bench.pub.ns} {chromium} "$@"\n')
    wrapper.chmod(0o755)
    pw = sync_playwright().start()
    browser = pw.chromium.launch(
        executable_path=str(wrapper),
        args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            # the camera needs a secure context; the server is plain http on a lab address
            f"--unsafely-treat-insecure-origin-as-secure={bench.base}",
        ],
    )  # fmt: skip

    def start() -> tuple[str, Callable[[], None]]:
        page = browser.new_page()
        if os.environ.get("CW_DEBUG"):
            page.on("console", lambda m: print("page:", m.text, file=sys.stderr))
        page.goto(f"{bench.base}/?server={bench.base}")
        page.click("#start")
        page.wait_for_function("window.comfywhip && window.comfywhip.sessionId", timeout=30000)
        session_id = page.evaluate("window.comfywhip.sessionId")
        for _ in range(100):
            entry = bench.entry(session_id)
            if entry and entry["frames_processed"] > 0:
                break
            time.sleep(0.1)

        def stop() -> None:
            page.click("#stop")
            time.sleep(0.5)
            page.close()

        return session_id, stop

    start.close = lambda: (browser.close(), pw.stop())  # type: ignore[attr-defined]
    return start


def run(args: argparse.Namespace) -> dict[str, Any]:
    lab = Lab()
    loops: list[NetnsLoop] = []
    original = aioice.ice.get_host_addresses
    tmp = Path(tempfile.mkdtemp(prefix="cw16-bench-"))
    results: dict[str, Any] = {"window_s": args.window, "publishers": {}}
    try:
        srv, mon, pub = lab.add_host("srv"), lab.add_host("mon"), lab.add_host("pub")
        lab.spawn(
            srv,
            [sys.executable, "-m", "comfywhip_nb", "serve", "--host", srv.address,
             "--port", str(PORT), "--rate-limit", "0"],
            tmp / "server.log",
        )  # fmt: skip
        loops += [NetnsLoop(pub.ns), NetnsLoop(mon.ns)]
        aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: [pub.address]
        wait_http(loops[1], f"http://{srv.address}:{PORT}/health", timeout=90)
        bench = Bench(lab, srv, pub, loops[1], loops[0])
        width, height = (int(v) for v in args.size.split("x"))
        publishers: dict[str, Any] = {"aiortc": aiortc_publisher(bench, (width, height), args.fps)}
        if args.browser:
            browser = browser_publisher(bench, tmp)
            if browser is None:
                results["browser"] = "unavailable (no /usr/bin/chromium or Playwright)"
            else:
                publishers["chromium"] = browser
        for name, start in publishers.items():
            rows: dict[str, Any] = {}
            for label, kind, value in CONDITIONS:
                if args.only and kind not in args.only.split(",") and kind != "none":
                    continue
                session_id, stop = start()
                time.sleep(3)  # past the first keyframe and ramp-up
                rows[label] = bench.measure(session_id, kind, value, args.window)
                print(f"{name:8} {label:22} {rows[label]}", flush=True)
                stop()
            clean = [rows[k]["fps"] for k in ("clean", "clean (again)") if "fps" in rows[k]]
            baseline = sum(clean) / len(clean) if clean else 0.0
            for row in rows.values():
                if "fps" in row and baseline:
                    row["fps_share_of_clean"] = round(row["fps"] / baseline, 3)
            results["publishers"][name] = {"clean_fps": round(baseline, 2), "conditions": rows}
            if hasattr(start, "close"):
                start.close()
    finally:
        aioice.ice.get_host_addresses = original
        for loop in loops:
            loop.close()
        lab.close()
    return results


def to_markdown(results: dict[str, Any]) -> str:
    lines = [
        f"Window {results['window_s']} s per condition; fps share is against the mean of the "
        "two clean runs of the same publisher in the same run.",
        "",
        "| publisher | condition | processed fps | share of clean | PLIs sent | NACKs sent | "
        "packets lost | gaps skipped | recovery after blackout | session survived |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, data in results["publishers"].items():
        for label, row in data["conditions"].items():
            if "unavailable" in row:
                lines.append(f"| {name} | {label} | n/a: {row['unavailable']} | | | | | | | |")
                continue
            recovery = f"{row['recovery_s']} s" if "recovery_s" in row else ""
            lines.append(
                f"| {name} | {label} | {row['fps']} | {row.get('fps_share_of_clean', '')} | "
                f"{row['plis_sent']} | {row['nacks_sent']} | {row['packets_lost']} | "
                f"{row.get('gap_skips', 0)} | {recovery} | {'yes' if row['survived'] else 'NO'} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=8.0, help="seconds per condition")
    parser.add_argument("--browser", action="store_true", help="also a headless Chromium")
    parser.add_argument("--size", default="640x480", help="aiortc publisher size (640x480)")
    parser.add_argument("--fps", type=int, default=30, help="aiortc publisher frame rate (30)")
    parser.add_argument("--only", help="subset of kinds: loss,netem,rate,blackout (clean always)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/network_faults.json"))
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    results = run(args)
    results["loadavg"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(to_markdown(results))
    print(to_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
