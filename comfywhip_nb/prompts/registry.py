"""The node registry: ComfyUI's ``NODE_CLASS_MAPPINGS`` contract, ``register_nodes`` and ``@node``.

A node is any class with ComfyUI's attributes: an ``INPUT_TYPES`` classmethod returning
``{"required": {...}, "optional": {...}, "hidden": {...}}``, a ``RETURN_TYPES`` tuple, a
``FUNCTION`` naming the method to call, and optionally ``CATEGORY``, ``OUTPUT_NODE``,
``RETURN_NAMES``, ``DESCRIPTION`` and ``VALIDATE_INPUTS``. Custom node packs written for
ComfyUI register unchanged with ``register_nodes(NODE_CLASS_MAPPINGS)``.

The registry is the only global state of the prompt engine, and it only changes when nodes are
registered: validation copies it once (``snapshot()``), so a running Prompt never reads it.
"""

from __future__ import annotations

import inspect
import logging
import threading
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import torch

from .nodes import BUILTIN_DISPLAY_NAMES, BUILTIN_NODES

__all__ = [
    "ALIASES",
    "AUDIO",
    "IMAGE",
    "MASK",
    "NODE_CLASS_MAPPINGS",
    "NODE_DISPLAY_NAME_MAPPINGS",
    "STREAM_ENDS",
    "node",
    "node_catalogue",
    "register_nodes",
    "snapshot",
    "unregister_nodes",
]

logger = logging.getLogger(__name__)

#: Type aliases for ``@node`` annotations: ``def f(image: IMAGE, mask: MASK) -> IMAGE``.
IMAGE = Annotated[torch.Tensor, "IMAGE"]
MASK = Annotated[torch.Tensor, "MASK"]
AUDIO = Annotated[dict, "AUDIO"]

#: ComfyStream conventions: ComfyUI's file loaders/savers stand in for the stream's ends.
#: Their file inputs ("image", "filename_prefix") are dropped, never opened. A LoadImage maps
#: to LoadTensor only where ComfyStream's rule makes it the live frame; any other LoadImage
#: reads its file from the allowed folder (both in ``nodes/load_image.py``).
ALIASES: Mapping[str, str] = types.MappingProxyType(
    {
        "LoadImage": "LoadTensor",
        "PrimaryInputLoadImage": "LoadTensor",
        "PreviewImage": "SaveTensor",
        "SaveImage": "SaveTensor",
    }
)

#: The stream's ends: the executor feeds and reads these, so a pack may not replace them.
STREAM_ENDS = frozenset({"LoadTensor", "SaveTensor", "LoadAudioTensor", "SaveAudioTensor"})

#: class_type -> node class; the live registry (ComfyUI's name for it).
NODE_CLASS_MAPPINGS: dict[str, type] = {}
#: class_type -> human-readable name.
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}

_lock = threading.RLock()


def _check_node_class(name: object, cls: object) -> None:
    """Reject what ComfyUI would only fail on at run time, naming the class and the attribute."""
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"node names must be non-empty strings, got {name!r}")
    if name in ALIASES:
        raise ValueError(
            f"{name!r} is reserved: it maps to {ALIASES[name]} (ComfyStream convention)"
        )
    if not isinstance(cls, type):
        raise TypeError(f"node {name!r} must be a class, got {type(cls).__name__}")
    if not callable(getattr(cls, "INPUT_TYPES", None)):
        raise TypeError(f"node {name!r} has no INPUT_TYPES classmethod")
    return_types = getattr(cls, "RETURN_TYPES", None)
    if not isinstance(return_types, (tuple, list)):
        raise TypeError(f"node {name!r}: RETURN_TYPES must be a tuple, got {return_types!r}")
    function = getattr(cls, "FUNCTION", None)
    if not isinstance(function, str) or not callable(getattr(cls, function, None)):
        raise TypeError(
            f"node {name!r}: FUNCTION must name a method of the class, got {function!r}"
        )


