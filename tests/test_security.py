"""Security: bearer token coverage, secrets kept out of logs and stats, CORS, rate limiting,
prompts that can neither read files nor run code, and the CLI's warning for open binds.

Real servers on 127.0.0.1; the CLI runs in a subprocess. The limiter's own logic is tested
as pure code (``comfywhip_nb.ratelimit`` takes the clock as an argument).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import make_offer
from hypothesis import given, settings
from hypothesis import strategies as st

import comfywhip_nb
from comfywhip_nb.client.sources import TestPatternTrack
from comfywhip_nb.client.whip_client import WHIPClient
from comfywhip_nb.http import middleware as whip
from comfywhip_nb.http.ratelimit import RateLimiter
from comfywhip_nb.prompts import PromptError, load_prompt
from comfywhip_nb.rtc.ice import IceServer
from comfywhip_nb.server import WhipServer

pytestmark = pytest.mark.timeout(120)

TOKEN = "s3cret-Token-0123456789abcdef"
TURN_USER = "turn-user-7f3a"
TURN_SECRET = "TURN-credential-9b1d/+=="
SDP = {"Content-Type": "application/sdp"}
JSON = {"Content-Type": "application/json"}
FRAG = {"Content-Type": "application/trickle-ice-sdpfrag"}
INVERT = {
    "1": {"class_type": "LoadTensor", "inputs": {}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
}


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the limiter, as pure logic --------------------------------------------------------------
def test_limiter_allows_a_burst_then_asks_to_wait() -> None:
    limiter = RateLimiter(rate=2, burst=4)
    assert [limiter.check("a", 0.0) for _ in range(4)] == [None] * 4
    wait = limiter.check("a", 0.0)
    assert wait == pytest.approx(0.5)  # one token comes back every 1/rate seconds
    assert limiter.check("a", 0.25) == pytest.approx(0.25)  # a refusal costs nothing
    assert limiter.check("a", 0.5) is None
    assert limiter.check("b", 0.5) is None  # clients are independent


def test_limiter_disabled_and_defaults() -> None:
    off = RateLimiter(rate=0)
    assert not off.enabled
    assert all(off.check("a", 0.0) is None for _ in range(10_000))
    default = RateLimiter()
    assert default.rate == 20 and default.burst == 40
    assert all(default.check("a", 0.0) is None for _ in range(40))
    assert default.check("a", 0.0) is not None


def test_limiter_rejects_bad_settings_and_survives_a_backwards_clock() -> None:
    for bad in ({"rate": -1}, {"rate": float("nan")}, {"rate": 1, "burst": 0.5}):
        with pytest.raises(ValueError):
            RateLimiter(**bad)  # type: ignore[arg-type]
    limiter = RateLimiter(rate=1, burst=1)
    assert limiter.check("a", 100.0) is None
    assert limiter.check("a", 50.0) is not None  # the clock went back: no free tokens


def test_limiter_table_is_bounded() -> None:
    limiter = RateLimiter(rate=1, burst=1, max_clients=100)
    for i in range(10_000):
        limiter.check(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(limiter) == 100


@settings(max_examples=150, deadline=None, database=None)
@given(
    rate=st.floats(0.5, 50),
    burst=st.floats(1, 60),
    gaps=st.lists(st.floats(0, 0.5), min_size=1, max_size=200),
)
def test_limiter_never_lets_through_more_than_burst_plus_rate_times_time(
    rate: float, burst: float, gaps: list[float]
) -> None:
    limiter = RateLimiter(rate=rate, burst=burst)
    now, allowed = 0.0, 0
    for gap in gaps:
        now += gap
        wait = limiter.check("client", now)
        if wait is None:
            allowed += 1
        else:
            assert 0 < wait <= 1 / rate + 1e-9
    assert allowed <= burst + rate * now + 1e-6


# -- a server with a token and a TURN server ---------------------------------------------------
@pytest.fixture
async def guarded() -> AsyncIterator[WhipServer]:
    srv = WhipServer(port=0, token=TOKEN, rate_limit=0)  # this file's request bursts
    await asyncio.get_running_loop().run_in_executor(None, srv.start)
    try:
        yield srv
    finally:
        await asyncio.get_running_loop().run_in_executor(None, srv.stop)


#: (method, path, headers, body): every endpoint that must ask for the token
PROTECTED: list[tuple[str, str, dict[str, str], str]] = [
    ("POST", "/whip", SDP, "v=0\r\n"),
    ("GET", "/whip", {}, ""),
    ("HEAD", "/whip", {}, ""),
    ("OPTIONS", "/whip", {}, ""),  # not a preflight: it would carry TURN credentials
    ("PATCH", "/whip/some-id", FRAG, "a=end-of-candidates\r\n"),
    ("DELETE", "/whip/some-id", {}, ""),
    ("GET", "/whip/some-id", {}, ""),
    ("OPTIONS", "/whip/some-id", {}, ""),
    ("GET", "/whip/some-id/events", {}, ""),
    ("GET", "/whip-stats", {}, ""),
    ("GET", "/streams/stats", {}, ""),
    ("GET", "/stream/some-id/stats", {}, ""),
    ("GET", "/metrics", {}, ""),
    ("GET", "/prompts", {}, ""),
    ("POST", "/prompts", JSON, json.dumps(INVERT)),
    ("GET", "/preview/some-id.jpg", {}, ""),
    ("POST", "/whep", SDP, "v=0\r\n"),
    ("POST", "/whep/default", SDP, "v=0\r\n"),
    ("OPTIONS", "/whep/default", {}, ""),
    ("PATCH", "/whep/default/some-id", FRAG, "a=end-of-candidates\r\n"),
    ("DELETE", "/whep/default/some-id", {}, ""),
    ("POST", "/offer", JSON, "{}"),
    ("POST", "/prompt", JSON, json.dumps(INVERT)),
    ("GET", "/no-such-page", {}, ""),  # a 401, not a 404 that would map the server
]
WRONG_TOKENS = {
    "missing": {},
    "empty": {"Authorization": "Bearer "},
    "same length": bearer("x" * len(TOKEN)),
    "one char off": bearer(TOKEN[:-1] + ("e" if TOKEN[-1] != "e" else "f")),
    "shorter (prefix)": bearer(TOKEN[:8]),
    "longer (token + suffix)": bearer(TOKEN + "x"),
    "very long": bearer("y" * 5000),
    "basic scheme": {"Authorization": f"Basic {TOKEN}"},
    "no scheme": {"Authorization": TOKEN},
    "non-ASCII": {"Authorization": "Bearer tökén-ünïcode"},
}


async def test_every_endpoint_needs_the_token(guarded: WhipServer) -> None:
    async with aiohttp.ClientSession() as http:
        for method, path, headers, body in PROTECTED:
            for name, auth in WRONG_TOKENS.items():
                async with http.request(
                    method, guarded.url + path, headers={**headers, **auth}, data=body
                ) as resp:
                    where = f"{method} {path} with a {name} token"
                    assert resp.status == 401, where
                    assert resp.headers["WWW-Authenticate"].startswith("Bearer"), where
                    if method != "HEAD":
                        problem = await resp.json(content_type=None)
                        assert problem["status"] == 401 and "token" in problem["detail"], where
                    assert TURN_SECRET not in str(resp.headers), where
            async with http.request(
                method, guarded.url + path, headers={**headers, **bearer()}, data=body
            ) as resp:
                assert resp.status != 401, f"{method} {path} refused the right token"
                assert resp.status < 500, f"{method} {path}: {resp.status}"


async def test_token_in_the_query_string_is_not_accepted(guarded: WhipServer) -> None:
    async with aiohttp.ClientSession() as http:
        for query in (f"?token={TOKEN}", f"?access_token={TOKEN}"):
            async with http.get(f"{guarded.url}/whip-stats{query}") as resp:
                assert resp.status == 401


async def test_public_paths_and_preflight_need_no_token(guarded: WhipServer) -> None:
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{guarded.url}/health") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "ok"
        async with http.get(f"{guarded.url}/") as resp:
            assert resp.status == 200  # the static page holds no data and asks for the token
        for path in ("/whip", "/whip/some-id", "/whep", "/whep/default/x", "/prompts", "/offer"):
            async with http.options(guarded.url + path, headers=preflight) as resp:
                assert resp.status == 200, path
                assert "Link" not in resp.headers, path  # no ICE servers in a preflight
                assert "Authorization" in resp.headers["Access-Control-Allow-Headers"], path
                assert not await resp.read(), path


async def test_the_token_is_compared_with_hmac_compare_digest(
    guarded: WhipServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behaviour, not source: the comparison goes through compare_digest with the token, for
    wrong tokens of equal and of different length alike."""
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        seen.append((bytes(a), bytes(b)))
        return real(a, b)

    monkeypatch.setattr(whip.hmac, "compare_digest", spy)
    async with aiohttp.ClientSession() as http:
        for auth in (bearer("x" * len(TOKEN)), bearer("short"), bearer()):
            async with http.get(f"{guarded.url}/whip-stats", headers=auth) as resp:
                assert resp.status == (200 if auth == bearer() else 401)
    assert len(seen) == 3
    assert all(TOKEN.encode() in pair for pair in seen)


