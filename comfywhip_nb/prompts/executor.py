"""Run validated prompts on frames: ``Prompt``, ``load_prompt`` and the bundled presets.

A Prompt is built once (validation, then one instance per node, as ComfyUI keeps node
objects between runs) and then run on every frame from one worker thread. Runs read nothing
global: the registry was copied at validation time and the frame reaches LoadTensor as a hidden
input, so building a new Prompt on another thread while this one runs is safe. Each Prompt
also holds a lock, so two threads calling ``run`` on the same Prompt take turns.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from .graph import NodeError, PromptError, ValidatedGraph, id_key, parse_prompt
from .streams import audio_buffer_ms

__all__ = ["NodeExecutionError", "Prompt", "list_presets", "load_preset", "load_prompt"]

#: Largest JSON text (string or file) accepted.
MAX_JSON_BYTES = 1 << 20


class NodeExecutionError(RuntimeError):
    """A node raised while running; the original exception is the ``__cause__``."""

    def __init__(
        self, node_id: str, class_type: str, message: str, graph: int | None = None
    ) -> None:
        self.node_id = node_id
        self.class_type = class_type
        self.graph = graph
        self.message = message
        where = f"prompt[{graph}], " if graph is not None else ""
        super().__init__(f"{where}node {node_id} ({class_type}) failed: {message}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": str(self),
            "node_id": self.node_id,
            "class_type": self.class_type,
            "graph": self.graph,
            "message": self.message,
        }


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _instantiate(cls: type, device: torch.device) -> Any:
    # Built-ins that create tensors (EmptyImage) take the device, like ComfyUI's EmptyImage.
    return cls(device=device) if getattr(cls, "STREAM_DEVICE", False) else cls()


class _GraphRunner:
    """One graph's node instances and the order to call them in."""

    def __init__(self, graph: ValidatedGraph, index: int | None, device: torch.device) -> None:
        self.graph = graph
        self.index = index
        self.plans = {kind: self._plan(kind) for kind in ("image", "audio")}
        needed = {node_id for order, _ in self.plans.values() for node_id in order}
        self.instances: dict[str, Any] = {}
        errors = []
        for node_id in sorted(needed, key=id_key):
            node = graph.nodes[node_id]
            try:
                self.instances[node_id] = _instantiate(node.cls, device)
            except Exception as exc:
                message = f"could not create the node: {type(exc).__name__}: {exc}"
                errors.append(NodeError(node_id, node.class_type, message, graph=index))
        if errors:
            raise PromptError(errors)
        self.static_hidden = {
            "PROMPT": graph.to_api(),
            "EXTRA_PNGINFO": None,
            "DYNPROMPT": None,
            "IMAGE_DIR": graph.image_dir,
        }

    def _plan(self, kind: str) -> tuple[tuple[str, ...], dict[str, int]]:
        """Nodes a run of this stream kind needs in topological order (ids in natural order on
        ties), and the step after which each result can be freed.

        ComfyUI runs only what feeds an output node. A video run executes the SaveTensor's
        ancestors plus any custom output nodes; an audio run only the SaveAudioTensor's, so one
        graph can carry both and run each separately.
        """
        nodes = self.graph.nodes
        target = self.graph.image_output if kind == "image" else self.graph.audio_output
        pending = [] if target is None else [target]
        if kind == "image" and target is not None:
            pending += [
                i
                for i, n in nodes.items()
                if getattr(n.cls, "OUTPUT_NODE", False)
                and not getattr(n.cls, "STREAM_OUTPUT", None)
            ]
        needed: set[str] = set()
        while pending:
            node_id = pending.pop()
            if node_id not in needed:
                needed.add(node_id)
                pending.extend(src for src, _ in nodes[node_id].links.values())
        order: list[str] = []
        remaining = sorted(needed, key=id_key)
        while remaining:  # validation ruled out cycles, so each pass makes progress
            done = set(order)
            ready = [i for i in remaining if all(s in done for s, _ in nodes[i].links.values())]
            order.extend(ready)
            remaining = [i for i in remaining if i not in set(ready)]
        last_use: dict[str, int] = {}
        for step, node_id in enumerate(order):
            for src, _ in nodes[node_id].links.values():
                last_use[src] = step
        return tuple(order), last_use

    def _hidden(self, node_id: str, stream: Mapping[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, kind in self.graph.nodes[node_id].hidden.items():
            if kind == "STREAM_IMAGE":
                values[name] = stream.get("image")
            elif kind == "STREAM_AUDIO":
                values[name] = stream.get("audio")
            elif kind == "UNIQUE_ID":
                values[name] = node_id
            elif kind in self.static_hidden:  # a copy: a node must not edit the next run's
                values[name] = copy.deepcopy(self.static_hidden[kind])
        return values

    def run(
        self,
        kind: str,
        stream: Mapping[str, Any],
        timings: dict[str, float] | None,
        sync: Callable[[], None],
    ) -> dict[str, Any]:
        """Run the nodes this stream kind needs, once each; return the stream outputs reached."""
        nodes = self.graph.nodes
        order, last_use = self.plans[kind]
        results: dict[str, tuple[Any, ...]] = {}
        outputs: dict[str, Any] = {}
        for step, node_id in enumerate(order):
            node = nodes[node_id]
            kwargs = dict(node.literals)
            for name, (src, idx) in node.links.items():
                kwargs[name] = results[src][idx]
            kwargs.update(self._hidden(node_id, stream))
            started = time.perf_counter()
            try:
                result = getattr(self.instances[node_id], node.cls.FUNCTION)(**kwargs)
                result = self._check_result(node.cls, result)
            except Exception as exc:
                raise NodeExecutionError(
                    node_id, node.class_type, f"{type(exc).__name__}: {exc}", self.index
                ) from exc
            if timings is not None:
                sync()
                prefix = f"prompt[{self.index}]/" if self.index is not None else ""
                timings[f"{prefix}{node_id}:{node.class_type}"] = time.perf_counter() - started
            results[node_id] = result
            stream_output = getattr(node.cls, "STREAM_OUTPUT", None)
            if stream_output and node_id in (self.graph.image_output, self.graph.audio_output):
                outputs[stream_output[0]] = kwargs[stream_output[1]]
            for src, _ in node.links.values():
                if last_use.get(src) == step:
                    results.pop(src, None)
        return outputs

    @staticmethod
    def _check_result(cls: type, result: Any) -> tuple[Any, ...]:
        if isinstance(result, dict) and "result" in result:
            result = result["result"]  # ComfyUI's {"ui": ..., "result": (...)}
        if result is None and not cls.RETURN_TYPES:
            return ()
        if not isinstance(result, (tuple, list)) or len(result) < len(cls.RETURN_TYPES):
            raise TypeError(
                f"returned {type(result).__name__}, "
                f"expected a tuple of {len(cls.RETURN_TYPES)} output(s)"
            )
        return tuple(result)


class Prompt:
    """A validated prompt, ready to run on frames. Build it with ``load_prompt``."""

    def __init__(
        self, graphs: Sequence[ValidatedGraph], device: str | torch.device | None = None
    ) -> None:
        if not graphs:
            raise PromptError("the prompt is empty")
        self._graphs = tuple(graphs)
        self._device = torch.device(device) if device is not None else _default_device()
        chained = len(self._graphs) > 1
        self._runners = [
            _GraphRunner(graph, i if chained else None, self._device)
            for i, graph in enumerate(self._graphs)
        ]
        self._api = [graph.to_api() for graph in self._graphs]
        self._lock = threading.Lock()

    @classmethod
    def passthrough(cls, device: str | torch.device | None = None) -> Prompt:
        """LoadTensor -> SaveTensor: the frame comes out unchanged."""
        graph = {
            "1": {"class_type": "LoadTensor", "inputs": {}},
            "2": {"class_type": "SaveTensor", "inputs": {"images": ["1", 0]}},
        }
        return cls(parse_prompt(graph), device)

    @property
    def device(self) -> torch.device:
        """Where the nodes run: CUDA when available, else the CPU (or load_prompt's device)."""
        return self._device

    @property
    def has_image(self) -> bool:
        """A graph ends in SaveTensor: video frames run through this prompt."""
        return any(graph.image_output is not None for graph in self._graphs)

    @property
    def has_audio(self) -> bool:
        """A graph ends in SaveAudioTensor: audio runs through this prompt."""
        return any(graph.audio_output is not None for graph in self._graphs)

    @property
    def audio_buffer_ms(self) -> float | None:
        """The first LoadAudioTensor's ``buffer_size`` (ms): audio per run; None without one."""
        return audio_buffer_ms(self._api)

    @property
    def graphs(self) -> list[dict[str, Any]]:
        """The normalised API-format graphs (aliases mapped, unused inputs dropped); copies."""
        return copy.deepcopy(self._api)

    def to_json(self) -> str:
        """API-format JSON: a graph as an object, a chain as a list; ``load_prompt`` reads it."""
        return json.dumps(self._api[0] if len(self._api) == 1 else self._api)

    def __repr__(self) -> str:
        nodes = sum(len(g.nodes) for g in self._graphs)
        return f"<Prompt graphs={len(self._graphs)} nodes={nodes} device={self._device}>"

    def _sync(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    def _run(self, kind: str, value: Any, timings: dict[str, float] | None) -> Any:
        stream = {kind: value}
        with self._lock, torch.no_grad():
            for runner in self._runners:
                stream.update(runner.run(kind, stream, timings, self._sync))
        return stream[kind]

    def _run_image(self, image: torch.Tensor, timings: dict[str, float] | None) -> torch.Tensor:
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
        if image.ndim != 4 or not image.is_floating_point():
            raise ValueError(
                f"image must be a float IMAGE [B,H,W,C], got {image.dtype} {tuple(image.shape)}"
            )
        out = self._run("image", image.to(self._device), timings)
        return out.to(image.device)

    def run(self, image: torch.Tensor) -> torch.Tensor:
        """Run on one IMAGE ``[B,H,W,3]`` float 0..1; returns the IMAGE that reached SaveTensor,
        on the input's device (the input itself when no graph has a SaveTensor).
        Raises NodeExecutionError when a node fails."""
        return self._run_image(image, None)

    def run_timed(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """``run`` plus seconds per node, keyed ``"<node id>:<class_type>"`` (prefixed
        ``"prompt[<i>]/"`` in a chain). On CUDA each node is synchronised to be measured."""
        timings: dict[str, float] = {}
        return self._run_image(image, timings), timings

    def run_audio(self, audio: dict[str, Any]) -> dict[str, Any]:
        """Run on one AUDIO chunk ``{"waveform", "sample_rate"}``; returns what reached
        SaveAudioTensor, or the input when no graph has one."""
        waveform = audio.get("waveform") if isinstance(audio, dict) else None
        if not isinstance(waveform, torch.Tensor):
            raise TypeError("audio must be a dict {'waveform': tensor, 'sample_rate': int}")
        moved = {**audio, "waveform": waveform.to(self._device)}
        out = self._run("audio", moved, None)
        if out is moved:
            return audio
        return {**out, "waveform": out["waveform"].to(waveform.device)}


# --- loading: JSON text, files, ComfyUI's /prompt body -----------------------------------------


def _parse_json(text: str) -> Any:
    if len(text) > MAX_JSON_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_JSON_BYTES:
        raise PromptError(f"prompt JSON is larger than {MAX_JSON_BYTES} bytes")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PromptError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise PromptError("prompt JSON is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer over sys.get_int_max_str_digits() digits
        raise PromptError(f"invalid JSON: {exc}") from None


def _read_file(path: Path, allowed_dir: str | Path | None) -> Any:
    try:
        resolved = path.expanduser().resolve()
        if allowed_dir is not None:
            root = Path(allowed_dir).expanduser().resolve()
            if not resolved.is_relative_to(root):
                raise PromptError(
                    f"prompt file {str(path)!r} lies outside the allowed folder {str(root)!r}"
                )
        if not resolved.exists():
            raise PromptError(f"prompt file {str(path)!r} does not exist")
        if not resolved.is_file():
            raise PromptError(f"prompt path {str(path)!r} is not a file")
        if resolved.stat().st_size > MAX_JSON_BYTES:
            raise PromptError(f"prompt file {str(path)!r} is larger than {MAX_JSON_BYTES} bytes")
        text = resolved.read_text(encoding="utf-8")
    except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: "~nobody" paths
        if isinstance(exc, PromptError):
            raise
        raise PromptError(f"cannot read prompt file {str(path)!r}: {exc}") from None
    return _parse_json(text)


def _load_raw(p: Any, allowed_dir: str | Path | None) -> Any:
    if isinstance(p, (dict, list)):
        return p
    if isinstance(p, bytes):
        try:
            p = p.decode("utf-8")
        except UnicodeDecodeError:
            raise PromptError("prompt bytes are not UTF-8 text") from None
    if isinstance(p, str):
        if p.lstrip()[:1] in ("{", "["):
            return _parse_json(p)
        if not p.strip() or len(p) > 4096 or "\n" in p:
            raise PromptError("prompt string is neither JSON nor the path of a .json file")
        return _read_file(Path(p), allowed_dir)
    if isinstance(p, Path):
        return _read_file(p, allowed_dir)
    raise PromptError(
        f"a prompt must be a dict, a list, a JSON string or a path, got {type(p).__name__}"
    )


def _unwrap(raw: Any) -> Any:
    """Accept ComfyUI's ``/prompt`` body ``{"prompt": {...}, "client_id": ...}`` too."""
    if isinstance(raw, dict) and isinstance(raw.get("prompt"), (dict, list)):
        inner = raw["prompt"]
        if not (isinstance(inner, dict) and "class_type" in inner):
            return inner
    return raw


def load_prompt(
    p: Any, *, allowed_dir: str | Path | None = None, device: str | torch.device | None = None
) -> Prompt:
    """Validate a prompt and build it: ``p`` is a dict, a list of dicts (a chain), a JSON
    string, a path to a .json file (inside ``allowed_dir`` when given) or a Prompt (returned
    as is). Reference images (a LoadImage that is not the live frame, ComfyStream's rule) are
    read from ``allowed_dir`` only; without it they are refused. ``device`` overrides the
    default (CUDA when available). Raises PromptError."""
    if isinstance(p, Prompt):
        return p
    try:
        raw = _unwrap(_load_raw(p, allowed_dir))
    except RecursionError:
        raise PromptError("the prompt is nested too deeply") from None
    return Prompt(parse_prompt(raw, image_dir=allowed_dir), device)


def _preset_files() -> dict[str, Any]:
    folder = resources.files(__package__).joinpath("presets")
    return {
        entry.name[: -len(".json")]: entry
        for entry in folder.iterdir()
        if entry.name.endswith(".json")
    }


def list_presets() -> list[str]:
    """Names of the bundled example prompts."""
    return sorted(_preset_files())


def load_preset(name: str, *, device: str | torch.device | None = None) -> Prompt:
    """A bundled example prompt by name (see ``list_presets``)."""
    files = _preset_files()
    if name not in files:
        raise PromptError(f"unknown preset {name!r}; available: {', '.join(sorted(files))}")
    return load_prompt(files[name].read_text(encoding="utf-8"), device=device)
