"""Hostile input on every endpoint: property-based fuzzing (hypothesis) and a hand-written corpus.

Everything runs against one real ``WhipServer(port=0)`` while a real aiortc publisher streams
into it from a background thread. Requests go out over raw sockets (``Connection: close``),
so the tests control every byte: methods, targets, header names and values, bodies that are
not UTF-8. For every request:

* the status is below 500 and the answer comes within ``MAX_RESPONSE_S``;
* a 4xx carries an RFC 9457 ``application/problem+json`` body with a non-empty ``detail``,
  except the few answers aiohttp's HTTP parser writes itself before any handler runs (a
  request line or header it cannot parse, a header over 8190 bytes, too many headers): those
  are ``400 text/plain`` naming the problem, which is accepted and counted as ``parser``;
* after each test the live publisher's ``frames_processed`` is still increasing.

Bounded: ``max_examples`` per test below, ``deadline=None`` (the bound that matters is
``MAX_RESPONSE_S`` per request), no example database. A finished run prints the number of
requests and the statuses seen (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from helpers import wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfywhip_nb.client.sources import TestPatternTrack
from comfywhip_nb.client.whip_client import WHIPClient
from comfywhip_nb.prompts import NODE_CLASS_MAPPINGS
from comfywhip_nb.server import WhipServer

pytestmark = [
    pytest.mark.timeout(240),
    # the server's and the publisher's threads use `random` (aioice transaction ids) while
    # hypothesis draws; hypothesis cannot tell those calls from a strategy's own
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

MAX_RESPONSE_S = 3.0
"""Per-request bound on the response time (the server answers most in a few ms)."""
SOCKET_TIMEOUT_S = 10.0
SDP = "application/sdp"
FRAG = "application/trickle-ice-sdpfrag"
JSON = "application/json"
PARSER_STATUSES = (400, 413, 414, 431)
"""What aiohttp's HTTP parser answers on its own (text/plain), before any handler runs."""

FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: A real aiortc offer (video + audio, host candidates on a closed loopback port), so that
#: mutations start from something the server accepts.
BASE_OFFER_LINES = [
    "v=0",
    "o=- 4004468104 4004468104 IN IP4 0.0.0.0",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0 1",
    "a=msid-semantic:WMS *",
    "m=video 9 UDP/TLS/RTP/SAVPF 97 98 99 100",
    "c=IN IP4 127.0.0.1",
    "a=sendonly",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=mid:0",
    "a=msid:67bf869f-4e97-421d-bc3f-b027716d89b7 028c95f9-d3ee-4674-993c-29e9ed8aff55",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=rtcp-mux",
    "a=ssrc-group:FID 670281215 2640663606",
    "a=ssrc:670281215 cname:96674f5d-288a-4680-a8a1-48464f727563",
    "a=ssrc:2640663606 cname:96674f5d-288a-4680-a8a1-48464f727563",
    "a=rtpmap:97 VP8/90000",
    "a=rtcp-fb:97 nack",
    "a=rtcp-fb:97 nack pli",
    "a=rtpmap:98 rtx/90000",
    "a=fmtp:98 apt=97",
    "a=rtpmap:99 H264/90000",
    "a=fmtp:99 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
    "a=rtpmap:100 rtx/90000",
    "a=fmtp:100 apt=99",
    "a=candidate:16572de626da4e5384a0ce2d0d93678a 1 udp 2130706431 127.0.0.1 9 typ host",
    "a=end-of-candidates",
    "a=ice-ufrag:0MvV",
    "a=ice-pwd:ZSDKeahYpHFmC7FHu0eZUv",
    "a=fingerprint:sha-256 64:E9:8A:88:98:B4:CB:46:6B:FF:4B:61:14:F9:4B:D4:8D:02:54:16:11:53:"
    "9B:E8:18:00:7F:F1:90:67:B8:45",
    "a=setup:actpass",
    "m=audio 9 UDP/TLS/RTP/SAVPF 96 0 8",
    "c=IN IP4 127.0.0.1",
    "a=sendonly",
    "a=mid:1",
    "a=rtcp-mux",
    "a=ssrc:3608360632 cname:96674f5d-288a-4680-a8a1-48464f727563",
    "a=rtpmap:96 opus/48000/2",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=candidate:16572de626da4e5384a0ce2d0d93678a 1 udp 2130706431 127.0.0.1 9 typ host",
    "a=end-of-candidates",
    "a=ice-ufrag:0MvV",
    "a=ice-pwd:ZSDKeahYpHFmC7FHu0eZUv",
    "a=fingerprint:sha-256 64:E9:8A:88:98:B4:CB:46:6B:FF:4B:61:14:F9:4B:D4:8D:02:54:16:11:53:"
    "9B:E8:18:00:7F:F1:90:67:B8:45",
    "a=setup:actpass",
]
BASE_OFFER = "\r\n".join(BASE_OFFER_LINES) + "\r\n"
_AUDIO = BASE_OFFER_LINES.index("m=audio 9 UDP/TLS/RTP/SAVPF 96 0 8")


def _offer(video: list[str] | None = None, audio: list[str] | None = None) -> str:
    """The base offer with its video and/or audio section lines replaced."""
    head, rest = BASE_OFFER_LINES[:6], BASE_OFFER_LINES[6:_AUDIO]
    tail = BASE_OFFER_LINES[_AUDIO:]
    return (
        "\r\n".join(head + (rest if video is None else video) + (tail if audio is None else audio))
        + "\r\n"
    )


#: Offers aiortc refuses only after the "track" event fired (the consumer task and the worker
#: thread were already running): the refusal must stop them.
LATE_REFUSALS = {
    "duplicate mid": _offer(
        audio=[x.replace("a=mid:1", "a=mid:0") for x in BASE_OFFER_LINES[_AUDIO:]]
    ),
    "audio section without a direction": _offer(
        audio=[x for x in BASE_OFFER_LINES[_AUDIO:] if x != "a=sendonly"]
    ),
}