async def test_a_401_does_not_reveal_whether_a_session_exists(guarded: WhipServer) -> None:
    async with WHIPClient(guarded.whip_url, token=TOKEN) as client:
        await client.publish(TestPatternTrack(64, 48))
        assert client.resource_url is not None
        async with aiohttp.ClientSession() as http:
            answers = []
            for url in (client.resource_url, guarded.whip_url + "/no-such-session"):
                async with http.delete(url, headers=bearer("wrong")) as resp:
                    answers.append((resp.status, await resp.text()))
            assert answers[0] == answers[1]
            assert answers[0][0] == 401
            assert len(guarded.sessions) == 1  # the wrong-token DELETE changed nothing


async def test_secrets_never_reach_logs_stats_or_reprs(caplog: pytest.LogCaptureFixture) -> None:
    """A token and a TURN credential, a whole session and every stats endpoint later: neither
    secret appears in any log record (any logger, DEBUG included) nor in any stats body.

    The TURN server (127.0.0.1:9) answers nothing, so aiortc's gathering waits for its 5 s
    timeout once per peer connection: this test is slower than the others.
    """
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="comfywhip_nb")
    turn = IceServer(
        urls="turn:127.0.0.1:9?transport=udp", username=TURN_USER, credential=TURN_SECRET
    )
    srv = WhipServer(port=0, token=TOKEN, ice_servers=[turn])
    await asyncio.get_running_loop().run_in_executor(None, srv.start)
    bodies: list[str] = [repr(srv), repr(srv.config), repr(turn)]
    try:
        client = WHIPClient(srv.whip_url, token=TOKEN)
        try:
            await client.publish(TestPatternTrack(64, 48))
            await client.wait_connected(timeout=20)
            # the Link header is where the credential belongs (RFC 9725 §4.6), for this client
            assert [s.credential for s in client.ice_servers] == [TURN_SECRET]
            async with aiohttp.ClientSession() as http:
                for path in ("/whip-stats", "/streams/stats", "/metrics", "/prompts", "/health"):
                    async with http.get(srv.url + path, headers=bearer()) as resp:
                        assert resp.status == 200, path
                        bodies.append(await resp.text())
                async with http.get(srv.url + "/whip-stats") as resp:  # a refused request
                    bodies.append(await resp.text())
            bodies.append(json.dumps(srv.stats()))
            bodies.append(repr(srv))
        finally:
            await client.unpublish()
    finally:
        await asyncio.get_running_loop().run_in_executor(None, srv.stop)
    logged = [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    for secret in (TOKEN, TURN_SECRET):
        assert not [b for b in bodies if secret in b], secret
        assert not [m for m in logged if secret in m], secret
    assert any("WHIP:" in m for m in logged)  # the capture did see the server's logs


# -- CORS -------------------------------------------------------------------------------------
async def test_cors_default_allows_any_origin(guarded: WhipServer) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{guarded.url}/whip-stats", headers={"Origin": "https://a.example", **bearer()}
        ) as resp,
    ):
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert "Location" in resp.headers["Access-Control-Expose-Headers"]