def register_nodes(
    mapping: Mapping[str, type], display_names: Mapping[str, str] | None = None
) -> None:
    """Register ComfyUI-contract node classes (a custom pack's ``NODE_CLASS_MAPPINGS``).

    Every class is checked before any is added, so a bad pack registers nothing. A name that
    already exists is replaced (ComfyUI lets later packs override earlier ones) with a warning,
    except the stream's ends (STREAM_ENDS), which are refused: the executor hands frames to
    them, and a replacement (ComfyStream's tensor_utils reads its own global cache) would
    leave every prompt without input or output.
    """
    items = list(mapping.items())
    for name, cls in items:
        _check_node_class(name, cls)
    with _lock:
        for name, cls in items:
            current = NODE_CLASS_MAPPINGS.get(name)
            if name in STREAM_ENDS and current is not None and current is not cls:
                raise ValueError(
                    f"{name!r} is one of the stream's ends, built in: the engine feeds the "
                    "frame to it and reads the result back, so it cannot be replaced "
                    "(ComfyStream's own LoadTensor/SaveTensor read a tensor cache this engine "
                    "does not fill; its workflows run on the built-ins unchanged)"
                )
        for name, cls in items:
            previous = NODE_CLASS_MAPPINGS.get(name)
            if previous is not None and previous is not cls:
                logger.warning("node %r replaced: %r -> %r", name, previous, cls)
            NODE_CLASS_MAPPINGS[name] = cls
        for name, label in (display_names or {}).items():
            NODE_DISPLAY_NAME_MAPPINGS[str(name)] = str(label)


def unregister_nodes(*names: str) -> None:
    """Remove nodes by name (tests, notebooks re-running a cell); unknown names are ignored."""
    with _lock:
        for name in names:
            NODE_CLASS_MAPPINGS.pop(name, None)
            NODE_DISPLAY_NAME_MAPPINGS.pop(name, None)


def snapshot() -> dict[str, type]:
    """A copy of the registry, taken under the lock: what one validation sees from start to end."""
    with _lock:
        return dict(NODE_CLASS_MAPPINGS)


# --- INPUT_TYPES entries (used by validation) --------------------------------------------------


def input_spec(cls: type) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(required, optional, hidden) from INPUT_TYPES; raises ValueError on a malformed one."""
    spec = cls.INPUT_TYPES()
    if not isinstance(spec, Mapping):
        raise ValueError(f"INPUT_TYPES() returned {type(spec).__name__}, not a dict")
    parts = []
    for section in ("required", "optional", "hidden"):
        part = spec.get(section) or {}
        if not isinstance(part, Mapping):
            raise ValueError(f"INPUT_TYPES()[{section!r}] is not a dict")
        parts.append(dict(part))
    hidden = {str(k): v for k, v in parts[2].items() if isinstance(v, str)}
    return parts[0], parts[1], hidden


def entry_kind(entry: Any) -> tuple[Any, dict[str, Any]]:
    """(type name or list of combo choices, options) of one INPUT_TYPES entry."""
    if isinstance(entry, str):
        entry = (entry,)
    if not isinstance(entry, (tuple, list)) or not entry:
        raise ValueError(f"malformed INPUT_TYPES entry {repr(entry)[:60]}")
    kind = entry[0]
    options = entry[1] if len(entry) > 1 and isinstance(entry[1], Mapping) else {}
    if kind == "COMBO" and isinstance(options.get("options"), (list, tuple)):
        kind = list(options["options"])
    if isinstance(kind, tuple):
        kind = list(kind)
    if not isinstance(kind, (str, list)):
        raise ValueError(f"malformed INPUT_TYPES entry {repr(entry)[:60]}")
    return kind, dict(options)


def types_match(expected: Any, actual: Any) -> bool:
    """Whether an output type may feed an input: ComfyUI treats "*" as any type, a list of
    choices as COMBO, and "A,B" as a union of types."""
    if isinstance(expected, list):
        expected = "COMBO"
    if isinstance(actual, (list, tuple)):
        actual = "COMBO"
    if not isinstance(expected, str) or not isinstance(actual, str):
        return False
    if "*" in (expected, actual):
        return True
    return bool(set(expected.split(",")) & set(actual.split(",")))


def type_name(kind: Any) -> str:
    """How an input's type is named in messages."""
    return "COMBO" if isinstance(kind, list) else str(kind)