#: The audio m= line lost: its attributes (a second mid, a second set of ICE credentials)
#: land in the video section, and aiortc fails half way through building the answer.
MERGED_SECTIONS = [x for x in BASE_OFFER_LINES if not x.startswith("m=audio")]
MERGED_VIEWER_OFFER = (
    "\r\n".join(x.replace("a=sendonly", "a=recvonly") for x in MERGED_SECTIONS) + "\r\n"
)

#: Lines that are valid-looking but wrong in context; candidates only ever name 127.0.0.1
#: (or no usable address), so nothing the server does with them leaves the machine.
ODD_SDP_LINES = [
    "a=recvonly",
    "a=inactive",
    "a=sendrecv",
    "m=video 9 UDP/TLS/RTP/SAVPF 96",
    "m=video 0 RTP/AVP 0",
    "m=audio x RTP/AVP",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "m=",
    "a=sctp-port:abc",
    "a=rtpmap:96 VP8/90000",
    "a=rtpmap:",
    "a=rtpmap:97 VP9/90000",
    "a=fmtp:97 apt=",
    "a=fingerprint:sha-256 ZZ",
    "a=fingerprint:md5",
    "a=setup:bogus",
    "a=ice-ufrag:",
    "a=ice-pwd:",
    "a=mid:",
    "a=group:BUNDLE 7 8 9",
    "a=ssrc:abc",
    "a=ssrc-group:FID",
    "a=msid:",
    "a=extmap:x y",
    "a=rtcp:abc",
    "a=rtcp-fb:*",
    "c=IN IP4 999.1.1.1",
    "c=IN IP6",
    "b=AS:-1",
    "a=candidate:1 1 udp 1 127.0.0.1 9 typ host",
    "a=candidate:1 1 udp 99999999999999999999 127.0.0.1 99999 typ host",
    "a=candidate:x",
    "a=end-of-candidates",
    "a=",
    "=",
    "v=1",
    "\x00",
]

SEEN: collections.Counter[str] = collections.Counter()
"""Statuses of every request this module sent (printed at the end)."""


# -- a raw HTTP/1.1 client ------------------------------------------------------------------
@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float
    head: bool = False
    """The answer to a HEAD request: headers only."""

    @property
    def problem(self) -> dict[str, Any] | None:
        if not self.headers.get("content-type", "").startswith("application/problem+json"):
            return None
        if self.head:  # same headers as GET, no body
            return {"status": self.status, "detail": "(HEAD)"}
        return json.loads(self.body)


def raw_request(port: int, data: bytes, method: str = "GET") -> Reply:
    """Send ``data`` as is and parse the answer (the request should say Connection: close)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)  # the server may answer (413, 400) before reading it all
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        body = response.read()
    reply = Reply(
        response.status,
        {k.lower(): v for k, v in response.getheaders()},
        body,
        time.monotonic() - started,
        head=method == "HEAD",
    )
    SEEN[str(reply.status)] += 1
    return reply


def encode(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def request(
    port: int,
    method: str,
    target: str | bytes,
    headers: dict[str, str | bytes] | list[tuple[str | bytes, str | bytes]] | None = None,
    body: str | bytes = b"",
) -> Reply:
    """One well-framed request: request line, Host, the given headers, Content-Length."""
    payload = encode(body)
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    lines = [encode(method) + b" " + encode(target) + b" HTTP/1.1", b"Host: 127.0.0.1:%d" % port]
    lines += [encode(k) + b": " + encode(v) for k, v in items]
    if payload or method in ("POST", "PATCH", "PUT"):
        lines.append(b"Content-Length: %d" % len(payload))
    lines.append(b"Connection: close")
    return raw_request(port, b"\r\n".join(lines) + b"\r\n\r\n" + payload, method)


def check_reply(reply: Reply, *, parser_ok: bool = False, what: str = "") -> Reply:
    """The invariants every answer must hold; returns the reply for further checks."""
    where = f"{what}: {reply.status} {reply.body[:300]!r}"
    assert reply.status < 500, where
    assert reply.elapsed < MAX_RESPONSE_S, f"{what}: took {reply.elapsed:.2f} s"
    if reply.status >= 400 and not reply.head:
        problem = reply.problem
        if problem is None:
            assert parser_ok and reply.status in PARSER_STATUSES, where
            assert reply.body.strip(), where  # aiohttp still says what it could not parse
            SEEN["parser"] += 1
        else:
            assert problem["status"] == reply.status, where
            assert isinstance(problem["detail"], str) and problem["detail"].strip(), where
    return reply


# -- a publisher that streams during the whole module --------------------------------------
class BackgroundPublisher:
    """A WHIPClient on its own thread and loop (the fuzz tests themselves are synchronous)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-publisher")
        self.client: WHIPClient | None = None
        self.session_id = ""

    def start(self, timeout: float = 20.0) -> None:
        self.thread.start()
        self.session_id = asyncio.run_coroutine_threadsafe(self._publish(), self.loop).result(
            timeout
        )

    async def _publish(self) -> str:
        self.client = WHIPClient(self.url)
        await self.client.publish(TestPatternTrack(96, 64, fps=15))
        await self.client.wait_connected(timeout=10)
        assert self.client.resource_url is not None
        return self.client.resource_url.rsplit("/", 1)[1]

    def stop(self) -> None:
        if self.client is not None:
            future = asyncio.run_coroutine_threadsafe(self.client.unpublish(), self.loop)
            with contextlib.suppress(Exception):
                future.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Live:
    server: WhipServer
    publisher: BackgroundPublisher
    dummy_id: str
    """A session created from a real offer whose peer is gone: the target of PATCH fuzzing."""
    dummy_etag: str
    dummy_ufrag: str

    @property
    def port(self) -> int:
        return self.server.port

    def frames(self) -> int:
        info = self.server.sessions.get(self.publisher.session_id)
        assert info is not None, "the live publisher's session is gone"
        return info.frames_processed

    def assert_flowing(self, since: int, more: int = 3) -> None:
        """The publisher's frames keep being processed (and its session still exists)."""
        wait_until(lambda: self.frames() > since + more, timeout=10)
        assert self.server.sessions[self.publisher.session_id].connection_state == "connected"

    def forget(self, reply: Reply) -> None:
        """DELETE a session a fuzzed request happened to create (keeps max_sessions free)."""
        location = reply.headers.get("location")
        if reply.status == 201 and location:
            path = urllib.parse.urlsplit(location).path
            assert request(self.port, "DELETE", path).status == 200


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    srv = WhipServer(
        port=0, max_sessions=32, connect_timeout=600.0, media_timeout=60.0, rate_limit=0
    )
    srv.start()
    publisher = BackgroundPublisher(srv.whip_url)
    try:
        publisher.start()
        created = check_reply(request(srv.port, "POST", "/whip", {"Content-Type": SDP}, BASE_OFFER))
        assert created.status == 201, created.body
        live = Live(
            srv,
            publisher,
            created.headers["location"].rsplit("/", 1)[1],
            created.headers["etag"],
            "0MvV",
        )
        wait_until(lambda: live.frames() > 3, timeout=10)
        yield live
    finally:
        publisher.stop()
        srv.stop()
        print(
            f"\nfuzz: {sum(v for k, v in SEEN.items() if k.isdigit())} requests, "
            f"statuses {dict(sorted(SEEN.items()))}"
        )