async def test_cors_origins_can_be_restricted() -> None:
    srv = WhipServer(port=0, cors_origins="https://app.example, https://other.example")
    await asyncio.get_running_loop().run_in_executor(None, srv.start)
    try:
        async with aiohttp.ClientSession() as http:
            for origin in ("https://app.example", "https://other.example"):
                async with http.get(f"{srv.url}/whip-stats", headers={"Origin": origin}) as r:
                    assert r.headers["Access-Control-Allow-Origin"] == origin
                    assert "Origin" in r.headers.get("Vary", "")
            async with http.options(
                srv.whip_url,
                headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
            ) as resp:
                assert resp.status == 200
                assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
                assert "POST" in resp.headers["Access-Control-Allow-Methods"]
            for origin in ("https://evil.example", "null", "https://app.example.evil.example"):
                async with http.get(f"{srv.url}/whip-stats", headers={"Origin": origin}) as r:
                    assert "Access-Control-Allow-Origin" not in r.headers, origin
    finally:
        await asyncio.get_running_loop().run_in_executor(None, srv.stop)


# -- rate limit (RFC 9725 §4.8) ---------------------------------------------------------------
async def test_rate_limit_answers_429_with_retry_after() -> None:
    """Needs the lead's limiter diff (``WhipServer(rate_limit=...)``, middleware in whip.py)."""
    srv = WhipServer(port=0, rate_limit=2)  # bursts of 4
    await asyncio.get_running_loop().run_in_executor(None, srv.start)
    try:
        async with aiohttp.ClientSession() as http:
            statuses = []
            for _ in range(8):
                async with http.delete(f"{srv.whip_url}/nobody") as resp:
                    statuses.append(resp.status)
                    if resp.status == 429:
                        retry_after = resp.headers["Retry-After"]
                        problem = await resp.json(content_type=None)
            assert statuses[:4] == [404] * 4 and statuses[4:] == [429] * 4, statuses
            assert retry_after.isdigit() and 1 <= int(retry_after) <= 2
            assert problem["status"] == 429 and "too many" in problem["detail"].lower()
            async with http.get(f"{srv.url}/whip-stats") as resp:
                assert resp.status == 200  # reading is not limited
            async with http.options(srv.whip_url) as resp:
                assert resp.status == 200
            await asyncio.sleep(0.6)  # one token back after 1/rate = 0.5 s
            async with http.delete(f"{srv.whip_url}/nobody") as resp:
                assert resp.status == 404
            # POST and PATCH count too
            for method, path, headers in (("POST", "/whip", SDP), ("PATCH", "/whip/x", FRAG)):
                async with http.request(method, srv.url + path, headers=headers, data="") as r:
                    assert r.status == 429, method
    finally:
        await asyncio.get_running_loop().run_in_executor(None, srv.stop)


