"""Run the legs: three long-lived child processes, A B A B per configuration, progress lines.

Children: the publisher, the raw baseline receiver and the project receiver (``procs.py``).
A leg is setup (receiver) -> start (publisher connects N streams) -> measure (receiver
waits for every stream, warms up, records the window) -> stop (publisher returns its send
times) -> reset (receiver drops its sessions). The (e) preview poller runs here, in the
runner, so its HTTP client costs nothing to the receiver it measures.
"""

from __future__ import annotations

import functools
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from .audio import audio_leg_metrics
from .baseline import baseline_main
from .procs import Child
from .project import project_main
from .publisher import publisher_main
from .scenarios import Config, LegSpec, Settings, configs_for, leg_metrics
from .targets import holds, summarize

__all__ = ["Runner"]

START_TIMEOUT = 120.0


class _PreviewPoller(threading.Thread):
    """GET /preview/{id}.jpg?width=320 for every session at ``hz`` (a dashboard viewer)."""

    def __init__(self, base: str, hz: float, max_seconds: float) -> None:
        super().__init__(name="bench-preview", daemon=True)
        self.base, self.hz, self.max_seconds = base, hz, max_seconds
        self.stop_event = threading.Event()
        self.fetched = 0
        self.cpu_share = 0.0
        """CPU of this thread (``time.thread_time``) per wall second: the viewer's own cost."""

    def run(self) -> None:
        started, cpu0 = time.monotonic(), time.thread_time()
        try:
            self._poll(started + self.max_seconds)
        finally:
            wall = max(time.monotonic() - started, 1e-6)
            self.cpu_share = (time.thread_time() - cpu0) / wall

    def _poll(self, deadline: float) -> None:
        with urllib.request.urlopen(f"{self.base}/whip-stats", timeout=5) as resp:
            ids = list(json.load(resp))
        tick = time.monotonic()
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            for sid in ids:
                try:
                    with urllib.request.urlopen(
                        f"{self.base}/preview/{sid}.jpg?width=320", timeout=5
                    ) as resp:
                        resp.read()
                    self.fetched += 1
                except (urllib.error.URLError, OSError):
                    pass
            tick += 1.0 / self.hz
            self.stop_event.wait(max(0.0, tick - time.monotonic()))


