"""The ComfyUI engine: prompts validated and run by ComfyUI's own ``execution.py``.

What is used of ComfyUI, and why:

* ``execution.validate_prompt`` checks a graph exactly as ComfyUI's ``POST /prompt`` does
  (types, combos, bounds, ``VALIDATE_INPUTS``/``validate_inputs``); its answer becomes our
  ``PromptError`` (node id, class, ComfyUI's message), so HTTP 400s keep their shape.
* ``execution.PromptExecutor`` runs every frame: V1 and V3 nodes, lazy inputs, subgraph
  expansion, ``IS_CHANGED``/``fingerprint_inputs`` and its CLASSIC output cache. One executor
  (one cache) per graph, kept across frames: LoadTensor's ``IS_CHANGED`` is NaN, so only the
  part of the graph that depends on the frame runs again; loaders and constants run once.
* ``execute_async`` is a coroutine (ComfyUI 0.3.75). It runs on the calling thread, which is
  the processor's prompt thread, in that thread's own event loop, never on the server's loop.
  ComfyUI keeps per-run state in globals (progress registry, interrupt flag), so one run at a
  time in the whole process (``_RUN_LOCK``).
* Per-node timings come from a ``comfy_execution.progress.ProgressHandler`` registered for the
  run (start/finish of each node that really runs; cached nodes cost nothing).
"""

from __future__ import annotations

import asyncio
import collections
import copy
import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any

import torch

from ..graph import NodeError, PromptError
from ..streams import audio_buffer_ms
from .convert import apply_stream_rules, check_shape, errors_from_validation
from .live_nodes import LiveIO, current_io
from .startup import ComfyUIRuntime, start_comfyui

__all__ = ["ComfyUIEngine", "ComfyUINodeError", "ComfyUIPrompt"]

_RUN_LOCK = threading.Lock()
RUN_LOCK_TIMEOUT_S = 30.0
_ids = itertools.count(1)
_local = threading.local()


class ComfyUINodeError(RuntimeError):
    """A node failed while ComfyUI ran a frame; names the node as the processor expects."""

    def __init__(
        self, node_id: str | None, class_type: str | None, message: str, graph: int | None = None
    ) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.class_type = class_type
        self.graph = graph


