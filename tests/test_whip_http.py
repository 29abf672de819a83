"""The DESIGN.md HTTP table for /whip, row by row, against a real server on 127.0.0.1."""

from __future__ import annotations

import re

import aiohttp
import pytest
from helpers import make_offer

from comfywhip_nb.rtc.ice import IceServer, parse_link_header
from comfywhip_nb.server import WhipServer

SDP = {"Content-Type": "application/sdp"}
FRAG = {"Content-Type": "application/trickle-ice-sdpfrag"}
INVERT = {
    "1": {"class_type": "LoadTensor", "inputs": {}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
}


async def post_offer(http, server, sdp, headers=SDP, params=None):
    return await http.post(server.whip_url, data=sdp, headers=headers, params=params)


async def detail(resp) -> str:
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    return (await resp.json())["detail"]


async def test_post_creates_session_with_rfc9725_headers(server: WhipServer) -> None:
    pc, sdp = await make_offer(video=1, audio=1)
    try:
        async with aiohttp.ClientSession() as http:
            resp = await post_offer(http, server, sdp)
            assert resp.status == 201
            assert resp.headers["Content-Type"].startswith("application/sdp")
            location = resp.headers["Location"]
            assert re.fullmatch(rf"http://127\.0\.0\.1:{server.port}/whip/[\w-]{{20,}}", location)
            assert re.fullmatch(r'"[0-9a-f]{16}"', resp.headers["ETag"])
            assert resp.headers["Accept-Patch"] == "application/trickle-ice-sdpfrag"
            answer = await resp.text()
            assert answer.startswith("v=0")
            assert "a=recvonly" in answer and "a=sendrecv" not in answer
            session_id = location.rsplit("/", 1)[1]
            info = server.sessions[session_id]
            assert info.channel_id == "default" and info.kind == "whip"
            assert (await http.delete(location)).status == 200
    finally:
        await pc.close()


async def test_ids_are_unguessable_and_distinct(server: WhipServer) -> None:
    ids = set()
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            pc, sdp = await make_offer()
            resp = await post_offer(http, server, sdp)
            ids.add(resp.headers["Location"].rsplit("/", 1)[1])
            await pc.close()
    assert len(ids) == 3 and all(len(i) >= 20 for i in ids)


async def test_link_headers_announce_configured_ice_servers() -> None:
    servers = [
        IceServer(urls="stun:stun.example.net:3478"),
        IceServer(
            urls="turn:turn.example.net:3478?transport=udp",
            username="us;er",
            credential='p"a\\ss==',
            credential_type="password",
        ),
    ]
    with WhipServer(port=0, ice_servers=servers) as srv:
        pc, sdp = await make_offer()
        try:
            async with aiohttp.ClientSession() as http:
                resp = await post_offer(http, srv, sdp)
                assert resp.status == 201
                links = resp.headers.getall("Link")
                parsed = [s for value in links for s in parse_link_header(value)]
                assert [p.urls for p in parsed] == [s.urls for s in servers] or [
                    (p.urls if isinstance(p.urls, str) else p.urls[0]) for p in parsed
                ] == ["stun:stun.example.net:3478", "turn:turn.example.net:3478?transport=udp"]
                turn = parsed[1]
                assert (turn.username, turn.credential) == ("us;er", 'p"a\\ss==')
                assert any('credential-type="password"' in v for v in links)
                # non-preflight OPTIONS carries the links too
                resp = await http.options(srv.whip_url)
                assert len(resp.headers.getall("Link")) == 2
        finally:
            await pc.close()


@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        ("v=0\r\n", {"Content-Type": "application/json"}, 415, "application/sdp"),
        ("v=0\r\n", {}, 415, "application/sdp"),
        ("", SDP, 400, "empty"),
        ("hello world", SDP, 400, "v=0"),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", SDP, 400, "no audio or video"),
        (b"v=0\r\n\xff\xfe", SDP, 400, "UTF-8"),
    ],
)
async def test_post_rejects_bad_offers(server, body, headers, status, words) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await post_offer(http, server, body, headers=headers)
        assert resp.status == status
        assert words in await detail(resp)
    assert len(server.sessions) == 0


async def test_post_422_for_recvonly_and_two_video_tracks(server: WhipServer) -> None:
    async with aiohttp.ClientSession() as http:
        for kwargs, words in (({"direction": "recvonly"}, "recvonly"), ({"video": 2}, "2 video")):
            pc, sdp = await make_offer(**kwargs)
            resp = await post_offer(http, server, sdp)
            await pc.close()
            assert resp.status == 422, kwargs
            assert words in await detail(resp)


async def test_post_422_for_unsupported_codec(server: WhipServer) -> None:
    pc, sdp = await make_offer()
    await pc.close()
    # rewrite the video codecs to AV1 only
    sdp = re.sub(r"a=rtpmap:(\d+) VP8/90000", r"a=rtpmap:\1 AV1/90000", sdp)
    sdp = re.sub(r"a=rtpmap:(\d+) H264/90000", r"a=rtpmap:\1 AV1/90000", sdp)
    sdp = re.sub(r"a=rtpmap:(\d+) rtx/90000", r"a=rtpmap:\1 AV1/90000", sdp)
    async with aiohttp.ClientSession() as http:
        resp = await post_offer(http, server, sdp)
        assert resp.status == 422
        assert "AV1" in await detail(resp)


