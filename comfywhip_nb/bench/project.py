"""The project receiver: a real ``WhipServer`` running the equivalent ComfyUI prompt.

Frames arrive through the server's WHIP endpoint, sessions, FramePump mailbox and worker;
the benchmark only adds a ``WhipServer.add_frame_hook`` hook (called on the worker thread
with each ``ProcessedFrame``) that reads the stamp back and, where the scenario asks for a
preview of every frame, encodes it with ``frames.encode_preview_jpeg`` at 320 px, the same
work the baseline does. Hot swaps go through ``WhipServer.set_prompts`` from this process's
main thread, as a notebook cell would. For (h) a ``WhipServer.add_audio_hook`` hook records
every processed audio buffer (``audio.AudioRecorder``).

With ``comfyui=PATH`` (scenario g) the same server runs the same prompts through a real
ComfyUI (``WhipServer(comfyui=PATH)``); ``overhead`` then times both engines in process on
one frame, which is the per-frame cost of ComfyUI's executor without the stream around it.
"""

from __future__ import annotations

import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

import torch

from .audio import AudioRecorder, audio_prompt
from .procs import command_loop, loopback_only, quiet_logs
from .recorder import Recorder

__all__ = ["BLUR_PROMPT", "INVERT_PROMPT", "PROMPTS", "SlowInvert", "project_main", "slow_prompt"]

INVERT_PROMPT: dict[str, Any] = {
    "1": {"class_type": "LoadTensor", "inputs": {}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
}
BLUR_PROMPT: dict[str, Any] = {
    "1": {"class_type": "LoadTensor", "inputs": {}},
    "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 3, "sigma": 1.0}},
    "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
}
#: the prompts a leg can ask for by name (LegSpec.prompt)
PROMPTS: dict[str, dict[str, Any]] = {"invert": INVERT_PROMPT, "blur": BLUR_PROMPT}
#: the hot-swap partner: same work, a different graph (so every swap builds new nodes)
INVERT_PROMPT_B: dict[str, Any] = {
    "10": {"class_type": "LoadTensor", "inputs": {}},
    "11": {"class_type": "ImageInvert", "inputs": {"image": ["10", 0]}},
    "12": {"class_type": "SaveTensor", "inputs": {"images": ["11", 0]}},
}


class SlowInvert:
    """``1 - image`` after sleeping ``delay_ms``: a node slower than the input (scenario c)."""

    CATEGORY = "benchmark"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "delay_ms": ("FLOAT", {"default": 66.7, "min": 0.0, "max": 10000.0}),
            }
        }

    def run(self, image: torch.Tensor, delay_ms: float) -> tuple[torch.Tensor]:
        out = 1.0 - image
        time.sleep(delay_ms / 1000.0)
        return (out,)


def slow_prompt(delay_s: float) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadTensor", "inputs": {}},
        "2": {
            "class_type": "BenchSlowInvert",
            "inputs": {"image": ["1", 0], "delay_ms": round(delay_s * 1000.0, 3)},
        },
        "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
    }