async def test_rate_limit_comes_before_the_token_check() -> None:
    """Guessing tokens is limited like any other POST/PATCH/DELETE."""
    srv = WhipServer(port=0, token=TOKEN, rate_limit=1)  # bursts of 2
    await asyncio.get_running_loop().run_in_executor(None, srv.start)
    try:
        async with aiohttp.ClientSession() as http:
            statuses = []
            for guess in range(5):
                async with http.delete(
                    f"{srv.whip_url}/x", headers=bearer(f"guess-{guess}")
                ) as resp:
                    statuses.append(resp.status)
            assert statuses == [401, 401, 429, 429, 429]
    finally:
        await asyncio.get_running_loop().run_in_executor(None, srv.stop)


async def test_default_rate_limit_never_hits_a_normal_client(server: WhipServer) -> None:
    assert server.config.rate_limit == 20
    async with aiohttp.ClientSession() as http:
        for _ in range(3):  # three publish-like request bursts: POST, PATCHes, DELETE
            pc, sdp = await make_offer()
            async with http.post(server.whip_url, data=sdp, headers=SDP) as resp:
                assert resp.status == 201
                location = resp.headers["Location"]
            for _ in range(5):
                async with http.patch(
                    location, data="a=end-of-candidates\r\n", headers=FRAG
                ) as resp:
                    assert resp.status == 204
            async with http.delete(location) as resp:
                assert resp.status == 200
            await pc.close()  # type: ignore[attr-defined]