# -- strategies ---------------------------------------------------------------------------
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=25,
)
CLASS_TYPES = sorted(NODE_CLASS_MAPPINGS)
HOSTILE_CLASS_TYPES = ["__import__", "eval", "exec", "os.system", "__class__", "", "LoadImage"]
INPUT_NAMES = sorted(
    {
        name
        for cls in NODE_CLASS_MAPPINGS.values()
        for part in ("required", "optional")
        for name in (cls.INPUT_TYPES().get(part) or {})
    }
)


@st.composite
def prompt_graphs(draw: st.DrawFn) -> Any:
    """API-format-shaped graphs: real class types and input names, random values and links."""
    ids = draw(st.lists(st.sampled_from([str(i) for i in range(1, 9)] + ["x", ""]), max_size=6))
    graph: dict[str, Any] = {}
    for node_id in ids:
        inputs = draw(
            st.dictionaries(
                st.sampled_from(INPUT_NAMES) | st.text(max_size=8),
                json_scalars
                | st.tuples(st.sampled_from(ids or ["1"]) | st.integers(), st.integers(-2, 3)).map(
                    list
                )
                | json_values,
                max_size=5,
            )
        )
        node: Any = {
            "class_type": draw(st.sampled_from(CLASS_TYPES + HOSTILE_CLASS_TYPES) | st.text()),
            "inputs": inputs,
        }
        if draw(st.booleans()):
            node = draw(st.sampled_from([node, [node], None, "node", {"inputs": inputs}]))
        graph[node_id] = node
    shape = draw(st.sampled_from(["graph", "chain", "wrapped", "ui"]))
    if shape == "chain":
        return [graph, graph]
    if shape == "wrapped":
        return {"prompt": graph, "client_id": "fuzz"}
    if shape == "ui":
        return {"nodes": [graph], "links": []}
    return graph


prompt_bodies = st.one_of(
    prompt_graphs().map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=300),
    st.binary(max_size=300),
)


@st.composite
def mutated_offers(draw: st.DrawFn) -> str:
    """The base offer with lines dropped, duplicated, swapped, edited or inserted, or cut."""
    lines = list(BASE_OFFER_LINES)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["drop", "dup", "swap", "insert", "edit", "cut"]))
        i = draw(st.integers(0, len(lines) - 1)) if lines else 0
        if not lines:
            lines.append(draw(st.sampled_from(ODD_SDP_LINES)))
        elif op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "insert":
            lines.insert(i, draw(st.sampled_from(ODD_SDP_LINES) | st.text(max_size=40)))
        elif op == "edit":
            lines[i] = lines[i][:2] + draw(st.text(max_size=30))
        else:
            lines = lines[:i]
    sep = draw(st.sampled_from(["\r\n", "\n", "\r"]))
    return sep.join(lines) + sep


sdp_bodies = st.one_of(
    mutated_offers(),
    st.lists(st.sampled_from(ODD_SDP_LINES) | st.text(max_size=60), max_size=20).map("\r\n".join),
    st.binary(max_size=1500),
    st.text(max_size=1500),
)

candidate_lines = st.builds(
    lambda foundation, component, proto, prio, host, port, typ, extra: (
        f"a=candidate:{foundation} {component} {proto} {prio} {host} {port} typ {typ}{extra}"
    ),
    st.text("abcdef0123456789", max_size=12),
    st.sampled_from(["1", "2", "0", "-1", "257", "x", "99999999999999999999"]),
    st.sampled_from(["udp", "UDP", "tcp", "sctp", "", "x"]),
    st.sampled_from(["2130706431", "0", "-5", "1e9", "4294967296", "x"]),
    st.sampled_from(["127.0.0.1", "::1", "999.0.0.1", "not-an-ip", "127.0.0.1.1", "[::1]"]),
    st.sampled_from(["1", "9", "7", "0", "65535", "65536", "-1", "x"]),
    st.sampled_from(["host", "srflx", "relay", "prflx", "bogus", ""]),
    st.sampled_from(
        ["", " generation 0", " tcptype active", " raddr 127.0.0.1 rport x", " generation", " x"]
    ),
)
fragment_lines = st.one_of(
    candidate_lines,
    st.sampled_from(
        [
            "a=ice-ufrag:0MvV",
            "a=ice-pwd:ZSDKeahYpHFmC7FHu0eZUv",
            "a=ice-ufrag:other",
            "a=ice-ufrag:",
            "a=end-of-candidates",
            "m=audio 9 UDP/TLS/RTP/SAVPF 0",
            "m=video x",
            "a=mid:0",
            "a=mid:7",
            "a=mid:",
            "a=ice-options:trickle",
            "a=candidate:",
            "c=IN IP4 0.0.0.0",
            "garbage",
            "A=candidate:1",
        ]
    ),
    st.text(max_size=40),
)
fragment_bodies = st.one_of(
    st.lists(fragment_lines, max_size=10).map(lambda lines: "\r\n".join(lines) + "\r\n"),
    st.binary(max_size=500),
)