class Runner:
    """Owns the child processes for one ``comfywhip bench`` run."""

    def __init__(self, settings: Settings, total_legs: int) -> None:
        self.settings = settings
        self.total = total_legs
        self.done = 0
        self.started = time.monotonic()
        self.children: dict[str, Child] = {}

    def __enter__(self) -> Runner:
        print("bench: starting publisher, baseline and project processes ...", flush=True)
        targets = {"publisher": publisher_main, "baseline": baseline_main, "project": project_main}
        if "g" in self.settings.scenarios:  # the same receiver on a real ComfyUI
            targets["comfyui"] = functools.partial(project_main, comfyui=self.settings.comfyui)
        for name, target in targets.items():
            self.children[name] = Child(name, target)
        for child in self.children.values():
            child.call({"cmd": "ping"}, START_TIMEOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        for child in self.children.values():
            child.close()

    # -- one leg --------------------------------------------------------------------------
    def run_leg(self, spec: LegSpec) -> dict[str, Any]:
        receiver, publisher = self.children[spec.stack], self.children["publisher"]
        setup = receiver.call(
            {
                "cmd": "setup",
                "delay": spec.delay,
                "preview": spec.preview,
                "prompt": spec.prompt,
                "audio": spec.audio,
            },
            60,
        )
        poller = None
        try:
            publisher.call(
                {
                    "cmd": "start",
                    "url": setup["url"],
                    "sessions": spec.sessions,
                    "width": spec.width,
                    "height": spec.height,
                    "fps": spec.fps,
                    "codec": spec.codec,
                    "media": "audio" if spec.audio else "video",
                },
                90,
            )
            if spec.preview_hz:
                poller = _PreviewPoller(setup["base"], spec.preview_hz, 120 + spec.duration)
                poller.start()
            measure = receiver.call(
                {
                    "cmd": "measure",
                    "sessions": spec.sessions,
                    "warmup": spec.warmup,
                    "duration": spec.duration,
                    "swap_every": spec.swap_every,
                    "swap_dry": spec.swap_dry,
                    "settle": self.settings.settle if spec.settle else 0.0,
                    "audio": bool(spec.audio),
                },
                60 + spec.warmup + self.settings.settle + spec.duration,
            )
        finally:
            if poller is not None:
                poller.stop_event.set()
                poller.join(10)
            sent = publisher.call({"cmd": "stop"}, 60)  # also after a failed start
            receiver.call({"cmd": "reset"}, 60)
        if spec.audio:
            result = audio_leg_metrics(spec, measure, sent.get("audio_send_times") or [])
        else:
            result = leg_metrics(spec, measure, sent["send_times"])
        result["publisher_cpu_share"] = round(sent.get("cpu_share", 0.0), 3)
        if poller is not None:
            result["previews_fetched"] = poller.fetched
            result["poller_cpu_share"] = round(poller.cpu_share, 3)
        return result

    def _progress(self, spec: LegSpec, result: dict[str, Any], rep: int) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done * max(0, self.total - self.done)
        head = f"[{self.done:3d}/{self.total} {elapsed:5.0f}s eta {eta:4.0f}s]"
        if "error" in result:
            line = f"ERROR {result['error'].splitlines()[0]}"
        elif spec.audio:
            line = (
                f"{result['fps']:6.1f} buffers/s  p50 {result['p50_ms'] or 0:6.2f} ms  "
                f"p95 {result['p95_ms'] or 0:6.2f} ms  (received -> processed)  "
                f"dropped {result['dropped']}"
            )
        else:
            line = (
                f"{result['fps']:6.1f} fps  p50 {result['p50_ms'] or 0:6.1f} ms  "
                f"p95 {result['p95_ms'] or 0:6.1f} ms  cpu {result['cpu_ms_per_frame'] or 0:5.1f}"
                f" ms/frame  dropped {result['dropped']}"
            )
        print(f"{head} {spec.describe()} #{rep + 1}: {line}", flush=True)

    def run_config(self, config: Config) -> dict[str, Any]:
        """A B A B ...: ``settings.reps`` alternations of the pair."""
        legs = []
        for rep in range(self.settings.reps):
            for spec in (config.a, config.b):
                try:
                    result = self.run_leg(spec)
                except Exception as exc:  # report and go on: one bad leg must not end a run
                    result = {"spec": spec.__dict__, "error": f"{type(exc).__name__}: {exc}"}
                self._progress(spec, result, rep)
                legs.append(result)
        out = {
            "scenario": config.scenario,
            "name": config.name,
            "codec": config.a.codec,
            "extra": config.extra,
            "labels": {"A": config.a.label, "B": config.b.label},
            "legs": legs,
        }
        out["summary"] = summarize(out)
        return out

    def run_all(self) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for codec in self.settings.codecs:
            for scenario in self.settings.scenarios:
                if scenario == "h" and codec != self.settings.codecs[0]:
                    continue  # audio is Opus whatever the video codec: once per run
                if scenario == "b":
                    results += self._run_b(codec)
                    continue
                for config in configs_for(scenario, self.settings, codec):
                    results.append(self.run_config(config))
                    if scenario == "g":
                        self._overhead(results[-1], config)
        return results

    def _overhead(self, result: dict[str, Any], config: Config) -> None:
        """(g): both engines timed in process on one frame of the leg's size."""
        spec = config.b
        message = {
            "cmd": "overhead",
            "prompt": spec.prompt,
            "width": spec.width,
            "height": spec.height,
            "reps": self.settings.overhead_reps,
        }
        try:
            result["extra"]["overhead"] = self.children["comfyui"].call(message, 300)
        except RuntimeError as exc:
            result["extra"]["overhead"] = {"error": str(exc)}
        print(f"bench: ({config.name}) in process: {result['extra']['overhead']}", flush=True)

    def _run_b(self, codec: str) -> list[dict[str, Any]]:
        """N = 1, 2, 4, ... until either stack falls below 29 fps."""
        results = []
        for n in self.settings.b_sessions:
            for config in configs_for("b", self.settings, codec, sessions=n):
                result = self.run_config(config)
                results.append(result)
            summary = results[-1]["summary"]
            if not (holds(summary["A"]) and holds(summary["B"])):
                skipped = len(self.settings.b_sessions) - len(results)
                self.total -= skipped * 2 * self.settings.reps
                break
        return results


def count_legs(settings: Settings) -> int:
    """Legs a run will take at most ((b) may stop early)."""
    per_config = 2 * settings.reps
    count = once = 0
    for scenario in settings.scenarios:
        if scenario == "b":
            count += len(settings.b_sessions)
        elif scenario == "h":
            once += len(configs_for(scenario, settings, "VP8"))
        else:
            count += len(configs_for(scenario, settings, "VP8"))
    return (count * len(settings.codecs) + once) * per_config
