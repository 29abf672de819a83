"""Start a user's ComfyUI inside this process, once, as ComfyUI's own ``main.py`` would.

What runs, in ComfyUI's order: its arguments with their defaults (``--cpu`` when torch sees
no CUDA device), ``folder_paths`` with the folder's ``extra_model_paths.yaml``, the custom
nodes' prestartup scripts, then ``nodes.init_extra_nodes``' parts: the public APIs, every
``comfy_extras`` module and each pack in ``custom_nodes``. Our LoadTensor/SaveTensor (and the
audio pair) are registered before the packs, so a pack that brings its own (ComfyStream's
``tensor_utils``) cannot replace them; ComfyUI ignores a pack's node that shadows a base node.
The built-in engine's ``LiveAudio*`` nodes (plain V1 classes, names no ComfyUI node uses) are
registered the same way, so an audio prompt runs on either engine.
The paid API nodes (``comfy_api_nodes``) are not loaded: they call comfy.org's servers.

A pack that fails to import is recorded with its name and the missing module (ComfyUI itself
only logs it) and the server carries on. ComfyUI keeps its state in module globals, so one
process holds one ComfyUI: a second folder is refused.

Start-up runs on a short-lived thread with its own event loop (``init_extra_nodes`` is a
coroutine), so it works from a notebook cell whose thread already runs the kernel's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ComfyUIRuntime", "PackFailure", "start_comfyui"]

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_runtime: ComfyUIRuntime | None = None


@dataclass(frozen=True)
class PackFailure:
    """A custom node pack (or a comfy_extras module) that did not load."""

    name: str
    missing_module: str | None
    """The module its import could not find, when that was the reason."""
    error: str

    def __str__(self) -> str:
        if self.missing_module:
            return f"{self.name}: missing module {self.missing_module!r} ({self.error})"
        return f"{self.name}: {self.error}"


@dataclass
class ComfyUIRuntime:
    """The ComfyUI loaded in this process."""

    path: Path
    device: Any
    """``comfy.model_management.get_torch_device()``: where models and frames go."""
    version: str
    failed_packs: list[PackFailure] = field(default_factory=list)
    loaded_packs: list[str] = field(default_factory=list)
    seconds: float = 0.0


def check_folder(path: str | os.PathLike[str]) -> Path:
    """The ComfyUI folder as an absolute path, or ValueError saying what is missing."""
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise ValueError(f"ComfyUI folder {str(folder)!r} does not exist")
    missing = [
        name
        for name in ("nodes.py", "execution.py", "folder_paths.py", "comfy")
        if not (folder / name).exists()
    ]
    if missing:
        raise ValueError(
            f"{str(folder)!r} is not a ComfyUI folder (no {', '.join(missing)}); point at the "
            "folder that holds main.py, nodes.py, custom_nodes/ and models/"
        )
    return folder


def start_comfyui(path: str | os.PathLike[str]) -> ComfyUIRuntime:
    """Load ComfyUI from ``path`` into this process (once); returns what was loaded."""
    global _runtime
    folder = check_folder(path)
    with _lock:
        if _runtime is not None:
            if _runtime.path != folder:
                raise RuntimeError(
                    f"this process already runs the ComfyUI at {str(_runtime.path)!r}; ComfyUI "
                    f"keeps its state in globals, so {str(folder)!r} needs a new process "
                    "(restart the kernel)"
                )
            return _runtime
        box: list[Any] = []

        def run() -> None:
            try:
                box.append(asyncio.run(_start(folder)))
            except BaseException as exc:  # handed to the caller
                box.append(exc)

        thread = threading.Thread(target=run, name="comfywhip-comfyui-start", daemon=True)
        thread.start()
        thread.join()
        if isinstance(box[0], BaseException):
            raise RuntimeError(f"ComfyUI at {str(folder)!r} failed to start: {box[0]}") from box[0]
        _runtime = box[0]
        return _runtime


def current_runtime() -> ComfyUIRuntime | None:
    return _runtime


async def _start(folder: Path) -> ComfyUIRuntime:
    started = time.perf_counter()
    import torch

    # first on the path, even when inherited (a spawned child gets its parent's sys.path, where
    # ComfyUI's nodes.py put comfy/ first: its utils.py would shadow the utils package)
    while str(folder) in sys.path:
        sys.path.remove(str(folder))
    sys.path.insert(0, str(folder))
    import comfy.options  # noqa: F401  (args parsing stays off: our argv is not ComfyUI's)
    from comfy.cli_args import args

    if not torch.cuda.is_available():
        args.cpu = True  # what `main.py --cpu` does; model_management reads it on import
    _apply_paths(folder, args)
    failures = _prestartup(folder)

    import comfy.model_management as mm
    import execution  # noqa: F401  (imported now so a broken install fails at start-up)
    import hook_breaker_ac10a0
    import nodes

    from ..nodes import audio_live
    from .live_nodes import LIVE_DISPLAY_NAMES, LIVE_NODES

    live = {**LIVE_NODES, **audio_live.NODE_CLASS_MAPPINGS}
    names = {**LIVE_DISPLAY_NAMES, **audio_live.NODE_DISPLAY_NAME_MAPPINGS}
    for name, cls in live.items():
        nodes.NODE_CLASS_MAPPINGS[name] = cls
        cls.RELATIVE_PYTHON_MODULE = "comfywhip_nb"
        nodes.NODE_DISPLAY_NAME_MAPPINGS[name] = names[name]

    hook_breaker_ac10a0.save_functions()
    try:
        await nodes.init_public_apis()
        with _capturing() as capture:
            failed_extras = await nodes.init_builtin_extra_nodes()
        for module in failed_extras:
            mentions = [r for r in capture.records if module in r.getMessage()]
            failures.append(_failure_from_log(f"comfy_extras/{module}", mentions))
        loaded, pack_failures = await _load_custom_nodes(nodes, args)
        failures.extend(pack_failures)
    finally:
        hook_breaker_ac10a0.restore_functions()
    for failure in failures:
        logger.warning("WHIP: ComfyUI pack did not load: %s", failure)
    version = getattr(importlib.import_module("comfyui_version"), "__version__", "?")
    runtime = ComfyUIRuntime(
        path=folder,
        device=mm.get_torch_device(),
        version=version,
        failed_packs=failures,
        loaded_packs=loaded,
        seconds=time.perf_counter() - started,
    )
    logger.info(
        "WHIP: ComfyUI %s from %s on %s: %d nodes, %d packs loaded, %d failed (%.1f s)",
        version,
        folder,
        runtime.device,
        len(nodes.NODE_CLASS_MAPPINGS),
        len(loaded),
        len(failures),
        runtime.seconds,
    )
    return runtime


def _apply_paths(folder: Path, args: Any) -> None:
    """``main.apply_custom_paths`` for a library: the folder's extra_model_paths.yaml and
    the default save folders for checkpoints and friends."""
    import folder_paths
    import utils.extra_config

    extra = folder / "extra_model_paths.yaml"
    if extra.is_file():
        utils.extra_config.load_extra_path_config(str(extra))
    output = folder_paths.get_output_directory()
    for kind in ("checkpoints", "clip", "vae", "diffusion_models", "loras"):
        folder_paths.add_model_folder_path(kind, os.path.join(output, kind))


def _prestartup(folder: Path) -> list[PackFailure]:
    """Each pack's ``prestartup_script.py``, as main.py runs them; failures are recorded."""
    import importlib.util

    import folder_paths

    failures = []
    for root in folder_paths.get_folder_paths("custom_nodes"):
        if not os.path.isdir(root):
            continue
        for name in sorted(os.listdir(root)):
            script = os.path.join(root, name, "prestartup_script.py")
            if name.endswith(".disabled") or not os.path.isfile(script):
                continue
            try:
                spec = importlib.util.spec_from_file_location(f"{name}_prestartup", script)
                assert spec is not None and spec.loader is not None
                spec.loader.exec_module(importlib.util.module_from_spec(spec))
            except Exception as exc:
                failures.append(_failure(name, exc))
    return failures