async def test_post_413_for_oversized_body(server: WhipServer) -> None:
    big = "v=0\r\n" + "a=x-pad:" + "x" * (200 * 1024) + "\r\n"
    async with aiohttp.ClientSession() as http:
        resp = await post_offer(http, server, big)
        assert resp.status == 413
        assert "limit" in await detail(resp)


async def test_post_503_with_retry_after_at_max_sessions() -> None:
    with WhipServer(port=0, max_sessions=1) as srv:
        pcs = []
        try:
            async with aiohttp.ClientSession() as http:
                pc, sdp = await make_offer()
                pcs.append(pc)
                assert (await post_offer(http, srv, sdp)).status == 201
                pc, sdp = await make_offer()
                pcs.append(pc)
                resp = await post_offer(http, srv, sdp)
                assert resp.status == 503
                assert int(resp.headers["Retry-After"]) > 0
                assert "limit of 1" in await detail(resp)
        finally:
            for pc in pcs:
                await pc.close()


async def test_bearer_token_required_except_preflight_and_health() -> None:
    with WhipServer(port=0, token="s3cret") as srv:
        pc, sdp = await make_offer()
        try:
            async with aiohttp.ClientSession() as http:
                for method, url in (
                    ("POST", srv.whip_url),
                    ("GET", f"{srv.url}/whip-stats"),
                    ("GET", f"{srv.url}/prompts"),
                    ("GET", f"{srv.url}/metrics"),
                ):
                    resp = await http.request(method, url, data=sdp, headers=SDP)
                    assert resp.status == 401, url
                    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                wrong = {**SDP, "Authorization": "Bearer nope"}
                assert (await post_offer(http, srv, sdp, headers=wrong)).status == 401
                assert (await http.get(f"{srv.url}/health")).status == 200
                preflight = await http.options(
                    srv.whip_url,
                    headers={
                        "Origin": "http://example.test",
                        "Access-Control-Request-Method": "POST",
                    },
                )
                assert preflight.status == 200
                good = {**SDP, "Authorization": "Bearer s3cret"}
                resp = await post_offer(http, srv, sdp, headers=good)
                assert resp.status == 201
                assert (await http.get(f"{srv.url}/whip-stats", headers=good)).status == 200
        finally:
            await pc.close()


async def test_token_never_logged(caplog) -> None:
    with WhipServer(port=0, token="very-secret-token") as srv:
        async with aiohttp.ClientSession() as http:
            await http.post(srv.whip_url, data="x", headers={"Authorization": "Bearer wrong"})
            await http.post(
                srv.whip_url, data="x", headers={"Authorization": "Bearer very-secret-token"}
            )
    assert "very-secret-token" not in caplog.text
    assert "WHIP:" in caplog.text


async def test_prompts_query_parameter(server: WhipServer) -> None:
    import json

    async with aiohttp.ClientSession() as http:
        pc, sdp = await make_offer()
        try:
            resp = await post_offer(http, server, sdp, params={"prompts": "{not json"})
            assert resp.status == 400 and "JSON" in await detail(resp)
            bad = {
                "1": {"class_type": "LoadTensor", "inputs": {}},
                "7": {"class_type": "NoSuchNode", "inputs": {"image": ["1", 0]}},
                "3": {"class_type": "SaveTensor", "inputs": {"images": ["7", 0]}},
            }
            resp = await post_offer(http, server, sdp, params={"prompts": json.dumps(bad)})
            assert resp.status == 400
            body = await resp.json()
            assert "7" in body["detail"] and "NoSuchNode" in body["detail"]
            assert any(e["node_id"] == "7" for e in body["node_errors"])
            resp = await post_offer(
                http, server, sdp, params={"prompts": json.dumps(INVERT), "channelId": "cam1"}
            )
            assert resp.status == 201
            info = next(iter(server.sessions.values()))
            assert (info.channel_id, info.prompt_source) == ("cam1", "session")
        finally:
            await pc.close()


async def _session(http, server):
    pc, sdp = await make_offer()
    resp = await post_offer(http, server, sdp)
    assert resp.status == 201
    return pc, resp.headers["Location"], resp.headers["ETag"], sdp


def _ufrag_pwd(sdp: str) -> tuple[str, str]:
    return (
        re.search(r"a=ice-ufrag:(\S+)", sdp).group(1),
        re.search(r"a=ice-pwd:(\S+)", sdp).group(1),
    )


