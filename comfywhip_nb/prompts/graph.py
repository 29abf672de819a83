"""Parse and validate ComfyUI API-format prompts. No torch work and no aiohttp here.

A prompt is ``{"<node id>": {"class_type": ..., "inputs": {name: literal | [src_id, out]}}}``
(what ComfyUI's "Save (API Format)" writes), or a list of them run as a chain: each graph's
SaveTensor feeds the next graph's LoadTensor. (``executor.load_prompt`` turns JSON text and
files into these objects first.)

Validation collects every problem before failing, each as a NodeError naming the node and its
class, and raises one PromptError with all of them (``http/bodies.py`` maps it to HTTP 400). Hostile
input (huge, deeply nested, not JSON) gives a PromptError too, never another exception.
"""

from __future__ import annotations

import difflib
import inspect
import math
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import registry
from .nodes.load_image import LoadImage, live_load_image, resolve_image

__all__ = [
    "MAX_NODES",
    "NodeError",
    "PromptError",
    "ValidatedGraph",
    "ValidatedNode",
    "live_load_image",
    "parse_prompt",
]

#: Most nodes in one prompt, all graphs of a chain together.
MAX_NODES = 1000


@dataclass(frozen=True)
class NodeError:
    """One problem in a prompt."""

    node_id: str | None
    """The node's id, or None for a problem with the prompt as a whole."""
    class_type: str | None
    """The node's class_type as written in the prompt, when known."""
    message: str
    """What is wrong, without the node prefix."""
    input_name: str | None = None
    """The input concerned, if any."""
    graph: int | None = None
    """Index of the graph in a chain; None when the prompt is a single graph."""

    def __str__(self) -> str:
        where = f"prompt[{self.graph}]" if self.graph is not None else ""
        if self.node_id is not None:
            node = f"node {self.node_id}" + (f" ({self.class_type})" if self.class_type else "")
            where = f"{where}, {node}" if where else node
        return f"{where}: {self.message}" if where else self.message

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PromptError(ValueError):
    """A prompt that cannot run; ``errors`` lists every problem found."""

    def __init__(self, errors: Sequence[NodeError] | NodeError | str) -> None:
        if isinstance(errors, str):
            errors = [NodeError(None, None, errors)]
        elif isinstance(errors, NodeError):
            errors = [errors]
        self.errors: list[NodeError] = list(errors)
        lines = [str(e) for e in self.errors]
        text = (
            lines[0] if len(lines) == 1 else f"{len(lines)} errors in prompt:\n" + "\n".join(lines)
        )
        super().__init__(text)

    def to_dict(self) -> dict[str, Any]:
        return {"error": str(self), "node_errors": [e.to_dict() for e in self.errors]}


@dataclass(frozen=True)
class ValidatedNode:
    node_id: str
    class_type: str
    """Canonical class name (aliases such as PreviewImage already mapped)."""
    cls: type
    literals: Mapping[str, Any]
    links: Mapping[str, tuple[str, int]]
    hidden: Mapping[str, str]
    title: str | None = None
    input_order: tuple[str, ...] = ()
    """Input names in the order the prompt gave them, for round trips."""


@dataclass(frozen=True)
class ValidatedGraph:
    nodes: Mapping[str, ValidatedNode]
    """Every node, in the prompt's order; the links between them form no cycle."""
    image_output: str | None
    audio_output: str | None
    image_dir: str | None = None
    """The folder reference images (a LoadImage that is not the live frame) are read from."""

    def to_api(self) -> dict[str, Any]:
        """The graph in API format: canonical class names, only the inputs that are used."""
        out: dict[str, Any] = {}
        for node_id, node in self.nodes.items():
            links = {name: [src, idx] for name, (src, idx) in node.links.items()}
            inputs = {
                n: node.literals[n] if n in node.literals else links[n] for n in node.input_order
            }
            entry: dict[str, Any] = {"class_type": node.class_type, "inputs": inputs}
            if node.title is not None:
                entry["_meta"] = {"title": node.title}
            out[node_id] = entry
        return out