class _Project:
    """Owns the WhipServer and the benchmark's frame listener."""

    def __init__(self, comfyui: str | None = None) -> None:
        from comfywhip_nb.pipeline.frames import encode_preview_jpeg
        from comfywhip_nb.prompts import register_nodes
        from comfywhip_nb.server import WhipServer

        register_nodes({"BenchSlowInvert": SlowInvert})
        self.encode_preview = encode_preview_jpeg
        self.recorder = Recorder()
        self.audio_recorder = AudioRecorder()
        self.preview = True
        self.server = WhipServer(
            port=0, prompts=INVERT_PROMPT, max_sessions=64, comfyui=comfyui, frame_timeout=30.0
        )
        self.server.start()
        self.server.add_frame_hook(self._on_frame)
        self.server.add_audio_hook(self.audio_recorder.on_chunk)
        self.swaps: list[float] = []

    def _on_frame(self, processed: Any) -> None:
        self.recorder.on_processed(processed.image, processed.received_at)
        if self.preview:
            self.encode_preview(processed.frame, 320)

    def counters(self) -> dict[str, Any]:
        infos = list(self.server.sessions.values())
        return {
            "frames_in": sum(i.frames_in for i in infos),
            "frames_processed": sum(i.frames_processed for i in infos),
            "frames_dropped": sum(i.frames_dropped for i in infos),
            "sessions": sum(1 for i in infos if i.connection_state == "connected"),
            "errors": [i.last_error for i in infos if i.last_error]
            + [i.audio_last_error for i in infos if i.audio_last_error],
            "audio_frames_in": sum(i.audio_frames_in for i in infos),
            "audio_buffers_dropped": sum(i.audio_buffers_dropped for i in infos),
        }

    def _swapper(self, every: float, dry: bool) -> Any:
        prompts = [INVERT_PROMPT_B, INVERT_PROMPT]
        self.swaps = []

        def during(t0: float) -> None:
            due = t0 + every * (len(self.swaps) + 1) - 0.5 * every
            if time.monotonic() >= due:
                if not dry:
                    self.server.set_prompts(prompts[len(self.swaps) % 2])
                self.swaps.append(time.monotonic())

        return during

    def overhead(self, name: str, width: int, height: int, reps: int) -> dict[str, Any]:
        """Median ms per frame of the built-in engine and this server's on one frame,
        interleaved: for the leg's prompt (nodes + executor) and for LoadTensor -> SaveTensor
        (the executor alone: ``overhead_ms``, what ComfyUI adds to every frame)."""
        from comfywhip_nb.pipeline.processor import configure_torch_threads
        from comfywhip_nb.prompts import load_prompt

        configure_torch_threads()  # as on the processor's threads
        passthrough = {
            "1": {"class_type": "LoadTensor", "inputs": {}},
            "2": {"class_type": "SaveTensor", "inputs": {"images": ["1", 0]}},
        }
        prompts = {
            "builtin": load_prompt(PROMPTS[name]),
            "engine": self.server.engine.load(PROMPTS[name]),
            "builtin_pass": load_prompt(passthrough),
            "engine_pass": self.server.engine.load(passthrough),
        }
        image = torch.rand(1, height, width, 3)
        times: dict[str, list[float]] = {key: [] for key in prompts}
        for rep in range(reps + 3):
            for key, prompt in prompts.items():
                started = time.perf_counter()
                prompt.run(image)
                if rep >= 3:  # warm-up runs left out
                    times[key].append((time.perf_counter() - started) * 1e3)
        ms = {key: round(statistics.median(values), 3) for key, values in times.items()}
        return {
            "builtin_ms": ms["builtin"],
            "engine_ms": ms["engine"],
            "prompt_difference_ms": round(ms["engine"] - ms["builtin"], 3),
            "builtin_passthrough_ms": ms["builtin_pass"],
            "engine_passthrough_ms": ms["engine_pass"],
            "overhead_ms": round(ms["engine_pass"] - ms["builtin_pass"], 3),
            "reps": reps,
        }

    def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        cmd = msg["cmd"]
        if cmd == "setup":
            self.recorder.reset()
            self.audio_recorder.reset()
            self.preview = msg.get("preview") == "frame"
            delay = float(msg.get("delay", 0.0))
            prompt: Any = PROMPTS[msg.get("prompt") or "invert"]
            if msg.get("audio") == "prompt":  # (h): the video graph and an audio graph
                prompt = [prompt, audio_prompt(float(msg.get("audio_buffer_ms", 20.0)))]
            self.server.set_prompts(slow_prompt(delay) if delay else prompt)
            return {"url": self.server.whip_url, "base": self.server.url}
        if cmd == "overhead":
            return self.overhead(msg["prompt"], msg["width"], msg["height"], msg["reps"])
        if cmd == "measure" and msg.get("audio"):
            return self.audio_recorder.measure(
                msg["sessions"], msg["warmup"], msg["duration"], self.counters
            )
        if cmd == "measure":
            every = msg.get("swap_every")
            during = self._swapper(float(every), bool(msg.get("swap_dry"))) if every else None
            result = self.recorder.measure(
                msg["sessions"], msg["warmup"], msg["duration"], self.counters, during
            )
            result["swaps"] = list(self.swaps) if every else []
            return result
        if cmd == "reset":  # the publisher DELETEs its sessions; wait for them to go
            deadline = time.monotonic() + 10.0
            while len(self.server.sessions) and time.monotonic() < deadline:
                time.sleep(0.05)
            return {"ok": True, "left": len(self.server.sessions)}
        if cmd == "quit":
            self.server.stop()
            return {"ok": True}
        raise ValueError(f"unknown command {cmd!r}")


def project_main(conn: Connection, comfyui: str | None = None) -> None:
    """Entry point of the project receiver child process (``comfyui``: scenario g's)."""
    loopback_only()
    quiet_logs()
    command_loop(conn, _Project(comfyui).handle)