def test_rate_limit_zero_disables_and_negative_is_refused() -> None:
    with WhipServer(port=0, rate_limit=0) as srv:
        for _ in range(60):
            req = urllib.request.Request(f"{srv.whip_url}/nobody", method="DELETE")
            try:
                urllib.request.urlopen(req, timeout=5)
            except urllib.error.HTTPError as exc:
                assert exc.code == 404
    with pytest.raises(ValueError, match="rate_limit"):
        WhipServer(port=0, rate_limit=-1)


# -- prompts: no file access outside the allowed folder, no code ------------------------------
@pytest.fixture
def folders(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "invert.json").write_text(json.dumps(INVERT))
    (outside / "secret.json").write_text(json.dumps(INVERT))
    (allowed / "link.json").symlink_to(outside / "secret.json")
    yield allowed, outside


def test_load_prompt_stays_inside_the_allowed_folder(folders: tuple[Path, Path]) -> None:
    allowed, outside = folders
    assert load_prompt(str(allowed / "invert.json"), allowed_dir=allowed) is not None
    assert load_prompt(allowed / "invert.json", allowed_dir=allowed) is not None
    for path in (
        outside / "secret.json",
        allowed / ".." / "outside" / "secret.json",
        allowed / "link.json",  # a symlink inside that points outside
        Path("/etc/hostname"),
    ):
        for p in (path, str(path)):
            with pytest.raises(PromptError, match="outside the allowed folder"):
                load_prompt(p, allowed_dir=allowed)


def test_server_prompts_dir_applies_to_set_prompts(folders: tuple[Path, Path]) -> None:
    allowed, outside = folders
    srv = WhipServer(port=0, prompts_dir=allowed)
    srv.set_prompts(str(allowed / "invert.json"))
    with pytest.raises(PromptError, match="outside the allowed folder"):
        srv.set_prompts(str(outside / "secret.json"))
    with pytest.raises(PromptError, match="outside the allowed folder"):
        WhipServer(port=0, prompts=str(outside / "secret.json"), prompts_dir=allowed)


async def test_http_never_reads_prompt_files(folders: tuple[Path, Path]) -> None:
    """Over HTTP a prompt is JSON; a string naming a file, even one inside the allowed
    folder, is a 400, and the answer does not say whether the file exists."""
    allowed, outside = folders
    srv = WhipServer(port=0, prompts_dir=allowed)
    await asyncio.get_running_loop().run_in_executor(None, srv.start)
    paths = [
        str(allowed / "invert.json"),
        str(outside / "secret.json"),
        str(outside / "missing.json"),
        "/etc/hostname",
    ]
    try:
        async with aiohttp.ClientSession() as http:
            answers = set()
            for path in paths:
                for encoded in (json.dumps(path), json.dumps(json.dumps(path))):
                    for url, body in (
                        (f"{srv.url}/prompts?channelId=files", encoded),
                        (f"{srv.url}/prompt?channelId=files", encoded),
                        (
                            f"{srv.url}/offer?channelId=files",
                            '{"offer": {"sdp": "v=0", "type": "offer"}, "prompts": '
                            + encoded
                            + "}",
                        ),
                    ):
                        async with http.post(url, data=body, headers=JSON) as resp:
                            detail = (await resp.json(content_type=None))["detail"]
                            assert resp.status == 400, (url, path, detail)
                            answers.add(detail)
                    async with http.post(
                        srv.whip_url, params={"prompts": encoded}, data="v=0\r\n", headers=SDP
                    ) as resp:
                        assert resp.status == 400
                        answers.add((await resp.json(content_type=None))["detail"])
            assert not any("exist" in a or "outside" in a or "invalid JSON" in a for a in answers)
            async with http.get(f"{srv.url}/prompts?channelId=files") as resp:
                assert (await resp.json())["prompts"] is None  # nothing was loaded
    finally:
        await asyncio.get_running_loop().run_in_executor(None, srv.stop)


