"""The CLI and the example run for real: demo, serve + publish, the client example."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from comfywhip_nb.server import WhipServer

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK_ICE = (
    "import aioice.ice, runpy, sys; "
    "aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ['127.0.0.1']; "
)


def run_module(args: list[str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run ``python -m comfywhip_nb ARGS`` with ICE restricted to loopback."""
    code = (
        LOOPBACK_ICE
        + "sys.argv = ['comfywhip', *sys.argv[1:]]; "
        + ("runpy.run_module('comfywhip_nb', run_name='__main__')")
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_demo_writes_pngs_stats_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run_module(["demo", "--duration", "3", "--out", str(out)])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "processed" in result.stdout and "hot-swap" in result.stdout
    assert "440 Hz tone" in result.stdout and "audio prompt ran: yes" in result.stdout
    stats = json.loads((out / "stats.json").read_text())
    summary = stats["summary"]
    assert summary["frames_processed"] > 20
    assert len(summary["prompt_versions"]) == 2  # the hot-swap happened
    assert summary["last_error"] is None
    # the tone went through the audio graphs: 40 ms buffers, -6 dB after the hot-swap
    audio = summary["audio"]
    assert audio["prompt_ran"] and audio["buffer_ms"] == 40 and audio["sample_rate"] == 48000
    assert audio["frames_out"] > 50 and audio["frames_in"] >= audio["frames_out"] - 5
    assert audio["level_in_db"] > -40 and abs(audio["level_out_db"] - audio["level_in_db"] + 6) < 2
    assert 0 < audio["latency_ms"] <= audio["latency_p95_ms"]
    line = next(x for x in result.stdout.splitlines() if x.startswith("audio ("))
    assert "ms buffer" in line and "p95" in line and "dBFS in" in line
    pngs = sorted(out.glob("frame_*.png"))
    assert any("before" in p.name for p in pngs) and any("after" in p.name for p in pngs)
    assert (out / "fps.png").stat().st_size > 10_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


CUSTOM_NODES = """
import torch


class HalfBright:
    CATEGORY = "test"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "factor": ("FLOAT", {"default": 0.5})}}

    def apply(self, image, factor):
        return (image * factor,)


NODE_CLASS_MAPPINGS = {"HalfBright": HalfBright}
"""


def _stats(port: int) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/whip-stats", timeout=5) as resp:
        return json.loads(resp.read())


def test_serve_with_custom_nodes_and_publish(tmp_path: Path) -> None:
    port = _free_port()
    nodes = tmp_path / "my_nodes.py"
    nodes.write_text(CUSTOM_NODES)
    serve = subprocess.Popen(
        [
            sys.executable,
            "-c",
            LOOPBACK_ICE + "sys.argv = ['comfywhip', *sys.argv[1:]]; "
            "runpy.run_module('comfywhip_nb', run_name='__main__')",
            "serve",
            "--port",
            str(port),
            "--duration",
            "60",
            "--nodes",
            str(nodes),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.2)
        prompt = tmp_path / "custom.json"
        prompt.write_text(
            json.dumps(
                {
                    "1": {"class_type": "LoadTensor", "inputs": {}},
                    "2": {
                        "class_type": "HalfBright",
                        "inputs": {"image": ["1", 0], "factor": 0.25},
                    },
                    "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
                }
            )
        )
        url = f"http://127.0.0.1:{port}/whip"
        publish = subprocess.Popen(
            [
                sys.executable,
                "-c",
                LOOPBACK_ICE + "sys.argv = ['comfywhip', *sys.argv[1:]]; "
                "runpy.run_module('comfywhip_nb', run_name='__main__')",
                "publish",
                url,
                "--duration",
                "4",
                "--prompts",
                str(prompt),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        seen: dict = {}
        while time.monotonic() < deadline and not seen:
            seen = {k: v for k, v in _stats(port).items() if v["frames_processed"] > 5}
            time.sleep(0.2)
        assert seen, "no frames processed through the custom node"
        info = next(iter(seen.values()))
        assert info["last_error"] is None and info["prompt_source"] == "session"
        assert "2:HalfBright" in info["node_ms"]
        out, err = publish.communicate(timeout=30)
        assert publish.returncode == 0, err[-2000:]
        assert "connected" in out
        bad = run_module(["publish", f"http://127.0.0.1:{port}/nope", "--duration", "1"])
        assert bad.returncode == 1 and "404" in bad.stderr
    finally:
        serve.terminate()
        out, err = serve.communicate(timeout=30)
    assert serve.returncode == 0, err[-2000:]
    assert "loaded 1 custom node(s)" in out
    assert "WHIP: " in err and "ended (delete)" in err
    assert "comfywhip: stopped" in out


def test_serve_reports_taken_port() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = run_module(["serve", "--port", str(port), "--duration", "1"])
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr and "already in use" in result.stderr


@pytest.mark.parametrize("trickle", [False, True])
def test_client_example_exits_zero(trickle: bool) -> None:
    with WhipServer(port=0) as srv:
        args = [
            str(ROOT / "examples" / "whip_client_example.py"),
            srv.whip_url,
            "--duration",
            "2",
            *(["--trickle"] if trickle else []),
        ]
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                LOOPBACK_ICE + "sys.argv = sys.argv[1:]; "
                "runpy.run_path(sys.argv[0], run_name='__main__')",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ},
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert len(srv.sessions) == 0  # it DELETEd its session on exit