async def test_patch_trickle_and_preconditions(server: WhipServer) -> None:
    async with aiohttp.ClientSession() as http:
        pc, location, etag, sdp = await _session(http, server)
        try:
            ufrag, pwd = _ufrag_pwd(sdp)
            frag = (
                f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\n"
                "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n"
                "a=candidate:garbage\r\na=end-of-candidates\r\n"
            )
            resp = await http.patch(location, data=frag, headers={**FRAG, "If-Match": etag})
            assert resp.status == 204
            assert "ETag" not in resp.headers and await resp.read() == b""
            # lenient by default: no If-Match is fine
            assert (await http.patch(location, data=frag, headers=FRAG)).status == 204
            resp = await http.patch(location, data=frag, headers={**FRAG, "If-Match": '"stale"'})
            assert resp.status == 412
            resp = await http.patch(location, data=frag, headers=SDP)
            assert resp.status == 415
            resp = await http.patch(location, data="this is not sdp", headers=FRAG)
            assert resp.status == 400
            restart = frag.replace(ufrag, "newufrag").replace(pwd, "n" * 24)
            resp = await http.patch(location, data=restart, headers={**FRAG, "If-Match": "*"})
            assert resp.status == 422 and "ICE restart" in await detail(resp)
            resp = await http.patch(location + "x", data=frag, headers=FRAG)
            assert resp.status == 404
        finally:
            await pc.close()


async def test_patch_428_in_strict_mode() -> None:
    with WhipServer(port=0, strict_if_match=True) as srv:
        async with aiohttp.ClientSession() as http:
            pc, location, etag, _ = await _session(http, srv)
            try:
                resp = await http.patch(location, data="a=end-of-candidates\r\n", headers=FRAG)
                assert resp.status == 428
                resp = await http.patch(
                    location, data="a=end-of-candidates\r\n", headers={**FRAG, "If-Match": etag}
                )
                assert resp.status == 204
            finally:
                await pc.close()


async def test_delete_get_head_options_and_405(server: WhipServer) -> None:
    async with aiohttp.ClientSession() as http:
        pc, location, _, _ = await _session(http, server)
        try:
            assert (await http.get(server.whip_url)).status == 204
            assert (await http.head(server.whip_url)).status == 204
            assert (await http.get(location)).status == 204
            assert (await http.head(location)).status == 204
            resp = await http.options(location)
            assert resp.status == 200
            assert "PATCH" in resp.headers["Allow"] and "DELETE" in resp.headers["Allow"]
            assert resp.headers["Accept-Patch"] == "application/trickle-ice-sdpfrag"
            resp = await http.put(server.whip_url, data="x")
            assert resp.status == 405 and "POST" in resp.headers["Allow"]
            resp = await http.post(location, data="x")
            assert resp.status == 405 and "DELETE" in resp.headers["Allow"]
            assert (await http.delete(location)).status == 200
            # an ended session is remembered for a minute: DELETE stays 200, nothing else
            assert (await http.delete(location)).status == 200
            assert (await http.get(location)).status == 404
            assert (await http.options(location)).status == 404
            assert len(server.sessions) == 0
        finally:
            await pc.close()


async def test_options_and_cors_preflight(server: WhipServer) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await http.options(server.whip_url)
        assert resp.status == 200
        assert resp.headers["Accept-Post"] == "application/sdp"
        assert "POST" in resp.headers["Allow"]
        resp = await http.options(
            server.whip_url,
            headers={
                "Origin": "http://other.test",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,authorization",
            },
        )
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        allowed = resp.headers["Access-Control-Allow-Headers"]
        for name in ("Authorization", "Content-Type", "If-Match"):
            assert name in allowed
        assert "Link" not in resp.headers
        pc, sdp = await make_offer()
        resp = await post_offer(http, server, sdp, headers={**SDP, "Origin": "http://other.test"})
        await pc.close()
        exposed = resp.headers["Access-Control-Expose-Headers"]
        for name in ("Location", "ETag", "Link", "Accept-Patch"):
            assert name in exposed


async def test_cors_origin_list() -> None:
    with WhipServer(port=0, cors_origins="http://good.test") as srv:
        async with aiohttp.ClientSession() as http:
            resp = await http.get(f"{srv.url}/health", headers={"Origin": "http://good.test"})
            assert resp.headers["Access-Control-Allow-Origin"] == "http://good.test"
            resp = await http.get(f"{srv.url}/health", headers={"Origin": "http://evil.test"})
            assert "Access-Control-Allow-Origin" not in resp.headers


async def test_unknown_path_is_404_problem(server: WhipServer) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{server.url}/nope")
        assert resp.status == 404
        assert "no such resource" in await detail(resp)


async def test_prompts_over_http_are_never_file_paths(server: WhipServer, tmp_path) -> None:
    import json

    secret = tmp_path / "graph.json"
    secret.write_text(json.dumps(INVERT))
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{server.url}/prompts", json=str(secret))
        assert resp.status == 400
        assert "JSON object" in await detail(resp)
        pc, sdp = await make_offer()
        resp = await post_offer(http, server, sdp, params={"prompts": json.dumps(str(secret))})
        await pc.close()
        assert resp.status == 400