header_names = st.text(
    alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    min_size=1,
    max_size=30,
).filter(lambda n: n.lower() not in ("content-length", "transfer-encoding", "host", "connection"))
header_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200),
    st.binary(max_size=100).map(lambda b: bytes(c for c in b if c not in b"\r\n\x00")),
)
path_segments = st.one_of(
    st.text(max_size=40).map(lambda s: urllib.parse.quote(s, safe="")),
    st.sampled_from(["..", "%2e%2e", "%2F", "a%2Fb", ".", "%00", "%ff%fe", "~", "*", ";x=1"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=100, max_size=600),
)
queries = st.one_of(
    st.just(""),
    st.dictionaries(
        st.sampled_from(["channelId", "sessionId", "prompts", "width", "x"]) | st.text(max_size=8),
        st.text(max_size=60),
        max_size=4,
    ).map(lambda q: "?" + urllib.parse.urlencode(q)),
    st.text(alphabet="?&=%;/:@abc01", max_size=40).map(lambda q: "?" + q),
)
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND", "X"]
PREFIXES = [
    "/whip/",
    "/whep/",
    "/whep/default/",
    "/preview/",
    "/stream/",
    "/whip-stats/",
    "/prompts/",
    "/static/",
    "/",
]
SUFFIXES = ["", ".jpg", "/stats", "/events", "/", "/x/y"]
CONTENT_TYPES = [SDP, FRAG, JSON, "text/plain", "", "application/sdp; charset=utf-8", "x/y"]


# -- property tests -------------------------------------------------------------------------
def test_post_whip_random_offers(live: Live) -> None:
    """POST /whip: mutated real offers, SDP-like line soup, random text and bytes."""
    before = live.frames()

    @settings(FUZZ, max_examples=150)
    @given(body=sdp_bodies, content_type=st.sampled_from(CONTENT_TYPES), query=queries)
    def run(body: str | bytes, content_type: str, query: str) -> None:
        headers = {"Content-Type": content_type} if content_type else {}
        reply = check_reply(
            request(live.port, "POST", "/whip" + query, headers, body), what="POST /whip"
        )
        assert reply.status in (201, 400, 413, 415, 422), reply.body
        live.forget(reply)

    run()
    live.assert_flowing(before)


def test_patch_random_fragments(live: Live) -> None:
    """PATCH /whip/{id}: trickle fragments with broken candidates, restarts, junk, bad ETags."""
    before = live.frames()

    @settings(FUZZ, max_examples=150)
    @given(
        body=fragment_bodies,
        content_type=st.sampled_from([FRAG, FRAG, FRAG, SDP, "", "text/plain"]),
        if_match=st.sampled_from([None, "*", "etag", '"0"', "", 'W/"x"', "a, *"]),
        target=st.sampled_from(["dummy", "dummy", "dummy", "random"]),
        random_id=path_segments,
    )
    def run(
        body: str | bytes, content_type: str, if_match: str | None, target: str, random_id: str
    ) -> None:
        headers: dict[str, str | bytes] = {"Content-Type": content_type} if content_type else {}
        if if_match is not None:
            headers["If-Match"] = live.dummy_etag if if_match == "etag" else if_match
        session = live.dummy_id if target == "dummy" else random_id
        reply = check_reply(
            request(live.port, "PATCH", f"/whip/{session}", headers, body), what="PATCH"
        )
        assert reply.status in (204, 400, 404, 405, 412, 415, 422), reply.body
        if reply.status == 204:
            assert not reply.body and "etag" not in reply.headers

    run()
    assert live.dummy_id in live.server.sessions  # still there: PATCH never ends a session
    live.assert_flowing(before)


def test_any_method_any_path(live: Live) -> None:
    """Every method on odd resource paths (ids, WHEP, previews, stats) with odd queries."""
    before = live.frames()

    @settings(FUZZ, max_examples=150)
    @given(
        method=st.sampled_from(METHODS),
        prefix=st.sampled_from(PREFIXES),
        segment=path_segments,
        suffix=st.sampled_from(SUFFIXES),
        query=queries,
        content_type=st.sampled_from(CONTENT_TYPES),
        body=st.one_of(st.just(b""), st.binary(max_size=200), json_values.map(json.dumps)),
    )
    def run(
        method: str,
        prefix: str,
        segment: str,
        suffix: str,
        query: str,
        content_type: str,
        body: bytes | str,
    ) -> None:
        target = prefix + segment + suffix + query
        headers = {"Content-Type": content_type} if content_type else {}
        # long segments may push the request line past aiohttp's 8190 bytes: parser 400/414
        reply = request(live.port, method, target, headers, body)
        if prefix == "/static/" and reply.status in (403, 404) and not reply.problem:
            # aiohttp's static files answer a missing file from FileResponse.prepare(), after
            # every middleware: an empty 404. The page's files are not part of the API.
            SEEN["static"] += 1
            return
        check_reply(
            reply,
            parser_ok=len(target) > 60_000 or method == "X",  # llhttp knows method names
            what=f"{method} {target[:80]}",
        )
        assert reply.status != 201, "a random path created something"

    run()
    assert live.dummy_id in live.server.sessions
    live.assert_flowing(before)


def test_prompt_json_on_every_prompt_endpoint(live: Live) -> None:
    """Prompt-shaped and random JSON to POST /prompts, /prompt, /offer and POST /whip?prompts=.

    Valid prompts go to a channel nobody publishes on, so the live session is not slowed
    down by whatever hypothesis builds.
    """
    before = live.frames()

    @settings(FUZZ, max_examples=150)
    @given(
        body=prompt_bodies,
        where=st.sampled_from(["prompts", "prompt", "offer", "whip-query", "session"]),
    )
    def run(body: str | bytes, where: str) -> None:
        port = live.port
        if where == "prompts":
            reply = request(port, "POST", "/prompts?channelId=fuzz", {"Content-Type": JSON}, body)
        elif where == "prompt":
            reply = request(port, "POST", "/prompt?channelId=fuzz", {"Content-Type": JSON}, body)
        elif where == "session":  # a session id nobody has: 404 after validation, or 400
            reply = request(port, "POST", "/prompts?sessionId=nobody", {"Content-Type": JSON}, body)
        elif where == "offer":
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
            payload = '{"offer": {"sdp": "v=0\\r\\n", "type": "offer"}, "prompts": ' + text + "}"
            reply = request(port, "POST", "/offer?channelId=fuzz", {"Content-Type": JSON}, payload)
        else:
            text = body.decode("latin-1") if isinstance(body, bytes) else body
            query = urllib.parse.urlencode({"prompts": text[:2000], "channelId": "fuzz"})
            reply = request(port, "POST", "/whip?" + query, {"Content-Type": SDP}, "v=0\r\n")
        check_reply(reply, what=f"prompt via {where}")
        assert reply.status in (200, 400, 404, 413, 415), reply.body
        if where == "whip-query":
            assert reply.status == 400  # a bad prompt, or else the SDP "v=0" without media

    run()
    live.assert_flowing(before)


def test_random_headers(live: Live) -> None:
    """Random header names and values (Authorization, If-Match, Origin, ... included)."""
    before = live.frames()
    special = st.sampled_from(
        ["Authorization", "If-Match", "Origin", "Access-Control-Request-Method", "Accept"]
    )

    @settings(FUZZ, max_examples=100)
    @given(
        method=st.sampled_from(["POST", "OPTIONS", "PATCH", "DELETE", "GET"]),
        path=st.sampled_from(["/whip", "/whip/nobody", "/prompts", "/whep", "/whip-stats"]),
        headers=st.lists(st.tuples(special | header_names, header_values), max_size=8),
    )
    def run(method: str, path: str, headers: list[tuple[str, str | bytes]]) -> None:
        body = "v=0\r\n" if method in ("POST", "PATCH") else ""
        reply = check_reply(
            request(live.port, method, path, headers, body), parser_ok=True, what="headers"
        )
        assert reply.status != 201

    run()
    live.assert_flowing(before)


def test_raw_request_lines(live: Live) -> None:
    """Bytes that are barely HTTP: aiohttp's parser answers 400 itself, nothing reaches a
    handler half-parsed, and the server keeps serving."""
    before = live.frames()
    method = st.sampled_from(METHODS) | st.binary(min_size=1, max_size=10)
    target = st.sampled_from(["/whip", "*", "http://x/whip", "whip", "//whip"]) | st.binary(
        max_size=40
    )
    version = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b""])

    @settings(FUZZ, max_examples=100)
    @given(method=method, target=target, version=version, tail=st.binary(max_size=60))
    def run(method: str | bytes, target: str | bytes, version: bytes, tail: bytes) -> None:
        line = encode(method) + b" " + encode(target) + b" " + version
        data = line + b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + tail + b"\r\n\r\n"
        try:
            reply = raw_request(live.port, data)
        except (http.client.HTTPException, ConnectionError):
            SEEN["closed"] += 1  # aiohttp may close a connection it cannot frame at all
            return
        check_reply(reply, parser_ok=True, what=f"raw {data[:60]!r}")

    run()
    assert check_reply(request(live.port, "GET", "/health")).status == 200
    live.assert_flowing(before)


