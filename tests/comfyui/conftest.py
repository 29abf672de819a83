"""A real ComfyUI for these tests: a copy of the test-time tree (scripts/get-comfyui.sh), with
test packs in its custom_nodes/ and a tiny upscale model in its models/.

The shared tree in the cache is never written to: every test process works on its own copy.
ComfyUI lives in module globals, so one process loads one copy once (session fixture) and
every server of the session points at it.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aioice.ice
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/helpers.py

from packs import write_packs, write_tiny_upscaler

VERSION = "0.3.75"


def _tree() -> Path | None:
    explicit = os.environ.get("COMFYWHIP_COMFYUI_TREE")  # not COMFYUI_PATH: set to the copy
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("COMFYWHIP_CACHE", Path.home() / ".cache" / "comfywhip"))
    return cache / f"ComfyUI-{VERSION}"


def _missing() -> str | None:
    tree = _tree()
    if tree is None or not (tree / "nodes.py").is_file():
        return f"no ComfyUI tree at {tree} (run scripts/get-comfyui.sh)"
    for module in ("torchvision", "spandrel", "safetensors", "einops", "comfywhip_nb"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed here: run these tests with .venv-comfyui/bin/pytest"
    return None


@pytest.fixture(autouse=True, scope="session")
def loopback_only_ice() -> Iterator[None]:
    original = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"]
    yield
    aioice.ice.get_host_addresses = original


@pytest.fixture(autouse=True)
def _log_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="comfywhip_nb")


_state: dict[str, object] = {}


def pytest_configure(config: pytest.Config) -> None:
    """Copy the tree once per test process, before any test imports ComfyUI, and point
    ``COMFYUI_PATH`` at the copy: the parity tests (``parity_support``) read it too, so every
    test of the process shares one ComfyUI, and nothing writes to the cached tree."""
    reason = _missing()
    if reason:
        _state["skip"] = reason
        return
    root = Path(tempfile.mkdtemp(prefix="comfywhip-comfyui-"))
    copy = root / "ComfyUI"
    shutil.copytree(
        _tree(), copy, symlinks=True, ignore=shutil.ignore_patterns("output", "temp", "user")
    )
    write_packs(copy / "custom_nodes", root / "counters")
    write_tiny_upscaler(copy / "models")
    _state.update(root=root, copy=copy, env=os.environ.get("COMFYUI_PATH"))
    os.environ["COMFYUI_PATH"] = str(copy)


def pytest_unconfigure(config: pytest.Config) -> None:
    root = _state.pop("root", None)
    if "env" in _state:
        previous = _state.pop("env")
        if previous is None:
            os.environ.pop("COMFYUI_PATH", None)
        else:
            os.environ["COMFYUI_PATH"] = str(previous)
    if isinstance(root, Path):
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def comfy_copy() -> Path:
    """The private copy of the ComfyUI tree, with the test packs and the tiny model."""
    if "skip" in _state:
        pytest.skip(str(_state["skip"]))
    copy = _state["copy"]
    assert isinstance(copy, Path)
    return copy


@pytest.fixture(scope="session")
def comfy_engine(comfy_copy: Path):
    """ComfyUI started once for the session (what every server of the session uses)."""
    from comfywhip_nb.prompts.engines import make_engine

    return make_engine(comfy_copy)


@pytest.fixture
def counters(comfy_copy: Path) -> Path:
    folder = comfy_copy.parent / "counters"
    for file in folder.glob("*"):
        file.unlink()
    return folder