def id_key(node_id: str) -> tuple[int, int, str]:
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 10, 6, 60, 60


def _short(value: Any) -> str:
    """A bounded repr: prompt values can be huge or nested 100 000 deep."""
    return _REPR.repr(value)


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float range (JSON allows 4300 digits)
        return False


def _literal(name: str, value: Any, kind: Any, options: Mapping[str, Any]) -> Any:
    """The literal, normalised (INT given as 3.0 becomes 3); ValueError says what is wrong."""
    if isinstance(kind, list):
        try:
            ok = value in kind
        except Exception:
            ok = False
        if not ok:
            raise ValueError(f"input '{name}' = {_short(value)} is not one of {_short(kind)}")
        return value
    accepted = {"INT": (int, float), "FLOAT": (int, float), "BOOLEAN": bool, "STRING": str}
    if kind not in accepted:
        raise ValueError(f"input '{name}' expects a link to a {kind} output, got {_short(value)}")
    numeric = kind in ("INT", "FLOAT")
    wrong = not isinstance(value, accepted[kind]) or (
        numeric and (isinstance(value, bool) or not _finite(value))
    )
    if wrong or (kind == "INT" and isinstance(value, float) and not value.is_integer()):
        raise ValueError(
            f"input '{name}' expects {kind}, got {type(value).__name__} {_short(value)}"
        )
    if not numeric:
        return value
    value = int(value) if kind == "INT" else float(value)
    low, high = options.get("min"), options.get("max")
    if isinstance(low, (int, float)) and value < low:
        raise ValueError(f"input '{name}' = {_short(value)} is below min {low}")
    if isinstance(high, (int, float)) and value > high:
        raise ValueError(f"input '{name}' = {_short(value)} is above max {high}")
    return value


# --- one graph ---------------------------------------------------------------------------------


@dataclass
class _Draft:
    node_id: str
    written_type: str
    class_type: str
    cls: type | None
    inputs: Mapping[str, Any]
    title: str | None


