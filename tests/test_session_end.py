"""Why sessions end, said once: log, stats, SSE; a DELETE racing the peer's close gets 200.

Real aiortc publishers over loopback against a real server; the ``WHIP:`` log lines are the
ones a user reads.
"""

from __future__ import annotations

import asyncio
import logging
import re

import aiohttp
import pytest
from aiortc import RTCSessionDescription
from helpers import async_wait_until, make_offer

from comfywhip_nb.rtc.ice import IceServer
from comfywhip_nb.server import WhipServer

SDP = {"Content-Type": "application/sdp"}


def _ended_lines(caplog: pytest.LogCaptureFixture, session_id: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.INFO and f"WHIP: {session_id[:8]} ended (" in r.getMessage()
    ]


async def _publish(http: aiohttp.ClientSession, server: WhipServer):
    pc, sdp = await make_offer(video=1, audio=1)
    async with http.post(server.whip_url, data=sdp, headers=SDP) as resp:
        assert resp.status == 201, await resp.text()
        location = resp.headers["Location"]
        await pc.setRemoteDescription(RTCSessionDescription(await resp.text(), "answer"))
    session_id = location.rsplit("/", 1)[1]
    await async_wait_until(
        lambda: (i := server.sessions.get(session_id)) and i.frames_processed > 0, timeout=15
    )
    return pc, location, session_id


async def test_peer_closes_first_then_delete_still_gets_200(
    server: WhipServer, caplog: pytest.LogCaptureFixture
) -> None:
    """medooze whip-whep, binbat's client and OBS close the peer connection a few ms before
    their DELETE; the session is already gone by then."""
    async with aiohttp.ClientSession() as http:
        pc, location, session_id = await _publish(http, server)
        await pc.close()  # DTLS close_notify
        await async_wait_until(lambda: session_id not in server.sessions, timeout=10)
        async with http.delete(location) as resp:
            assert resp.status == 200
        async with http.delete(location) as resp:  # still remembered
            assert resp.status == 200
        async with http.delete(location + "x") as resp:  # never existed
            assert resp.status == 404
        headers = {"Content-Type": "application/trickle-ice-sdpfrag"}
        async with http.patch(location, data="a=end-of-candidates\r\n", headers=headers) as resp:
            assert resp.status == 404  # only DELETE is answered for an ended session
    lines = _ended_lines(caplog, session_id)
    assert len(lines) == 1, lines
    assert "ended (closed_by_peer)" in lines[0]


async def test_delete_is_the_reason_in_the_log_and_the_last_sse_event(
    server: WhipServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with aiohttp.ClientSession() as http:
        pc, location, session_id = await _publish(http, server)
        try:
            async with http.get(f"{location}/events") as stream:
                async with http.delete(location) as resp:
                    assert resp.status == 200
                body = (await asyncio.wait_for(stream.text(), 10)).strip()
        finally:
            await pc.close()
    last = body.split("\n\n")[-1]
    assert "event: state" in last
    assert '"state": "closed"' in last and '"end_reason": "delete"' in last, last
    assert ["ended (delete)" in line for line in _ended_lines(caplog, session_id)] == [True]


async def test_media_timeout_is_named(caplog: pytest.LogCaptureFixture) -> None:
    with WhipServer(port=0, media_timeout=1.0) as server:
        async with aiohttp.ClientSession() as http:
            pc, _location, session_id = await _publish(http, server)
            try:
                for sender in pc.getSenders():
                    sender.replaceTrack(None)  # connected, but no more media
                await async_wait_until(lambda: session_id not in server.sessions, timeout=15)
            finally:
                await pc.close()
    lines = _ended_lines(caplog, session_id)
    assert len(lines) == 1 and "ended (media_timeout)" in lines[0], lines


async def test_server_stop_is_named(caplog: pytest.LogCaptureFixture) -> None:
    server = WhipServer(port=0)
    server.start()
    try:
        async with aiohttp.ClientSession() as http:
            pc, _location, session_id = await _publish(http, server)
            await asyncio.get_running_loop().run_in_executor(None, server.stop)
            await pc.close()
    finally:
        server.stop()
    lines = _ended_lines(caplog, session_id)
    assert len(lines) == 1 and "ended (server_stop)" in lines[0], lines


async def test_link_headers_survive_naive_comma_splitting() -> None:
    """OBS splits Link on commas: one header line per link, no comma inside any of them."""
    turn = IceServer("turn:turn.example.net:3478?transport=udp", "user", "pass=word")
    with WhipServer(port=0, ice_servers=[IceServer("stun:stun.example.net"), turn]) as server:
        async with aiohttp.ClientSession() as http:
            pc, sdp = await make_offer()
            try:
                async with http.post(server.whip_url, data=sdp, headers=SDP) as resp:
                    assert resp.status == 201
                    links = resp.headers.getall("Link")
                    location = resp.headers["Location"]
                async with http.delete(location) as resp:
                    assert resp.status == 200
            finally:
                await pc.close()
    assert len(links) == 3, links  # stun, turn, server-sent events
    for link in links:
        assert "," not in link, link
    pieces = ", ".join(links).split(",")
    assert len(pieces) == 3 and all(re.match(r"\s*<[^>]+>;", p) for p in pieces), pieces