# -- the hand-written corpus ----------------------------------------------------------------
def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _graph(**inputs: Any) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadTensor", "inputs": {}},
        "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], **inputs}},
        "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
    }


UI_WORKFLOW = {
    "last_node_id": 2,
    "nodes": [{"id": 1, "type": "LoadImage"}, {"id": 2, "type": "PreviewImage"}],
    "links": [[1, 1, 0, 2, 0, "IMAGE"]],
}
CYCLE = {
    "1": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveTensor", "inputs": {"images": ["2", 0]}},
}
MANY_NODES = {str(i): {"class_type": "ImageInvert", "inputs": {}} for i in range(5000)}
NON_UTF8 = BASE_OFFER.encode()[:40] + b"\xff\xfe\xc3\x28" + BASE_OFFER.encode()[40:]
BIG_INT = "1" + "0" * 5000


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    body: str | bytes = b""
    content_type: str | None = None
    statuses: tuple[int, ...] = (400,)
    detail: str | tuple[str, ...] = ""
    """A substring (or alternatives) the problem's detail must contain, case-insensitive."""
    extra_headers: tuple[tuple[str, str], ...] = ()
    parser: bool = False
    """aiohttp's parser answers (text/plain) before any handler: the detail is in the body."""


def _prompt_case(name: str, body: Any, detail: str, statuses: tuple[int, ...] = (400,)) -> Case:
    text = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return Case(name, "POST", "/prompts?channelId=corpus", text, JSON, statuses, detail)