# --- node_catalogue (ComfyUI's /object_info) ---------------------------------------------------


def _jsonable(value: Any, depth: int = 0) -> Any:
    """Tuples become lists and unknown objects their repr, so json.dumps never fails."""
    if depth > 20:
        return repr(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    return repr(value)


def _describe(name: str, cls: type) -> dict[str, Any]:
    try:
        spec = cls.INPUT_TYPES()
        if not isinstance(spec, Mapping):
            spec = {}
    except Exception as exc:  # a broken custom node must not break the catalogue
        logger.warning("INPUT_TYPES of %r raised %r", name, exc)
        spec = {}
    return_types = [_jsonable(t) for t in cls.RETURN_TYPES]
    names = getattr(cls, "RETURN_NAMES", None) or return_types
    return {
        "input": {
            "required": _jsonable(spec.get("required") or {}),
            "optional": _jsonable(spec.get("optional") or {}),
        },
        "output": return_types,
        "output_name": [_jsonable(n) for n in names],
        "output_is_list": [False] * len(return_types),
        "name": name,
        "display_name": NODE_DISPLAY_NAME_MAPPINGS.get(name, name),
        "description": str(getattr(cls, "DESCRIPTION", "") or ""),
        "category": str(getattr(cls, "CATEGORY", "") or ""),
        "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
        "python_module": str(getattr(cls, "__module__", "")),
    }


def node_catalogue() -> dict[str, dict[str, Any]]:
    """Every registered node as ComfyUI's ``/object_info`` describes it; JSON-serialisable."""
    return {name: _describe(name, cls) for name, cls in sorted(snapshot().items())}


# --- @node: a typed function becomes a node class ----------------------------------------------

_STRING_TYPES: dict[str, Any] = {
    "torch.Tensor": torch.Tensor,
    "Tensor": torch.Tensor,
    "int": int,
    "float": float,
    "bool": bool,
    "str": str,
}


def _resolve(annotation: Any, globalns: dict[str, Any]) -> Any:
    """Resolve one string annotation (``from __future__ import annotations``) on its own, so an
    undefined name such as ``"IMAGE"`` in one parameter does not spoil the others."""
    if not isinstance(annotation, str):
        return annotation
    text = annotation.strip()
    while len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1].strip()  # "'MASK'": a quoted name under postponed annotations
    if text in _STRING_TYPES:
        return _STRING_TYPES[text]

    def shim() -> None:
        pass

    shim.__annotations__ = {"x": text}
    try:
        return typing.get_type_hints(shim, globalns=globalns, include_extras=True)["x"]
    except Exception:
        return text  # a bare name like "IMAGE" or "LATENT": taken as the ComfyUI type itself


