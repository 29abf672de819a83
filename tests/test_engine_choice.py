"""Choosing the prompt engine: the built-in one imports nothing of ComfyUI; a bad ComfyUI path
fails in the constructor with a clear error; control replies fit the peer's message size.
(The ComfyUI engine itself is tested in tests/comfyui, under .venv-comfyui.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from comfywhip_nb.comfystream.control import fit_reply
from comfywhip_nb.prompts.engines import BUILTIN, make_engine
from comfywhip_nb.server import WhipServer

COMFYUI_MODULES = (
    "comfy",
    "comfy_api",
    "comfy_execution",
    "comfy_extras",
    "nodes",
    "execution",
    "folder_paths",
    "comfyui_version",
    "node_helpers",
    "comfywhip_nb.prompts.comfyui",
)

RUN_A_SERVER = """
import asyncio, json, sys
import aioice.ice
aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"]
from comfywhip_nb import WhipServer
from comfywhip_nb.client import WHIPClient
from comfywhip_nb.client.sources import TestPatternTrack

INVERT = {"1": {"class_type": "LoadTensor", "inputs": {}},
          "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
          "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}}}

async def publish(server):
    async with WHIPClient(server.whip_url) as client:
        await client.publish(TestPatternTrack(64, 48, fps=30))
        await client.wait_connected(timeout=20)
        for _ in range(400):
            if sum(i.frames_processed for i in server.sessions.values()) >= 5:
                return True
            await asyncio.sleep(0.05)
    return False

server = WhipServer(port=0, prompts=INVERT).start()
try:
    ok = asyncio.run(publish(server))
    nodes = server.engine.catalogue()
finally:
    server.stop()
print(json.dumps({"ok": ok, "engine": server.engine.name, "nodes": len(nodes),
                  "modules": sorted(m for m in sys.modules
                                    if m.split(".")[0] in MODULES or m in MODULES)}))
"""


def test_a_normal_server_run_imports_nothing_of_comfyui(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    script = f"MODULES = {COMFYUI_MODULES!r}\n" + RUN_A_SERVER
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ok"] and report["engine"] == "builtin" and report["nodes"] > 10
    assert report["modules"] == []


def test_bad_comfyui_paths_fail_in_the_constructor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert make_engine(None) is BUILTIN and make_engine("") is BUILTIN
    with pytest.raises(ValueError, match="does not exist"):
        WhipServer(port=0, comfyui=tmp_path / "nowhere")
    (tmp_path / "main.py").write_text("")
    with pytest.raises(ValueError, match=r"not a ComfyUI folder \(no nodes\.py"):
        WhipServer(port=0, comfyui=tmp_path)
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="does not exist"):
        WhipServer(port=0)
    assert not any(name in sys.modules for name in ("comfy", "nodes", "execution"))


def test_control_replies_fit_the_peer_message_size() -> None:
    nodes = {
        f"Node{i}": {
            "description": "d" * 200,
            "inputs": {"x": {"type": "FLOAT", "required": True, "tooltip": "t" * 200}},
        }
        for i in range(100)
    }
    reply = {"type": "nodes_info", "id": 3, "success": True, "nodes": nodes}
    full = fit_reply(reply, 0)
    assert json.loads(full) == reply
    slim = json.loads(fit_reply(reply, len(full) // 2))
    assert slim["nodes"]["Node7"] == {
        "description": "",
        "inputs": {"x": {"type": "FLOAT", "required": True}},
    }
    refused = json.loads(fit_reply(reply, 1000))
    assert refused["type"] == "nodes_info" and refused["id"] == 3
    assert refused["success"] is False and "exceeds the peer's" in refused["error"]


def test_prompt_editor_lists_the_engines_nodes() -> None:
    from comfywhip_nb.widgets.prompt_editor import PromptEditor

    server = WhipServer(port=0)
    editor = PromptEditor(server, autostart=False)
    try:
        assert "ImageInvert" in editor.nodes.options and "LoadTensor" in editor.nodes.options
        editor.nodes.value = "ImageInvert"
        assert "<b>ImageInvert</b>" in editor.node_info.value
        assert "image <i>IMAGE</i>" in editor.node_info.value
    finally:
        editor.close()