@pytest.mark.parametrize(
    "class_type",
    ["__import__", "eval", "exec", "os.system", "builtins.eval", "subprocess.Popen", "__class__"],
)
def test_a_class_type_cannot_name_python(class_type: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').write('x')"
    prompt = {
        "1": {"class_type": "LoadTensor", "inputs": {}},
        "2": {"class_type": class_type, "inputs": {"source": code, "image": ["1", 0]}},
        "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
    }
    with pytest.raises(PromptError, match=f"unknown class_type {re.escape(repr(class_type))}"):
        load_prompt(prompt)
    assert not marker.exists()


def test_strings_in_prompts_stay_strings(tmp_path: Path) -> None:
    """Inputs are literals: code in a STRING-typed or unknown input is never evaluated."""
    marker = tmp_path / "ran"
    code = f"__import__('os').system('touch {marker}')"
    prompt = json.loads(json.dumps(INVERT))
    prompt["2"]["inputs"]["extra"] = code
    prompt["2"]["_meta"] = {"title": code}
    out = load_prompt(prompt)
    import torch

    out.run(torch.rand(1, 16, 16, 3))
    assert not marker.exists()


# -- the CLI -----------------------------------------------------------------------------------
def _cli_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(comfywhip_nb.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _serve_all(*variants: tuple[str, ...], duration: float = 1.0) -> list[tuple[int, str, str]]:
    """Run ``comfywhip serve --port 0 --duration D ARGS`` once per variant, in parallel."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "comfywhip_nb",
                "serve",
                "--port",
                "0",
                "--duration",
                str(duration),
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_cli_env(),
        )
        for args in variants
    ]
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        results.append((proc.returncode, out, err))
    return results


def test_cli_host_defaults_to_loopback() -> None:
    from comfywhip_nb.cli import build_parser

    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"


def test_cli_warns_when_binding_all_interfaces_without_a_token() -> None:
    open_bind, loopback = _serve_all(("--host", "0.0.0.0"), ("--host", "127.0.0.1"))
    code, out, err = open_bind
    assert code == 0, err
    assert re.search(r"WARNING.*0\.0\.0\.0.*without --token", err), err
    assert "WHIP endpoint http://127.0.0.1:" in out

    code, out, err = loopback
    assert code == 0, err
    assert "without --token" not in err


def test_cli_server_bound_to_all_interfaces_with_a_token() -> None:
    """No warning, the token is never printed, and the server answers on 127.0.0.1."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "comfywhip_nb",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--duration",
            "10",
            "--token",
            TOKEN,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_cli_env(),
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        line = ""
        while "WHIP endpoint" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        match = re.search(r"(http://127\.0\.0\.1:\d+)/whip", line)
        assert match, line
        with urllib.request.urlopen(match.group(1) + "/health", timeout=5) as resp:
            assert resp.status == 200
        request = urllib.request.Request(match.group(1) + "/whip-stats")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 401
    finally:
        proc.terminate()  # SIGTERM: the CLI stops the server and exits
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "without --token" not in err  # a token is set: no warning
    assert TOKEN not in line + out + err  # and the token is never printed