def _comfy_type(annotation: Any, where: str) -> tuple[Any, dict[str, Any], bool]:
    """(ComfyUI type or combo list, extra options, optional?) for one annotation."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *extras = typing.get_args(annotation)
        names = [e for e in extras if isinstance(e, str)]
        if names:  # Annotated[dict, "AUDIO"]: the name is the type, whatever the base
            kind, options, optional = names[-1], {}, False
        else:
            kind, options, optional = _comfy_type(base, where)
        for extra in extras:
            if isinstance(extra, Mapping):
                options.update(extra)
        return kind, options, optional
    if origin is typing.Literal:
        return list(typing.get_args(annotation)), {}, False
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            kind, options, _ = _comfy_type(args[0], where)
            return kind, options, True
    simple = {bool: "BOOLEAN", int: "INT", float: "FLOAT", str: "STRING", torch.Tensor: "IMAGE"}
    if isinstance(annotation, type) and annotation in simple:
        return simple[annotation], {}, False
    if (
        isinstance(annotation, str)
        and annotation.replace("_", "").isalnum()
        and annotation.isupper()
    ):
        return annotation, {}, False
    raise TypeError(f"@node: {where} has an unsupported annotation {annotation!r}")


_WIDGETS = {"INT", "FLOAT", "BOOLEAN", "STRING"}


def _build_class(
    fn: Callable[..., Any],
    name: str,
    category: str,
    output_node: bool,
    return_names: tuple[str, ...] | None,
) -> type:
    globalns = getattr(fn, "__globals__", {})
    signature = inspect.signature(fn)
    required: dict[str, tuple[Any, ...]] = {}
    optional: dict[str, tuple[Any, ...]] = {}
    for param in signature.parameters.values():
        where = f"parameter {param.name!r} of {fn.__name__}"
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"@node: {where}: *args/**kwargs cannot become inputs")
        if param.annotation is param.empty:
            raise TypeError(f"@node: {where} needs a type annotation")
        kind, options, is_optional = _comfy_type(_resolve(param.annotation, globalns), where)
        has_default = param.default is not param.empty
        widget = isinstance(kind, list) or kind in _WIDGETS
        if widget and has_default and param.default is not None:
            options = {"default": param.default, **options}
        entry = (kind, options) if options else (kind,)
        if (has_default and param.default is None) or (is_optional and not widget):
            optional[param.name] = entry
        else:
            required[param.name] = entry

    ret = _resolve(signature.return_annotation, globalns)
    if ret is signature.empty:
        return_types: tuple[Any, ...] = () if output_node else ("IMAGE",)
    elif ret is None or ret is type(None):
        return_types = ()
    elif typing.get_origin(ret) is tuple:
        return_types = tuple(
            _comfy_type(_resolve(a, globalns), f"return of {fn.__name__}")[0]
            for a in typing.get_args(ret)
        )
    else:
        return_types = (_comfy_type(ret, f"return of {fn.__name__}")[0],)
    spec = {"required": required, "optional": optional}
    n_out = len(return_types)

    def execute(self: object, **kwargs: Any) -> tuple[Any, ...]:
        result = fn(**kwargs)
        if n_out == 0:
            return ()
        if n_out == 1:
            return (result,)
        return tuple(result)

    def input_types(cls: type) -> dict[str, Any]:
        return {"required": dict(spec["required"]), "optional": dict(spec["optional"])}

    attrs: dict[str, Any] = {
        "INPUT_TYPES": classmethod(input_types),
        "RETURN_TYPES": return_types,
        "FUNCTION": "execute",
        "CATEGORY": category,
        "OUTPUT_NODE": output_node,
        "DESCRIPTION": (inspect.getdoc(fn) or "").split("\n\n")[0],
        "execute": execute,
        "__doc__": fn.__doc__,
        "__module__": getattr(fn, "__module__", __name__),
        "__wrapped__": staticmethod(fn),
    }
    if return_names is not None:
        if len(return_names) != n_out:
            raise TypeError(f"@node {name}: {len(return_names)} return_names for {n_out} outputs")
        attrs["RETURN_NAMES"] = tuple(return_names)
    return type(name, (), attrs)


def node(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    category: str = "custom",
    output_node: bool = False,
    return_names: tuple[str, ...] | list[str] | None = None,
    display_name: str | None = None,
) -> Any:
    """Turn a typed function into a ComfyUI-contract node class and register it.

    ``torch.Tensor``/``IMAGE`` parameters become IMAGE links (``MASK``/``AUDIO`` likewise,
    a default of ``None`` makes them optional); ``int``/``float``/``bool``/``str`` become
    INT/FLOAT/BOOLEAN/STRING widgets whose Python default is the widget default;
    ``Literal[...]`` becomes a combo; ``Annotated[float, {"min": 0, "max": 1}]`` adds bounds.
    The return annotation gives RETURN_TYPES (a ``tuple[...]`` for several outputs).
    Returns the generated class (the function stays reachable as ``cls.__wrapped__``).
    Works bare (``@node``) or with arguments (``@node(category="fx")``).
    """

    def wrap(f: Callable[..., Any]) -> type:
        node_name = name or f.__name__
        names = tuple(return_names) if return_names is not None else None
        cls = _build_class(f, node_name, category, output_node, names)
        register_nodes({node_name: cls}, {node_name: display_name} if display_name else None)
        return cls

    if fn is not None:
        return wrap(fn)
    return wrap


register_nodes(BUILTIN_NODES, BUILTIN_DISPLAY_NAMES)