def run_sync(coro: Any) -> Any:
    """Run a ComfyUI coroutine to the end on this thread's private loop; from a thread that
    already runs a loop (a notebook cell), on a short-lived helper thread instead."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop = getattr(_local, "loop", None)
        if loop is None or loop.is_closed():
            loop = _local.loop = asyncio.new_event_loop()
        return loop.run_until_complete(coro)
    box: list[Any] = []

    def helper() -> None:
        try:
            box.append((True, run_sync(coro)))
        except BaseException as exc:
            box.append((False, exc))

    thread = threading.Thread(target=helper, name="comfywhip-comfyui-sync", daemon=True)
    thread.start()
    thread.join()
    ok, value = box[0]
    if not ok:
        raise value
    return value


class _ServerStub:
    """What ComfyUI's executor and a few nodes expect of ``server.PromptServer``: nobody
    listens, so every message is dropped."""

    client_id = None
    last_node_id = None
    last_prompt_id = None
    sockets_metadata: dict[str, Any] = {}

    def send_sync(self, event: Any, data: Any, sid: Any = None) -> None:
        pass

    def send_progress_text(self, text: Any, node_id: Any, sid: Any = None) -> None:
        pass


_classes: dict[str, type] = {}


def _executor_class() -> type:
    """PromptExecutor with our hooks; built after ComfyUI has started (it imports it)."""
    if "executor" in _classes:
        return _classes["executor"]
    import execution
    from comfy_execution.progress import ProgressHandler, add_progress_handler

    class NodeTimer(ProgressHandler):
        def __init__(self, owner: Any) -> None:
            super().__init__("comfywhip-timer")
            self.owner = owner
            self.started: dict[str, float] = {}

        def start_handler(self, node_id: str, state: Any, prompt_id: str) -> None:
            self.owner.runs[node_id] += 1
            self.started[node_id] = time.perf_counter()

        def finish_handler(self, node_id: str, state: Any, prompt_id: str) -> None:
            began = self.started.pop(node_id, None)
            timings = self.owner.timings
            if began is None or timings is None:
                return  # a cached node
            if self.owner.cuda:
                torch.cuda.synchronize()
            class_type = self.owner.class_types.get(node_id, "?")
            key = f"{self.owner.prefix}{node_id}:{class_type}"
            timings[key] = timings.get(key, 0.0) + time.perf_counter() - began

    class Executor(execution.PromptExecutor):
        def __init__(self, class_types: dict[str, str], prefix: str, cuda: bool) -> None:
            super().__init__(
                _ServerStub(),
                cache_type=execution.CacheType.CLASSIC,
                cache_args={"lru": 0, "ram": 0},
            )
            self.class_types = class_types
            self.prefix = prefix
            self.cuda = cuda
            self.timings: dict[str, float] | None = None
            self.runs: collections.Counter[str] = collections.Counter()
            self.failure: tuple[str | None, BaseException | None, str] | None = None

        def add_message(self, event: str, data: dict, broadcast: bool) -> None:
            # no UI listens; "execution_cached" comes right after the run's progress registry
            # is made, which is where the timer joins it
            if event == "execution_cached":
                add_progress_handler(NodeTimer(self))

        def handle_execution_error(self, prompt_id, prompt, current_outputs, executed, error, ex):
            node_id = error.get("node_id")
            message = str(error.get("exception_message", ex)).strip()
            self.failure = (None if node_id is None else str(node_id), ex, message)

    _classes["executor"] = Executor
    return Executor


class _Graph:
    """One validated graph and its executor (its cache lives as long as the prompt)."""

    def __init__(self, api: dict[str, Any], outputs: list[str], index: int | None, cuda: bool):
        self.api = api
        self.index = index
        self.outputs = outputs
        self.class_types = {node_id: node["class_type"] for node_id, node in api.items()}
        saves = sorted((i for i, c in self.class_types.items() if c == "SaveTensor"), key=_key)
        audio = sorted((i for i, c in self.class_types.items() if c == "SaveAudioTensor"), key=_key)
        self.image_output = saves[0] if saves else None
        self.audio_output = audio[0] if audio else None
        # one graph may carry both streams: a video run executes every output but the
        # audio ones, an audio run only the SaveAudioTensor (as the built-in engine does)
        self.stream_outputs = {
            "image": [o for o in outputs if self.class_types.get(o) != "SaveAudioTensor"]
            if self.image_output is not None
            else [],
            "audio": [self.audio_output] if self.audio_output is not None else [],
        }
        prefix = f"prompt[{index}]/" if index is not None else ""
        self.executor = _executor_class()(self.class_types, prefix, cuda)

    def run(self, io: LiveIO, timings: dict[str, float] | None, kind: str = "image") -> None:
        # fresh node dicts each run: ComfyUI writes each node's IS_CHANGED result into them
        prompt = {node_id: dict(node) for node_id, node in self.api.items()}
        executor = self.executor
        executor.timings, executor.failure = timings, None
        token = current_io.set(io)
        try:
            outputs = self.stream_outputs[kind]
            run_sync(executor.execute_async(prompt, f"comfywhip-{next(_ids)}", {}, outputs))
        finally:
            current_io.reset(token)
            executor.timings = None
        if executor.failure is not None or not executor.success:
            node_id, cause, message = executor.failure or (None, None, "ComfyUI run failed")
            class_type = self.class_types.get(node_id) if node_id else None
            raise ComfyUINodeError(node_id, class_type, message, self.index) from cause


def _key(node_id: str) -> tuple[int, int, str]:
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


class ComfyUIPrompt:
    """A prompt validated by ComfyUI, run per frame by ComfyUI's executor (the processor's
    ``RunnablePrompt``). A list of graphs is a chain: each SaveTensor feeds the next
    LoadTensor."""

    def __init__(self, graphs: list[_Graph], device: torch.device) -> None:
        self._graphs = graphs
        self._device = device

    @property
    def device(self) -> torch.device:
        """ComfyUI's torch device: frames arrive there and stay there between nodes."""
        return self._device

    @property
    def graphs(self) -> list[dict[str, Any]]:
        """The graphs as ComfyUI runs them (stream ends in place); copies."""
        return [copy.deepcopy(g.api) for g in self._graphs]

    def to_json(self) -> str:
        apis = [g.api for g in self._graphs]
        return json.dumps(apis[0] if len(apis) == 1 else apis)

    def __repr__(self) -> str:
        nodes = sum(len(g.api) for g in self._graphs)
        return f"<ComfyUIPrompt graphs={len(self._graphs)} nodes={nodes} device={self._device}>"

    def node_runs(self) -> dict[str, int]:
        """How many times each node really ran (cache hits excluded), ``"<id>:<ClassType>"``;
        a frame-independent loader shows 1 however many frames went through."""
        out: dict[str, int] = {}
        for graph in self._graphs:
            executor = graph.executor
            for node_id, count in executor.runs.items():
                out[f"{executor.prefix}{node_id}:{graph.class_types.get(node_id, '?')}"] = count
        return out

    @property
    def has_image(self) -> bool:
        """A graph ends in SaveTensor: video frames run through this prompt."""
        return any(g.image_output is not None for g in self._graphs)

    @property
    def has_audio(self) -> bool:
        """A graph ends in SaveAudioTensor: audio runs through this prompt."""
        return any(g.audio_output is not None for g in self._graphs)

    @property
    def audio_buffer_ms(self) -> float | None:
        """The first LoadAudioTensor's ``buffer_size`` (ms); None without one."""
        return audio_buffer_ms(g.api for g in self._graphs)

    def _run(
        self, io_in: dict[str, Any], timings: dict[str, float] | None, kind: str = "image"
    ) -> LiveIO:
        if not _RUN_LOCK.acquire(timeout=RUN_LOCK_TIMEOUT_S):
            raise RuntimeError(
                f"ComfyUI stayed busy for {RUN_LOCK_TIMEOUT_S:g} s (a node in another prompt "
                "hangs); ComfyUI runs one prompt at a time in a process"
            )
        try:
            for graph in self._graphs:
                if not graph.stream_outputs[kind]:
                    continue  # this graph carries the other stream only
                io = LiveIO(**io_in)
                graph.run(io, timings, kind)
                if graph.image_output is not None:
                    io_in["image"] = io.images_out.get(graph.image_output, io_in.get("image"))
                if graph.audio_output is not None:
                    io_in["audio"] = io.audio_out.get(graph.audio_output, io_in.get("audio"))
            return LiveIO(**io_in)
        finally:
            _RUN_LOCK.release()

    def _run_image(self, image: torch.Tensor, timings: dict[str, float] | None) -> torch.Tensor:
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or not image.is_floating_point():
            raise ValueError("image must be a float IMAGE tensor [B,H,W,C]")
        out = self._run({"image": image.to(self._device)}, timings).image
        assert out is not None
        return out

    def run(self, image: torch.Tensor) -> torch.Tensor:
        """IMAGE ``[B,H,W,3]`` in; the IMAGE that reached SaveTensor out (on ComfyUI's
        device). Raises ComfyUINodeError naming the node that failed."""
        return self._run_image(image, None)

    def run_timed(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """``run`` plus seconds per node that ran, keyed ``"<id>:<ClassType>"``."""
        timings: dict[str, float] = {}
        return self._run_image(image, timings), timings

    def run_audio(self, audio: dict[str, Any]) -> dict[str, Any]:
        """One AUDIO chunk through the graphs; what reached SaveAudioTensor (or the input)."""
        waveform = audio.get("waveform") if isinstance(audio, dict) else None
        if not isinstance(waveform, torch.Tensor):
            raise TypeError("audio must be a dict {'waveform': tensor, 'sample_rate': int}")
        moved = {**audio, "waveform": waveform.to(self._device)}
        out = self._run({"audio": moved}, None, "audio").audio
        assert out is not None
        return {**out, "waveform": out["waveform"].to(waveform.device)}


class ComfyUIEngine:
    """Prompts for a real ComfyUI folder, loaded into this process on first use."""

    name = "comfyui"

    def __init__(self, path: str | Path) -> None:
        self.runtime: ComfyUIRuntime = start_comfyui(path)

    @property
    def device(self) -> torch.device:
        return torch.device(self.runtime.device)

    def __repr__(self) -> str:
        return f"<ComfyUIEngine {self.runtime.path} on {self.runtime.device}>"

    def load(self, p: Any, *, allowed_dir: str | Path | None = None) -> ComfyUIPrompt:
        """Validate ``p`` (a graph, a chain, JSON text or a .json path) with ComfyUI's own
        validator and build it; PromptError lists what is wrong."""
        if isinstance(p, ComfyUIPrompt):
            return p
        from ..executor import _load_raw, _unwrap

        try:
            raw = _unwrap(_load_raw(p, allowed_dir))
        except RecursionError:
            raise PromptError("the prompt is nested too deeply") from None
        chain = raw if isinstance(raw, list) else [raw]
        if not chain:
            raise PromptError("the prompt is empty")
        cuda = self.device.type == "cuda"
        graphs = []
        for i, graph in enumerate(chain):
            index = i if len(chain) > 1 else None
            api = apply_stream_rules(check_shape(graph, index))
            outputs = self._validate(api, index)
            graphs.append(_Graph(api, outputs, index, cuda))
        if not any(g.image_output or g.audio_output for g in graphs):
            raise PromptError(
                "the prompt has no output node: add a SaveTensor (PreviewImage and SaveImage "
                "map to it)"
            )
        return ComfyUIPrompt(graphs, self.device)

    def _validate(self, api: dict[str, Any], index: int | None) -> list[str]:
        import execution

        try:
            valid, error, outputs, node_errors = run_sync(
                execution.validate_prompt("comfywhip-validate", copy.deepcopy(api), None)
            )
        except Exception as exc:  # ComfyUI's validator on input it did not expect
            raise PromptError(
                [
                    NodeError(
                        None, None, f"ComfyUI could not validate the prompt: {exc}", None, index
                    )
                ]
            ) from None
        if not valid or node_errors:
            raise errors_from_validation(api, error, node_errors, index)
        return sorted(outputs, key=_key)

    def catalogue(self) -> dict[str, dict[str, Any]]:
        """Every ComfyUI node as ComfyUI's ``/object_info`` describes it."""
        from .catalogue import object_info

        return object_info()
