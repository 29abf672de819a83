"""The ComfyUI engine on its own: start-up report, validation in ComfyUI's words, the stream-end
rules, lazy inputs, chains, audio, the node catalogue and ``get_nodes`` over /offer."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import torch
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from graphs import blend, reference_image
from helpers import async_wait_until
from PIL import Image

from comfywhip_nb.client.sources import TestPatternTrack
from comfywhip_nb.prompts import PromptError
from comfywhip_nb.server import WhipServer

pytestmark = pytest.mark.timeout(240)
GREY = torch.full((1, 16, 24, 3), 0.25)
INV = np.array([55, 215, 215])


def test_start_up_reports_a_broken_pack_by_name_and_module(comfy_engine: Any) -> None:
    runtime = comfy_engine.runtime
    broken = {f.name: f for f in runtime.failed_packs}["whiptest_broken"]
    assert broken.missing_module == "whiptest_missing_dependency"
    assert "whiptest_missing_dependency" in str(broken)
    assert {"whiptest_nodes", "whiptest_v3ext"} <= set(runtime.loaded_packs)
    assert runtime.version == "0.3.75" and str(runtime.device) == str(comfy_engine.device)


def test_a_second_comfyui_folder_in_the_same_process_is_refused(
    comfy_engine: Any, tmp_path: Path
) -> None:
    from comfywhip_nb.prompts.engines import make_engine

    with pytest.raises(ValueError, match="not a ComfyUI folder"):
        make_engine(tmp_path)
    other = tmp_path / "other"
    for name in ("nodes.py", "execution.py", "folder_paths.py", "comfy"):
        (other / name).mkdir(parents=True)
    with pytest.raises(RuntimeError, match="already runs the ComfyUI"):
        make_engine(other)


def test_validation_errors_use_comfyui_wording(comfy_engine: Any) -> None:
    cases = [
        ({"1": {"class_type": "NoSuchNode", "inputs": {}}}, ("1", "NoSuchNode"), "does not exist"),
        (
            {
                "1": {"class_type": "LoadTensor", "inputs": {}},
                "2": {"class_type": "ImageInvert", "inputs": {}},
                "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
            },
            ("2", "ImageInvert"),
            "Required input is missing: image",
        ),
        (
            {
                "1": {"class_type": "LoadTensor", "inputs": {}},
                "2": {
                    "class_type": "ImageScale",  # a V1 combo (0.3.75 leaves V3 combos be)
                    "inputs": {
                        "image": ["1", 0],
                        "upscale_method": "sparkle",
                        "width": 32,
                        "height": 32,
                        "crop": "disabled",
                    },
                },
                "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
            },
            ("2", "ImageScale"),
            "Value not in list: upscale_method: 'sparkle' not in",
        ),
        ({"1": {"class_type": "LoadTensor", "inputs": {}}}, (None, None), "Prompt has no outputs"),
        ({"nodes": [], "links": []}, (None, None), "UI-format workflow"),
    ]
    for prompt, (node_id, class_type), wording in cases:
        with pytest.raises(PromptError) as caught:
            comfy_engine.load(prompt)
        error = caught.value.errors[0]
        assert (error.node_id, error.class_type) == (node_id, class_type), caught.value
        assert wording in error.message, error.message


def test_only_a_lone_load_image_becomes_the_live_frame(comfy_engine: Any, comfy_copy: Path) -> None:
    import folder_paths  # ComfyUI's (loaded by comfy_engine); another test may have moved input/

    inputs = Path(folder_paths.get_input_directory())
    Image.new("RGB", (24, 16), (0, 0, 255)).save(inputs / "whiptest_ref.png")
    lone = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "whiptest_ref.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    prompt = comfy_engine.load(lone)
    assert prompt.graphs[0]["1"]["class_type"] == "LoadTensor"
    assert prompt.graphs[0]["2"]["class_type"] == "SaveTensor"  # nothing written per frame
    assert torch.allclose(prompt.run(GREY).cpu(), GREY)

    # a primary input is the frame; the other LoadImage is a reference image from input/
    with_reference = blend(
        {"class_type": "PrimaryInputLoadImage", "inputs": {"image": "whatever.png"}},
        {"class_type": "LoadImage", "inputs": {"image": "whiptest_ref.png"}},
    )
    out = comfy_engine.load(with_reference).run(GREY).cpu()
    assert torch.allclose(out[0, 0, 0], torch.tensor([0.0, 0.0, 1.0]))  # the blue file

    # LoadTensor already there: the lone LoadImage stays a file (ComfyStream refuses this)
    beside_tensor = reference_image("LoadTensor", "whiptest_ref.png", output="SaveTensor")
    out = comfy_engine.load(beside_tensor).run(GREY).cpu()
    assert torch.allclose(out[0, 0, 0], torch.tensor([0.0, 0.0, 1.0]))

    two = {**with_reference, "1": {"class_type": "LoadImage", "inputs": {"image": "nope.png"}}}
    with pytest.raises(PromptError, match=r"nope\.png"):  # two LoadImage: both are files
        comfy_engine.load(two)


def test_lazy_inputs_evaluate_only_the_chosen_branch(comfy_engine: Any) -> None:
    prompt = {
        "1": {"class_type": "LoadTensor", "inputs": {}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "WhipTestBoom", "inputs": {"image": ["1", 0]}},
        "4": {
            "class_type": "WhipTestLazySwitch",
            "inputs": {"use_a": True, "a": ["2", 0], "b": ["3", 0]},
        },
        "5": {"class_type": "SaveTensor", "inputs": {"images": ["4", 0]}},
    }
    built = comfy_engine.load(prompt)
    for _ in range(3):
        assert torch.allclose(built.run(GREY).cpu(), 1 - GREY)
    assert "3:WhipTestBoom" not in built.node_runs()
    prompt["4"]["inputs"]["use_a"] = False
    with pytest.raises(RuntimeError, match="whiptest boom") as caught:
        comfy_engine.load(prompt).run(GREY)
    assert (caught.value.node_id, caught.value.class_type) == ("3", "WhipTestBoom")


def test_chain_and_timings_and_audio(comfy_engine: Any) -> None:
    invert = {
        "1": {"class_type": "LoadTensor", "inputs": {}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
    }
    tint = {
        "1": {"class_type": "LoadTensor", "inputs": {}},
        "2": {
            "class_type": "WhipTestTint",
            "inputs": {"image": ["1", 0], "r": 1.0, "g": 0.0, "b": 1.0},
        },
        "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
    }
    chain = comfy_engine.load(json.dumps([invert, tint]))
    out, timings = chain.run_timed(GREY)
    assert torch.allclose(out.cpu()[..., 1], torch.zeros(1, 16, 24))
    assert torch.allclose(out.cpu()[..., 0], torch.full((1, 16, 24), 0.75))
    assert {"prompt[0]/2:ImageInvert", "prompt[1]/2:WhipTestTint"} <= set(timings)

    audio = comfy_engine.load(
        {
            "1": {"class_type": "LoadAudioTensor", "inputs": {"buffer_size": 500.0}},
            "2": {"class_type": "SaveAudioTensor", "inputs": {"audio": ["1", 0]}},
        }
    )
    chunk = {"waveform": torch.rand(1, 2, 480), "sample_rate": 48000}
    back = audio.run_audio(chunk)
    assert back["sample_rate"] == 48000 and torch.equal(back["waveform"], chunk["waveform"])


def test_catalogue_lists_v1_v3_and_live_nodes(comfy_engine: Any) -> None:
    catalogue = comfy_engine.catalogue()
    load = catalogue["LoadTensor"]
    assert load["category"] == "ComfyStream/Loaders"
    assert load["input"]["optional"]["timeout_seconds"][1]["default"] == 3.0
    assert catalogue["SaveTensor"]["output_node"] is True
    assert catalogue["LoadAudioTensor"]["input"]["required"]["buffer_size"][0] == "FLOAT"
    assert catalogue["ImageBlur"]["input"]["required"]["blur_radius"][1]["max"] == 31  # V3
    assert catalogue["WhipTestMirror"]["display_name"] == "Whip Test Mirror"
    assert "whiptest_broken" not in json.dumps(catalogue)


async def test_offer_control_channel_get_nodes_lists_comfyui_nodes(
    comfy_engine: Any, comfy_copy: Path
) -> None:
    server = WhipServer(port=0, comfyui=comfy_copy, frame_timeout=20.0).start()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver(TestPatternTrack(64, 48, fps=20, solid_color=(200, 40, 40)), "sendrecv")
        channel = pc.createDataChannel("control")
        replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        channel.on("message", lambda m: replies.put_nowait(json.loads(m)))
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"sdp": pc.localDescription.sdp, "type": "offer"}
        async with aiohttp.ClientSession() as http:
            invert = {
                "1": {"class_type": "LoadTensor", "inputs": {}},
                "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
                "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
            }
            body = {"offer": offer, "prompts": [invert]}
            async with http.post(f"{server.url}/offer", json=body) as resp:
                assert resp.status == 200, await resp.text()
                answer = await resp.json()
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        await async_wait_until(lambda: channel.readyState == "open", 30)
        channel.send(json.dumps({"type": "get_nodes"}))
        reply = await asyncio.wait_for(replies.get(), 60)
        assert reply["type"] == "nodes_info" and reply["success"] is True
        nodes = reply["nodes"]
        assert nodes["LoadTensor"]["inputs"]["timeout_seconds"]["default"] == 3.0
        assert nodes["ImageBlur"]["inputs"]["blur_radius"]["max"] == 31
        assert nodes["WhipTestGain"]["inputs"]["image"]["type"] == "IMAGE"

        def inverted() -> bool:
            frame = server.latest_frame(kind="ndarray")
            return frame is not None and np.abs(frame.reshape(-1, 3).mean(0) - INV).max() < 25

        await async_wait_until(inverted, 60)
    finally:
        await pc.close()
        server.stop()


def test_cli_serve_with_comfyui_reports_packs(comfy_copy: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "comfywhip_nb",
            "serve",
            "--port",
            "0",
            "--duration",
            "0.2",
            "--comfyui",
            str(comfy_copy),
        ],
        capture_output=True,
        text=True,
        timeout=200,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"ComfyUI 0.3.75 from {comfy_copy.resolve()}" in result.stdout
    assert (
        "custom node pack did not load: whiptest_broken: missing module "
        "'whiptest_missing_dependency'" in result.stdout
    )


def test_bench_g_runs_both_engines_and_reports_overhead(comfy_copy: Path, tmp_path: Path) -> None:
    from comfywhip_nb.bench import main

    out = tmp_path / "bench"
    argv = ["--scenarios", "g", "--comfyui", str(comfy_copy), "--quick", "--codec", "VP8"]
    argv += ["--size", "96x64", "--duration", "0.6", "--warmup", "0.3", "--reps", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    run = json.loads((out / "bench.json").read_text())
    names = [c["name"] for c in run["configs"]]
    assert names == ["g 64p30 invert VP8", "g 64p30 blur VP8"]
    for config in run["configs"]:
        overhead = config["extra"]["overhead"]
        assert overhead["engine_ms"] > 0 and "overhead_ms" in overhead
        assert {leg["spec"]["stack"] for leg in config["legs"]} == {"project", "comfyui"}
    rows = {(r["target"], r["config"]) for r in run["targets"]}
    assert ("(g) ComfyUI executor ms/frame", "g 64p30 blur VP8") in rows


def test_comfystream_tensor_utils_workflow_shape(comfy_engine: Any) -> None:
    # ComfyStream's tensor-utils example: SaveTensor first, LoadTensor with a stray "image"
    passthrough = {
        "1": {"inputs": {"images": ["2", 0]}, "class_type": "SaveTensor"},
        "2": {"inputs": {"image": "None"}, "class_type": "LoadTensor"},
    }
    assert torch.equal(comfy_engine.load(passthrough).run(GREY).cpu(), GREY)
    # the README's example: the same ends with ComfyUI nodes between them
    readme = {
        "1": {"inputs": {"images": ["4", 0]}, "class_type": "SaveTensor"},
        "2": {"inputs": {"image": "None"}, "class_type": "LoadTensor"},
        "3": {
            "inputs": {"image": ["2", 0], "blur_radius": 4, "sigma": 2.0},
            "class_type": "ImageBlur",
        },
        "4": {"inputs": {"image": ["3", 0]}, "class_type": "ImageInvert"},
    }
    out = comfy_engine.load(readme).run(GREY).cpu()
    assert torch.allclose(out, 1 - GREY, atol=1e-5)


def test_prompt_editor_lists_comfyui_nodes(comfy_engine: Any, comfy_copy: Path) -> None:
    from comfywhip_nb.widgets.prompt_editor import PromptEditor

    editor = PromptEditor(WhipServer(port=0, comfyui=comfy_copy), autostart=False)
    try:
        assert {"WhipTestGain", "UpscaleModelLoader", "LoadTensor"} <= set(editor.nodes.options)
        editor.nodes.value = "ImageBlur"
        assert "blur_radius <i>INT</i>" in editor.node_info.value
    finally:
        editor.close()


def test_warmup_refuses_a_prompt_whose_node_raises(comfy_engine: Any, comfy_copy: Path) -> None:
    server = WhipServer(port=0, comfyui=comfy_copy, warmup=True)
    boom = {
        "1": {"class_type": "LoadTensor", "inputs": {}},
        "2": {"class_type": "WhipTestBoom", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
    }
    with pytest.raises(PromptError, match="warm-up") as caught:
        server.set_prompts(boom)
    error = caught.value.errors[0]
    assert (error.node_id, error.class_type) == ("2", "WhipTestBoom")
    assert "whiptest boom" in error.message
