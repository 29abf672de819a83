"""Reference images in prompts that arrive over HTTP: read from the server's ``prompts_dir``.

A ``LoadImage`` that is not the live frame loads its file, and over HTTP (``POST /prompts``,
``?prompts=``, ``/offer``, the control channel) the only folder it may read is the one the
server was started with; without one the prompt is refused with a 400 naming the node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from graphs import reference_image
from PIL import Image

from comfywhip_nb.server import WhipServer


async def post_prompts(server: WhipServer, graph: dict[str, Any]) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{server.url}/prompts", json=graph)
        return resp.status, await resp.json()


async def test_reference_image_loads_from_the_servers_prompts_dir(tmp_path: Path) -> None:
    Image.new("RGB", (6, 4), (0, 255, 0)).save(tmp_path / "ref.png")
    with WhipServer(port=0, prompts_dir=tmp_path) as server:
        status, body = await post_prompts(server, reference_image())
        assert status == 200, body
        assert body["ok"] is True


async def test_reference_image_without_a_prompts_dir_is_a_400_naming_the_node() -> None:
    with WhipServer(port=0) as server:
        status, body = await post_prompts(server, reference_image())
        assert status == 400
        assert "no folder is allowed for files" in body["detail"]
        assert [(e["node_id"], e["class_type"]) for e in body["node_errors"]] == [
            ("2", "LoadImage")
        ]


async def test_reference_image_outside_the_prompts_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "inside").mkdir()
    Image.new("RGB", (6, 4)).save(tmp_path / "ref.png")
    graph = reference_image()
    graph["2"]["inputs"]["image"] = "../ref.png"
    with WhipServer(port=0, prompts_dir=tmp_path / "inside") as server:
        status, body = await post_prompts(server, graph)
        assert status == 400
        assert "outside the allowed folder" in body["detail"]