class _Capture(logging.Handler):
    """Collects ComfyUI's log records while one pack loads: ComfyUI reports a failed import
    only through logging (the exception itself is swallowed in ``load_custom_node``)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _capturing() -> Iterator[_Capture]:
    capture = _Capture()
    root = logging.getLogger()
    root.addHandler(capture)
    try:
        yield capture
    finally:
        root.removeHandler(capture)


_MISSING = re.compile(r"No module named '([^']+)'")


async def _load_custom_nodes(nodes: Any, args: Any) -> tuple[list[str], list[PackFailure]]:
    """``nodes.init_external_custom_nodes``, pack by pack, keeping why a pack failed."""
    import folder_paths

    base = set(nodes.NODE_CLASS_MAPPINGS)  # a pack's node never replaces a base node
    loaded: list[str] = []
    failures: list[PackFailure] = []
    for root in folder_paths.get_folder_paths("custom_nodes"):
        if not os.path.isdir(root):
            continue
        for name in sorted(os.listdir(os.path.realpath(root))):
            path = os.path.join(root, name)
            if name == "__pycache__" or name.endswith(".disabled"):
                continue
            if os.path.isfile(path) and not name.endswith(".py"):
                continue
            if args.disable_all_custom_nodes and name not in args.whitelist_custom_nodes:
                continue
            with _capturing() as capture:
                try:
                    ok = await nodes.load_custom_node(path, base, module_parent="custom_nodes")
                except Exception as exc:  # load_custom_node catches most; never stop the server
                    ok = False
                    capture.records.append(
                        logging.LogRecord("comfyui", logging.WARNING, "", 0, str(exc), None, None)
                    )
            pack = name[:-3] if name.endswith(".py") else name
            if ok:
                loaded.append(pack)
            else:
                failures.append(_failure_from_log(pack, capture.records))
    return loaded, failures


def _failure(name: str, exc: BaseException) -> PackFailure:
    missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    return PackFailure(name, missing, f"{type(exc).__name__}: {exc}")


def _failure_from_log(name: str, records: list[logging.LogRecord]) -> PackFailure:
    messages = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    text = "\n".join(messages)
    found = _MISSING.findall(text)
    missing = found[-1] if found else None
    reason = next((m for m in reversed(messages) if "Cannot import" in m), None)
    if reason is None:
        reason = messages[-1] if messages else "did not load"
    reason = reason.split(" module for custom nodes: ", 1)[-1].strip()
    return PackFailure(name, missing, reason.splitlines()[-1] if reason else "did not load")
