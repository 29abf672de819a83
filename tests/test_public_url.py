"""``--public-url``: Location, WHEP and event links and the page name the address clients use
(behind nginx, RFC 9725 §4.5), and ``comfywhip prompts push`` sets a prompt on several servers."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from helpers import make_offer
from multidict import CIMultiDictProxy

from comfywhip_nb.server import WhipServer

PUBLIC = "https://front.example/i/2"


@pytest.fixture
def public_server() -> Iterator[WhipServer]:
    srv = WhipServer(port=0, public_url=PUBLIC + "/")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


async def _post_offer(url: str, direction: str = "sendonly") -> tuple[int, CIMultiDictProxy[str]]:
    pc, sdp = await make_offer(direction=direction)
    try:
        async with aiohttp.ClientSession() as http:
            headers = {"Content-Type": "application/sdp"}
            async with http.post(url, data=sdp, headers=headers) as r:
                await r.read()
                return r.status, r.headers
    finally:
        await pc.close()


async def _delete(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.delete(url) as r:
        return r.status


def test_location_and_event_link_use_public_url(public_server: WhipServer) -> None:
    status, headers = asyncio.run(_post_offer(public_server.whip_url))
    assert status == 201
    location = headers["Location"]
    session_id = location.rsplit("/", 1)[-1]
    assert location == f"{PUBLIC}/whip/{session_id}"
    events = [v for v in headers.getall("Link") if "server-sent-events" in v]
    assert events and events[0].startswith(f"<{PUBLIC}/whip/{session_id}/events>")
    # the resource still answers on the instance's own address (the proxy strips the prefix)
    assert asyncio.run(_delete(f"{public_server.whip_url}/{session_id}")) == 200


def test_whep_location_uses_public_url(public_server: WhipServer) -> None:
    status, headers = asyncio.run(_post_offer(public_server.url + "/whep/default", "recvonly"))
    assert status == 201
    assert headers["Location"].startswith(f"{PUBLIC}/whep/default/")


def test_page_talks_to_public_url(public_server: WhipServer) -> None:
    with urllib.request.urlopen(public_server.url + "/", timeout=30) as resp:
        text = resp.read().decode()
    assert f'<meta name="comfywhip-server" content="{PUBLIC}">' in text


def test_without_public_url_location_is_request_origin(server: WhipServer) -> None:
    status, headers = asyncio.run(_post_offer(server.whip_url))
    assert status == 201
    assert headers["Location"].startswith(server.whip_url + "/")
    with urllib.request.urlopen(server.url + "/", timeout=30) as resp:
        assert b"comfywhip-server" not in resp.read()


@pytest.mark.parametrize("bad", ["ftp://x/", "not a url", "http://h/p?q=1"])
def test_bad_public_url_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="public URL"):
        WhipServer(port=0, public_url=bad)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _push(*args: str) -> subprocess.CompletedProcess[str]:
    cli = [sys.executable, "-m", "comfywhip_nb", "prompts", "push"]
    return subprocess.run([*cli, *args], capture_output=True, text=True, timeout=60)


def test_prompts_push_sets_every_instance_and_reports_failures(tmp_path: Path) -> None:
    graph = {
        "1": {"class_type": "LoadTensor", "inputs": {}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
    }
    good = tmp_path / "invert.json"
    good.write_text(json.dumps(graph))
    servers = [WhipServer(port=0, token="t0k") for _ in range(2)]
    for s in servers:
        s.start()
    try:
        urls = [s.url for s in servers]
        ok = _push(*urls, str(good), "--token", "t0k")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert ok.stdout.count(": 200 prompt version") == 2, ok.stdout
        for s in servers:
            request = urllib.request.Request(
                s.url + "/prompts", headers={"Authorization": "Bearer t0k"}
            )
            with urllib.request.urlopen(request, timeout=30) as resp:
                assert "ImageInvert" in resp.read().decode()

        dead = f"http://127.0.0.1:{_free_port()}"
        partial = _push(urls[0], dead, str(good))  # no token: 401 from the live one
        assert partial.returncode == 1
        lines = partial.stdout.splitlines()
        assert any(line.startswith(urls[0] + "/prompts: 401") for line in lines), partial.stdout
        assert any(line.startswith(dead + "/prompts: no answer") for line in lines), lines
        assert "on 0 of 2 instances" in partial.stdout

        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"1": {"class_type": "NoSuchNode", "inputs": {}}}))
        refused = _push(urls[0], str(bad))
        assert refused.returncode == 1 and "NoSuchNode" in refused.stderr
    finally:
        for s in servers:
            s.stop()