class _GraphChecker:
    def __init__(
        self,
        graph: Any,
        classes: Mapping[str, type],
        index: int | None,
        image_dir: str | None = None,
    ) -> None:
        self.graph = graph
        self.classes = classes
        self.index = index
        self.image_dir = image_dir
        self.live_image: str | None = None
        self.errors: list[NodeError] = []
        self.edges: dict[str, set[str]] = {}

    def error(self, draft: _Draft | None, message: str, input_name: str | None = None) -> None:
        node_id = draft.node_id if draft else None
        class_type = draft.written_type if draft else None
        self.errors.append(NodeError(node_id, class_type, message, input_name, self.index))

    def run(self) -> ValidatedGraph | None:
        graph = self.graph
        if not isinstance(graph, dict):
            self.error(
                None,
                f"a graph must be an object mapping node ids to nodes, got {type(graph).__name__}",
            )
            return None
        if isinstance(graph.get("nodes"), list) or ("nodes" in graph and "links" in graph):
            self.error(None, "this is a UI-format workflow; export it with 'Save (API Format)'")
            return None
        if not graph:
            self.error(None, "the prompt is empty")
            return None
        drafts = self._drafts(graph)
        nodes: dict[str, ValidatedNode] = {}
        for draft in drafts.values():
            validated = self._check_node(draft, drafts)
            if validated is not None:
                nodes[draft.node_id] = validated
        self._check_cycles(drafts)
        outputs = {
            kind: sorted(
                (i for i, n in nodes.items() if getattr(n.cls, "STREAM_OUTPUT", ("",))[0] == kind),
                key=id_key,
            )
            for kind in ("image", "audio")
        }
        if not any(getattr(d.cls, "STREAM_OUTPUT", None) for d in drafts.values()):
            self.error(
                None,
                "the prompt has no output node: add a SaveTensor "
                "(PreviewImage and SaveImage map to it)",
            )
        if self.errors:
            return None
        return ValidatedGraph(
            nodes=nodes,
            image_output=outputs["image"][0] if outputs["image"] else None,
            audio_output=outputs["audio"][0] if outputs["audio"] else None,
            image_dir=self.image_dir,
        )

    def _drafts(self, graph: dict[Any, Any]) -> dict[str, _Draft]:
        drafts: dict[str, _Draft] = {}
        self.live_image = live_load_image(graph)
        for raw_id, entry in graph.items():
            node_id = str(raw_id)
            where = _Draft(node_id, None, "", None, {}, None)  # type: ignore[arg-type]
            if node_id in drafts:
                self.error(where, "duplicate node id")
                continue
            if not isinstance(entry, dict):
                self.error(
                    where,
                    "a node must be an object with 'class_type' and 'inputs', "
                    f"got {type(entry).__name__}",
                )
                continue
            written = entry.get("class_type")
            if not isinstance(written, str) or not written:
                self.error(where, "the node has no 'class_type'")
                continue
            canonical = registry.ALIASES.get(written, written)
            cls = self.classes.get(canonical)
            if written == "LoadImage" and node_id != self.live_image:
                canonical, cls = "LoadImage", LoadImage  # a reference image from its file
            inputs = entry.get("inputs", {})
            meta = entry.get("_meta")
            title = meta.get("title") if isinstance(meta, dict) else None
            draft = _Draft(
                node_id, written, canonical, cls, inputs, title if isinstance(title, str) else None
            )
            drafts[node_id] = draft
            if cls is None:
                names = list(self.classes) + list(registry.ALIASES)
                close = difflib.get_close_matches(written, names, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.error(draft, f"unknown class_type {written!r}{hint}")
            elif not isinstance(inputs, dict):
                self.error(draft, f"'inputs' must be an object, got {type(inputs).__name__}")
        return drafts

    def _check_node(self, draft: _Draft, drafts: Mapping[str, _Draft]) -> ValidatedNode | None:
        if draft.cls is None or not isinstance(draft.inputs, dict):
            return None
        before = len(self.errors)
        try:
            required, optional, hidden = registry.input_spec(draft.cls)
        except Exception as exc:
            self.error(draft, f"INPUT_TYPES() failed: {exc!r}")
            return None
        literals: dict[str, Any] = {}
        links: dict[str, tuple[str, int]] = {}
        for name, entry in [*required.items(), *optional.items()]:
            try:
                kind, options = registry.entry_kind(entry)
            except ValueError as exc:
                self.error(draft, f"input '{name}': {exc}", name)
                continue
            if name not in draft.inputs:
                if name in required:
                    self.error(draft, f"missing required input '{name}'", name)
                continue
            value = draft.inputs[name]
            if isinstance(value, (list, tuple)):  # a link (tuples: prompts built in Python)
                link = self._check_link(draft, name, list(value), kind, drafts)
                if link is not None:
                    links[name] = link
                continue
            try:
                literals[name] = _literal(name, value, kind, options)
            except ValueError as exc:
                self.error(draft, str(exc), name)
        self.edges[draft.node_id] = {src for src, _ in links.values()}
        if len(self.errors) == before:
            self._validate_inputs(draft, literals, links)
        file_input = getattr(draft.cls, "FILE_INPUT", None)
        if file_input in literals and len(self.errors) == before:
            try:
                resolve_image(literals[file_input], self.image_dir)
            except ValueError as exc:
                self.error(draft, str(exc), file_input)
        if len(self.errors) != before:
            return None
        order = tuple(n for n in draft.inputs if n in literals or n in links)
        return ValidatedNode(
            draft.node_id, draft.class_type, draft.cls, literals, links, hidden, draft.title, order
        )

    def _check_link(
        self, draft: _Draft, name: str, value: list[Any], kind: Any, drafts: Mapping[str, _Draft]
    ) -> tuple[str, int] | None:
        src, idx = value if len(value) == 2 else (None, None)
        if not _is_node_ref(src) or isinstance(idx, bool) or not isinstance(idx, int):
            expected = '["<node id>", <output index>]'
            self.error(
                draft,
                f"input '{name}' = {_short(value)} is a malformed link; expected {expected}",
                name,
            )
            return None
        src = str(src)
        source = drafts.get(src)
        if source is None:
            self.error(draft, f"input '{name}' links to node {src}, which does not exist", name)
            return None
        if source.cls is None:
            return (src, idx)  # the source's own error is reported; its outputs are unknown
        return_types = tuple(source.cls.RETURN_TYPES)
        if not 0 <= idx < len(return_types):
            self.error(
                draft,
                f"input '{name}' links to output {idx} of node {src} ({source.written_type}), "
                f"which has {len(return_types)} output(s)",
                name,
            )
            return None
        actual = return_types[idx]
        if not registry.types_match(kind, actual):
            self.error(
                draft,
                f"input '{name}' expects {registry.type_name(kind)} but output {idx} of node {src} "
                f"({source.written_type}) is {registry.type_name(actual)}",
                name,
            )
            return None
        return (src, idx)

    def _validate_inputs(
        self, draft: _Draft, literals: Mapping[str, Any], links: Mapping[str, Any]
    ) -> None:
        """ComfyUI's optional ``VALIDATE_INPUTS`` hook, given the literal inputs it names."""
        hook = getattr(draft.cls, "VALIDATE_INPUTS", None)
        if not callable(hook):
            return
        try:
            params = inspect.signature(hook).parameters
            if any(p in links for p in params):
                return  # a value only known at run time
            result = hook(**{p: literals[p] for p in params if p in literals})
        except Exception as exc:
            self.error(draft, f"VALIDATE_INPUTS failed: {exc!r}")
            return
        if result is not True:
            self.error(
                draft,
                str(result)
                if isinstance(result, str)
                else f"VALIDATE_INPUTS returned {_short(result)}",
            )

    def _check_cycles(self, drafts: Mapping[str, _Draft]) -> None:
        """Report every node whose inputs lead back to itself (at most 1000 nodes: n^2 is fine)."""
        for start in drafts:
            seen: set[str] = set()
            stack = list(self.edges.get(start, ()))
            while stack:
                current = stack.pop()
                if current == start:
                    self.error(drafts[start], "is part of a cycle: its inputs lead back to itself")
                    break
                if current not in seen:
                    seen.add(current)
                    stack.extend(self.edges.get(current, ()))


def _is_node_ref(value: Any) -> bool:
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def parse_prompt(
    raw: Any,
    *,
    classes: Mapping[str, type] | None = None,
    image_dir: str | Path | None = None,
) -> list[ValidatedGraph]:
    """Validate a decoded prompt (a graph dict or a list of them) into graphs.

    ``classes`` defaults to a snapshot of the registry; ``image_dir`` is the only folder
    reference images may be read from (None: none may). Raises PromptError listing every
    problem.
    """
    try:
        graphs = raw if isinstance(raw, list) else [raw]
        if not graphs:
            raise PromptError("the prompt is empty")
        total = sum(max(len(g), 1) if isinstance(g, dict) else 1 for g in graphs)
        if total > MAX_NODES:
            raise PromptError(f"the prompt has {total} nodes; at most {MAX_NODES} are allowed")
        classes = registry.snapshot() if classes is None else classes
        errors: list[NodeError] = []
        validated: list[ValidatedGraph] = []
        for i, graph in enumerate(graphs):
            folder = str(image_dir) if image_dir is not None else None
            checker = _GraphChecker(graph, classes, i if len(graphs) > 1 else None, folder)
            result = checker.run()
            errors.extend(checker.errors)
            if result is not None:
                validated.append(result)
        if errors:
            raise PromptError(errors)
        return validated
    except RecursionError:
        raise PromptError("the prompt is nested too deeply") from None