CORPUS = [
    # -- SDP offers -----------------------------------------------------------------------
    Case("empty offer", "POST", "/whip", "", SDP, detail="empty"),
    Case("whitespace offer", "POST", "/whip", " \r\n\t", SDP, detail="empty"),
    Case(
        "truncated offer (first 3 lines)",
        "POST",
        "/whip",
        "\r\n".join(BASE_OFFER_LINES[:3]),
        SDP,
        detail="no audio or video",
    ),
    Case(
        "truncated offer (cut mid media)",
        "POST",
        "/whip",
        BASE_OFFER[: len(BASE_OFFER) // 3],
        SDP,
        detail="SDP offer",
    ),
    Case(
        "truncated offer (cut mid line)", "POST", "/whip", BASE_OFFER[:250], SDP, detail="SDP offer"
    ),
    Case(
        "giant offer", "POST", "/whip", "v=0\r\n" + "a=x:" + "y" * 300_000, SDP, (413,), "too large"
    ),
    Case("non-UTF-8 offer", "POST", "/whip", NON_UTF8, SDP, detail="UTF-8"),
    Case(
        "NUL bytes in offer",
        "POST",
        "/whip",
        BASE_OFFER.replace("s=-", "s=\x00-"),
        SDP,
        detail="NUL",
    ),
    Case("not SDP at all", "POST", "/whip", "<html>hello</html>", SDP, detail="v=0"),
    Case("JSON instead of SDP", "POST", "/whip", '{"sdp": "v=0"}', SDP, detail="v=0"),
    Case(
        "wrong content type", "POST", "/whip", BASE_OFFER, "text/plain", (415,), "application/sdp"
    ),
    Case("no content type", "POST", "/whip", BASE_OFFER, None, (415,), "application/sdp"),
    Case(
        "recvonly offer",
        "POST",
        "/whip",
        BASE_OFFER.replace("a=sendonly", "a=recvonly"),
        SDP,
        (422,),
        "recvonly",
    ),
    Case(
        "two video sections",
        "POST",
        "/whip",
        BASE_OFFER + "\r\n".join(BASE_OFFER_LINES[6:32]) + "\r\n",
        SDP,
        (422,),
        "video",
    ),
    Case(
        "no common codec",
        "POST",
        "/whip",
        BASE_OFFER.replace("VP8/90000", "VP9/90000")
        .replace("H264/90000", "AV1/90000")
        .replace("opus/48000/2", "foo/1")
        .replace("PCMU/8000", "bar/1")
        .replace("PCMA/8000", "baz/1"),
        SDP,
        (400, 422),
        "codec",
    ),
    Case(
        "no ICE credentials",
        "POST",
        "/whip",
        "\r\n".join(x for x in BASE_OFFER_LINES if not x.startswith("a=ice-")) + "\r\n",
        SDP,
        detail="ICE",
    ),
    Case(
        "no DTLS fingerprint",
        "POST",
        "/whip",
        "\r\n".join(x for x in BASE_OFFER_LINES if not x.startswith("a=fingerprint")) + "\r\n",
        SDP,
        detail="fingerprint",
    ),
    *(
        Case(f"refused late: {name}", "POST", "/whip", body, SDP, detail="SDP offer")
        for name, body in LATE_REFUSALS.items()
    ),
    Case("bad media line", "POST", "/whip", "v=0\r\nm=video\r\n", SDP, detail="media line"),
    Case("bad media port", "POST", "/whip", "v=0\r\nm=video x RTP/AVP 0\r\n", SDP, detail="port"),
    Case(
        "prompts query with a 5000-digit number",
        "POST",
        f"/whip?prompts={BIG_INT}",
        "v=0\r\n",
        SDP,
        detail="prompts",
    ),
    Case(
        "prompts query that is a file path",
        "POST",
        "/whip?prompts=" + urllib.parse.quote(json.dumps("/etc/hostname")),
        "v=0\r\n",
        SDP,
        detail="prompts",
    ),
    Case("prompts query not JSON", "POST", "/whip?prompts=%7Bnope", "v=0\r\n", SDP, detail="JSON"),
    # -- HTTP framing aiohttp refuses itself ------------------------------------------------
    Case(
        "huge header (100 kB)",
        "GET",
        "/whip",
        extra_headers=(("X-Big", "a" * 100_000),),
        statuses=(400, 431),
        parser=True,
        detail="8190",
    ),
    Case(
        "header with NUL",
        "GET",
        "/whip",
        extra_headers=(("X-Nul", "a\x00b"),),
        statuses=(400,),
        parser=True,
        detail="header",
    ),
    Case(
        "request target over 64 kB",
        "DELETE",
        "/whip/" + "a" * 100_000,
        statuses=(400, 404, 414),  # aiohttp's C parser checks the length only across reads
        parser=True,
        detail=("Got more than", "no WHIP"),
    ),
    # -- odd resource ids -------------------------------------------------------------------
    Case("very long id", "DELETE", "/whip/" + "a" * 4000, statuses=(404,), detail="no WHIP"),
    Case(
        "unicode id",
        "DELETE",
        "/whip/" + urllib.parse.quote("ß☃𝄞" * 20),
        statuses=(404,),
        detail="no WHIP",
    ),
    Case(
        "WHIP offer whose audio m= line is lost",
        "POST",
        "/whip",
        "\r\n".join(MERGED_SECTIONS) + "\r\n",
        SDP,
        detail="SDP offer",
    ),
    Case(
        "WHEP offer whose audio m= line is lost",
        "POST",
        "/whep/default",
        MERGED_VIEWER_OFFER,
        SDP,
        detail="SDP offer",
    ),
    Case("WHEP offer that is not SDP", "POST", "/whep/default", "hello", SDP, detail="v=0"),
    Case(
        "WHEP offer that sends (sendonly)",
        "POST",
        "/whep/default",
        BASE_OFFER,
        SDP,
        (400, 422),
        "video section",
    ),
    Case("static folder itself", "GET", "/static/", statuses=(403, 404), detail="/static/"),
    Case("encoded slash in id", "DELETE", "/whip/a%2Fb", statuses=(404,), detail="no WHIP"),
    Case(
        "dot-dot id",
        "PATCH",
        "/whip/..",
        "a=end-of-candidates\r\n",
        FRAG,
        (404,),
        "no WHIP",
    ),
    Case("encoded dot-dot id", "DELETE", "/whip/%2e%2e", statuses=(404,), detail="no WHIP"),
    Case("NUL in id (encoded)", "DELETE", "/whip/a%00b", statuses=(404,), detail="no WHIP"),
    Case(
        "id of a session that never existed (PATCH)",
        "PATCH",
        "/whip/" + "A" * 22,
        "a=end-of-candidates\r\n",
        FRAG,
        (404,),
        "no WHIP",
    ),
    Case(
        "unknown WHEP viewer", "DELETE", "/whep/default/nobody", statuses=(404,), detail="no WHEP"
    ),
    Case("preview of nobody", "GET", "/preview/nobody.jpg", statuses=(404,), detail="nobody"),
    Case("stats of nobody", "GET", "/stream/nobody/stats", statuses=(404,), detail="nobody"),
    Case("events of nobody", "GET", "/whip/nobody/events", statuses=(404,), detail="nobody"),
    # -- trickle fragments (PATCH on the dummy session: {dummy} is filled in) ---------------
    Case("fragment: not SDP", "PATCH", "{dummy}", "hello world\r\n", FRAG, detail="not an SDP"),
    Case("fragment: empty", "PATCH", "{dummy}", "", FRAG, detail="empty"),
    Case(
        "fragment: non-UTF-8", "PATCH", "{dummy}", b"a=candidate:\xff\xfe\r\n", FRAG, detail="UTF-8"
    ),
    Case(
        "fragment: mid outside a media section",
        "PATCH",
        "{dummy}",
        "a=mid:0\r\n",
        FRAG,
        detail="a=mid",
    ),
    Case(
        "fragment: conflicting ufrags",
        "PATCH",
        "{dummy}",
        "a=ice-ufrag:0MvV\r\na=ice-ufrag:zzzz\r\n",
        FRAG,
        detail="conflicting",
    ),
    Case(
        "fragment: ICE restart",
        "PATCH",
        "{dummy}",
        "a=ice-ufrag:new1\r\na=ice-pwd:newpasswordnewpassword\r\n",
        FRAG,
        (422,),
        "restart",
    ),
    Case(
        "fragment: broken candidates are dropped",
        "PATCH",
        "{dummy}",
        "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=ice-ufrag:0MvV\r\n"
        "a=candidate:x\r\na=candidate:1 1 udp 1 999.0.0.1 9 typ host\r\n"
        "a=candidate:1 1 udp 1 127.0.0.1 99999 typ host\r\n"
        "a=candidate:1 1 sctp 1 127.0.0.1 9 typ host\r\n"
        "a=candidate:1 1 udp 1 127.0.0.1 9 typ bogus\r\n",
        FRAG,
        (204,),
    ),
    Case(
        "fragment: wrong content type",
        "PATCH",
        "{dummy}",
        "a=end-of-candidates\r\n",
        SDP,
        (415,),
        "trickle-ice-sdpfrag",
    ),
    Case(
        "fragment: stale If-Match",
        "PATCH",
        "{dummy}",
        "a=end-of-candidates\r\n",
        FRAG,
        (412,),
        "If-Match",
        extra_headers=(("If-Match", '"0000000000000000"'),),
    ),
    Case(
        "fragment: giant",
        "PATCH",
        "{dummy}",
        "a=candidate:" + "1" * 200_000,
        FRAG,
        (413,),
        "too large",
    ),
    # -- prompt JSON ------------------------------------------------------------------------
    _prompt_case("prompt nested 10k levels", _nested(10_000), "depth"),
    _prompt_case(
        "prompt nested 10k levels in objects", '{"a":' * 10_000 + "1" + "}" * 10_000, "depth"
    ),
    _prompt_case(
        "prompt nested 500 levels (parses, then fails)",
        {"1": {"class_type": "ImageInvert", "inputs": {"image": json.loads(_nested(500))}}},
        "node 1",
    ),
    _prompt_case("prompt huge (2 MB)", json.dumps({"x": "y" * 2_000_000}), "too large", (413,)),
    _prompt_case("prompt with 5000 nodes", MANY_NODES, "at most"),
    _prompt_case("prompt cyclic links", CYCLE, "cycle"),
    _prompt_case(
        "prompt link to a missing node",
        {"3": {"class_type": "SaveTensor", "inputs": {"images": ["9", 0]}}},
        "does not exist",
    ),
    _prompt_case(
        "prompt link to a missing output",
        {
            "1": {"class_type": "LoadTensor", "inputs": {}},
            "3": {"class_type": "SaveTensor", "inputs": {"images": ["1", 7]}},
        },
        "output",
    ),
    _prompt_case("prompt wrong-typed literal", _graph(blur_radius="big", sigma=1.0), "blur_radius"),
    _prompt_case("prompt out-of-range literal", _graph(blur_radius=10_000, sigma=1.0), "above max"),
    _prompt_case(
        "prompt NaN literal",
        '{"1": {"class_type": "LoadTensor", "inputs": {}}, '
        '"2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], '
        '"blur_radius": 1, "sigma": NaN}}, "3": {"class_type": "SaveTensor", '
        '"inputs": {"images": ["2", 0]}}}',
        "sigma",
    ),
    _prompt_case(
        "prompt 400-digit integer literal",
        '{"1": {"class_type": "LoadTensor", '
        '"inputs": {}}, "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], '
        f'"blur_radius": 1{"0" * 400}, "sigma": 1.0}}}}, "3": {{"class_type": '
        '"SaveTensor", "inputs": {"images": ["2", 0]}}}',
        "blur_radius",
    ),
    _prompt_case("prompt 5000-digit integer", '{"1": ' + BIG_INT + "}", "JSON"),
    _prompt_case("prompt in UI format", UI_WORKFLOW, "API format"),
    _prompt_case(
        "prompt class __import__",
        {"1": {"class_type": "__import__", "inputs": {}}},
        "unknown class_type",
    ),
    _prompt_case(
        "prompt class eval",
        {"1": {"class_type": "eval", "inputs": {"x": "1+1"}}},
        "unknown class_type",
    ),
    _prompt_case("prompt that is a file path", json.dumps("/etc/hostname"), "prompt"),
    _prompt_case(
        "prompt that is a JSON-encoded file path", json.dumps(json.dumps("/etc/hosts")), "prompt"
    ),
    _prompt_case("prompt that is a number", "42", "prompt"),
    _prompt_case("prompt empty object", {}, "empty"),
    _prompt_case("prompt empty list", [], "empty"),
    _prompt_case("prompt not JSON", "{'1': None}", "JSON"),
    _prompt_case("prompt non-UTF-8", b'{"1": "\xff"}', "UTF-8"),
    _prompt_case("prompt NUL", '{"1": "\x00"}', "JSON"),
    _prompt_case("prompt nodes are not objects", {"1": "LoadTensor", "2": [1, 2]}, "node 1"),
    _prompt_case(
        "prompt without an output node", {"1": {"class_type": "LoadTensor", "inputs": {}}}, "output"
    ),
    Case(
        "prompt with a wrong content type",
        "POST",
        "/prompts",
        "{}",
        "text/html",
        (415,),
        "application/json",
    ),
    Case(
        "prompt for an unknown session",
        "POST",
        "/prompts?sessionId=nobody",
        json.dumps(_graph(blur_radius=1, sigma=1.0)),
        JSON,
        (404,),
        "nobody",
    ),
    Case(
        "ComfyStream /offer with a nested prompt",
        "POST",
        "/offer?channelId=corpus",
        '{"offer": {"sdp": "v=0", "type": "offer"}, "prompts": ' + _nested(10_000) + "}",
        JSON,
        detail="depth",
    ),
    Case(
        "ComfyStream /offer with a 5000-digit number",
        "POST",
        "/offer?channelId=corpus",
        '{"offer": {"sdp": "v=0", "type": "offer"}, "x": ' + BIG_INT + "}",
        JSON,
        detail="JSON",
    ),
    Case("ComfyStream /offer without an offer", "POST", "/offer", "{}", JSON, detail="offer"),
    Case(
        "ComfyStream /prompt in UI format",
        "POST",
        "/prompt?channelId=corpus",
        json.dumps(UI_WORKFLOW),
        JSON,
        detail="API format",
    ),
]


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_hostile_corpus(live: Live, case: Case) -> None:
    before = live.frames()
    path = f"/whip/{live.dummy_id}" if case.path == "{dummy}" else case.path
    headers: list[tuple[str, str]] = list(case.extra_headers)
    if case.content_type is not None:
        headers.append(("Content-Type", case.content_type))
    if case.method == "PATCH" and case.path == "{dummy}" and "If-Match" not in dict(headers):
        headers.append(("If-Match", live.dummy_etag))
    reply = check_reply(
        request(live.port, case.method, path, headers, case.body),
        parser_ok=case.parser,
        what=case.name,
    )
    assert reply.status in case.statuses, f"{case.name}: {reply.status} {reply.body[:300]!r}"
    if reply.status >= 400:
        problem = reply.problem
        message = problem["detail"] if problem is not None else reply.body.decode("latin-1")
        expected = (case.detail,) if isinstance(case.detail, str) else case.detail
        assert any(e.lower() in message.lower() for e in expected), f"{case.name}: {message}"
        assert len(message) < 4000, "an error message should not echo a giant input"
    live.forget(reply)
    live.assert_flowing(before, more=0)


def _loop_tasks(server: WhipServer) -> int:
    async def count() -> int:
        return len(asyncio.all_tasks())

    loop = server._loop
    assert loop is not None
    return asyncio.run_coroutine_threadsafe(count(), loop).result(5)


def test_refused_offers_leave_no_thread_or_task(live: Live) -> None:
    """An offer refused after aiortc fired "track" stops what the track started."""
    from helpers import server_threads

    threads, tasks = len(server_threads()), _loop_tasks(live.server)
    for _round in range(3):
        for name, body in LATE_REFUSALS.items():
            reply = check_reply(request(live.port, "POST", "/whip", {"Content-Type": SDP}, body))
            assert reply.status == 400, (name, reply.body)
    wait_until(lambda: len(server_threads()) <= threads, timeout=5)
    wait_until(lambda: _loop_tasks(live.server) <= tasks, timeout=5)


def test_body_arriving_in_pieces_is_read_whole(live: Live) -> None:
    """A body split over several TCP segments (as on any real network) is read to its end."""
    head = (
        b"POST /whip HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/sdp\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (live.port, len(BASE_OFFER))
    )
    body = BASE_OFFER.encode()
    with socket.create_connection(("127.0.0.1", live.port), timeout=SOCKET_TIMEOUT_S) as sock:
        sock.sendall(head + body[:100])
        for start in range(100, len(body), 700):
            time.sleep(0.05)  # the handler is already waiting for the rest
            sock.sendall(body[start : start + 700])
        response = http.client.HTTPResponse(sock, method="POST")
        response.begin()
        reply = Reply(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read(), 0.0
        )
    assert reply.status == 201, reply.body
    live.forget(reply)
