"""Optional warm-up: a prompt that fails on its first run is refused before it goes live."""

from __future__ import annotations

import aiohttp
import pytest

from comfywhip_nb.prompts import PromptError, register_nodes
from comfywhip_nb.prompts.warmup import warm_up
from comfywhip_nb.server import WhipServer


class FailsAtRunTime:
    """Valid to the validator, broken when it runs (as a missing model file would be)."""

    CATEGORY = "test"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    def run(self, image):
        raise FileNotFoundError("model weights missing")


register_nodes({"TestFailsAtRunTime": FailsAtRunTime})

BROKEN = {
    "1": {"class_type": "LoadTensor", "inputs": {}},
    "2": {"class_type": "TestFailsAtRunTime", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
}
INVERT = {
    "1": {"class_type": "LoadTensor", "inputs": {}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
}


def test_warm_up_runs_once_and_names_a_failing_node() -> None:
    from comfywhip_nb.prompts import load_prompt

    assert warm_up(load_prompt(INVERT)) >= 0
    with pytest.raises(PromptError) as info:
        warm_up(load_prompt(BROKEN))
    error = info.value.errors[0]
    assert (error.node_id, error.class_type) == ("2", "TestFailsAtRunTime")
    assert "model weights missing" in str(info.value)


async def test_server_with_warmup_refuses_broken_prompts_everywhere() -> None:
    with WhipServer(port=0, warmup=True) as srv:
        version = srv.set_prompts(INVERT)
        with pytest.raises(PromptError, match="warm-up"):
            srv.set_prompts(BROKEN)
        async with aiohttp.ClientSession() as http:
            resp = await http.post(f"{srv.url}/prompts", json=BROKEN)
            assert resp.status == 400
            body = await resp.json()
            assert body["node_errors"][0]["node_id"] == "2"
            current = await (await http.get(f"{srv.url}/prompts")).json()
            assert current["version"] == version  # nothing changed
    # without warm-up the same prompt is accepted (and would fail per frame, reported)
    with WhipServer(port=0) as srv:
        srv.set_prompts(BROKEN)
