"""ice.py: Link header and trickle-ice-sdpfrag format/parse pairs, driven by case tables."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfywhip_nb.rtc.ice import (
    Candidate,
    IceServer,
    SdpFragError,
    candidate_from_sdpfrag_line,
    format_link_header,
    format_sdpfrag,
    ice_servers_from_env,
    parse_ice_server_arg,
    parse_link_header,
    parse_sdpfrag,
    redacted,
)

# --- Link header ---------------------------------------------------------------------------

CASES = [
    # (id, server, expected header values)
    ("stun", IceServer("stun:stun.example.net"), ['<stun:stun.example.net>; rel="ice-server"']),
    (
        "turn-password",
        IceServer("turn:turn.example.net?transport=udp", "user", "myPassword"),
        [
            '<turn:turn.example.net?transport=udp>; rel="ice-server"; username="user"; '
            'credential="myPassword"; credential-type="password"'
        ],
    ),
    (
        "quote-and-backslash",
        IceServer("turn:t:3478", "user", 'pa"ss\\word'),
        [
            '<turn:t:3478>; rel="ice-server"; username="user"; '
            'credential="pa\\"ss\\\\word"; credential-type="password"'
        ],
    ),
    ("semicolon-comma", IceServer("turns:t:5349", "a;b,c", "x;y=z,w"), None),
    ("base64-padding", IceServer("turn:t:3478", "1700000000:bob", "dGVzdA=="), None),
    ("equals-only", IceServer("turn:t", "u", "=="), None),
    ("empty-credential", IceServer("turn:t", "", ""), None),
    ("unicode", IceServer("turn:t", "ü", "päss ✓"), None),
    ("oauth", IceServer("turn:t", "u", "tok", credential_type="oauth"), None),
    (
        "two-urls",
        IceServer(("turn:t?transport=udp", "turn:t?transport=tcp"), "u", "p"),
        None,
    ),
]


@pytest.mark.parametrize(("server", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_link_header_round_trip(server: IceServer, expected: list[str] | None) -> None:
    values = format_link_header([server])
    if expected is not None:
        assert values == expected
    assert len(values) == len(server.urls)
    parsed = [s for v in values for s in parse_link_header(v)]
    assert parsed == [
        IceServer(u, server.username, server.credential, server.credential_type)
        for u in server.urls
    ]
    # Joined into one header with commas (what aiohttp/proxies may do) parses the same.
    assert parse_link_header(", ".join(values)) == parsed


@given(
    username=st.text(alphabet=st.characters(blacklist_characters="\r\n\x00")),
    credential=st.text(alphabet=st.characters(blacklist_characters="\r\n\x00")),
)
def test_link_header_round_trip_any_text(username: str, credential: str) -> None:
    server = IceServer("turn:t:3478", username, credential)
    (value,) = format_link_header([server])
    assert parse_link_header(value) == [server]


INVALID = [
    ("unterminated-quote", '<turn:t>; rel="ice-server"; credential="abc'),
    ("unterminated-escape", '<turn:t>; rel="ice-server"; credential="abc\\'),
    ("unterminated-bracket", '<turn:t; rel="ice-server"'),
    ("missing-brackets", 'turn:t; rel="ice-server"'),
    ("junk-after-value", '<turn:t>; rel="ice-server" junk'),
    ("empty-param-name", '<turn:t>; ="x"'),
    ("empty-token-value", '<turn:t>; rel="ice-server"; username='),
    ("bad-scheme", '<https://example.com/turn>; rel="ice-server"'),
    ("bad-credential-type", '<turn:t>; rel="ice-server"; credential-type="magic"'),
]


@pytest.mark.parametrize("value", [c[1] for c in INVALID], ids=[c[0] for c in INVALID])
def test_link_header_invalid(value: str) -> None:
    with pytest.raises(ValueError):
        parse_link_header(value)


def test_link_header_rfc9725_stun_turn_example() -> None:
    """RFC 9725 §4.6, "Example of a STUN/TURN servers configuration" (folded lines kept)."""
    headers = [
        '<stun:stun.example.net>; rel="ice-server"',
        '<turn:turn.example.net?transport=udp>; rel="ice-server";\r\n'
        '      username="user"; credential="myPassword"; credential-type="password"',
        '<turn:turn.example.net?transport=tcp>; rel="ice-server";\n'
        '      username="user"; credential="myPassword"; credential-type="password"',
        '<turns:turn.example.net?transport=tcp>; rel="ice-server";\n'
        '      username="user"; credential="myPassword"; credential-type="password"',
    ]
    servers = [s for h in headers for s in parse_link_header(h)]
    assert servers == [
        IceServer("stun:stun.example.net"),
        IceServer("turn:turn.example.net?transport=udp", "user", "myPassword"),
        IceServer("turn:turn.example.net?transport=tcp", "user", "myPassword"),
        IceServer("turns:turn.example.net?transport=tcp", "user", "myPassword"),
    ]
    assert [v for s in servers for v in format_link_header([s])] == [
        " ".join(h.split()) for h in headers
    ]


def test_link_header_rfc9725_extension_example_is_not_an_ice_server() -> None:
    """RFC 9725 §4.9, "Example of a WHIP protocol extension": other relations are skipped."""
    value = (
        "<https://whip.example.com/session/id/sse>;\n"
        '      rel="urn:ietf:params:whip:ext:example:server-sent-events", '
        "<stun:stun.example.net>; rel=ice-server"
    )
    assert parse_link_header(value) == [IceServer("stun:stun.example.net")]


def test_link_header_tolerances() -> None:
    value = (
        '<turn:a,b>; rel="other ice-server"; crossorigin; username=u; '
        'credential=YWJj==; rel="ignored-duplicate";, ,<stun:x>;rel="ICE-SERVER";'
    )
    assert parse_link_header(value) == [
        IceServer("turn:a,b", "u", "YWJj=="),
        IceServer("stun:x"),
    ]
    assert parse_link_header("") == []


def test_ice_server_validation_names_allowed_set_and_value() -> None:
    with pytest.raises(ValueError, match=r"stun, stuns, turn, turns.*'http://x'"):
        IceServer("http://x")
    with pytest.raises(ValueError):
        IceServer(())
    with pytest.raises(ValueError, match="CR, LF"):
        IceServer("turn:t", "u", "p\r\nSet-Cookie: x")
    assert IceServer(["stun:a", "stun:b"]) == IceServer(("stun:a", "stun:b"))


def test_to_rtc() -> None:
    rtc = IceServer("turn:t:3478", "u", "p").to_rtc()
    assert (rtc.urls, rtc.username, rtc.credential, rtc.credentialType) == (
        ["turn:t:3478"],
        "u",
        "p",
        "password",
    )


# --- configuration from env / CLI ----------------------------------------------------------


def test_ice_servers_from_env() -> None:
    env = {"COMFYWHIP_ICE_SERVERS": " stun:a:3478 ; turn:b:3478?transport=udp,user,c,r=d ;"}
    assert ice_servers_from_env(env) == [
        IceServer("stun:a:3478"),
        IceServer("turn:b:3478?transport=udp", "user", "c,r=d"),
    ]
    assert ice_servers_from_env({}) == []


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("stun:a:3478", IceServer("stun:a:3478")),
        ("turn:b:3478,user,pa,ss", IceServer("turn:b:3478", "user", "pa,ss")),
    ],
)
def test_parse_ice_server_arg(arg: str, expected: IceServer) -> None:
    assert parse_ice_server_arg(arg) == expected


@pytest.mark.parametrize("arg", ["turn:b,user", "", "http://x", "stun:"])
def test_parse_ice_server_arg_invalid(arg: str) -> None:
    with pytest.raises(ValueError):
        parse_ice_server_arg(arg)


def test_redaction_never_shows_the_credential() -> None:
    server = IceServer("turn:t:3478", "user", "s3cr3t")
    assert redacted(server) == "turn:t:3478 username=user credential=<redacted>"
    assert "s3cr3t" not in repr(server)
    assert redacted(IceServer("stun:s")) == "stun:s"


# --- trickle-ice-sdpfrag -------------------------------------------------------------------

RFC9725_TRICKLE_PATCH = (
    "a=group:BUNDLE 0 1\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    "a=mid:0\r\n"
    "a=ice-ufrag:EsAw\r\n"
    "a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n"
    "a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw"
    " network-id 1\r\n"
    "a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host generation 0 ufrag"
    " EsAw network-id 2\r\n"
    "a=candidate:473322822 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active generation 0"
    " ufrag EsAw network-id 1\r\n"
    "a=candidate:2154773085 1 tcp 1518214911 198.51.100.2 9 typ host tcptype active generation"
    " 0 ufrag EsAw network-id 2\r\n"
    "a=end-of-candidates\r\n"
)

RFC9725_RESTART_PATCH = (
    "a=ice-options:trickle ice2\n"
    "a=group:BUNDLE 0 1\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\n"
    "a=mid:0\n"
    "a=ice-ufrag:ysXw\n"
    "a=ice-pwd:vw5LmwG4y/e6dPP/zAP9Gp5k\n"
    "a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw"
    " network-id 1\n"
)

RFC9725_RESTART_RESPONSE = (
    "a=ice-lite\n"
    "a=ice-options:trickle ice2\n"
    "a=group:BUNDLE 0 1\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\n"
    "a=mid:0\n"
    "a=ice-ufrag:289b31b754eaa438\n"
    "a=ice-pwd:0b66f472495ef0ccac7bda653ab6be49ea13114472a5d10a\n"
    "a=candidate:1 1 udp 2130706431 198.51.100.1 39132 typ host\n"
    "a=end-of-candidates\n"
)


def test_sdpfrag_rfc9725_trickle_ice_example() -> None:
    """RFC 9725 §4.3.2, "Example of a Trickle ICE request and response"."""
    frag = parse_sdpfrag(RFC9725_TRICKLE_PATCH)
    assert (frag.ufrag, frag.pwd, frag.mid, frag.mids) == (
        "EsAw",
        "P2uYro0UCOQ4zxjKXaWCBui1",
        "0",
        ("0",),
    )
    assert frag.end_of_candidates and frag.invalid_candidates == 0
    assert len(frag.candidates) == 4 and {c.mid for c in frag.candidates} == {"0"}
    rtc = [c.to_rtc() for c in frag.candidates]
    assert all(r is not None for r in rtc)
    assert [(r.protocol, r.ip, r.port, r.tcpType, r.sdpMid) for r in rtc if r] == [
        ("udp", "192.0.2.1", 61764, None, "0"),
        ("udp", "198.51.100.2", 61765, None, "0"),
        ("tcp", "192.0.2.1", 9, "active", "0"),
        ("tcp", "198.51.100.2", 9, "active", "0"),
    ]


def test_sdpfrag_rfc9725_ice_restart_example() -> None:
    """RFC 9725 §4.3.3, "Example of an ICE restart request and response"."""
    request = parse_sdpfrag(RFC9725_RESTART_PATCH)
    assert (request.ufrag, request.pwd) == ("ysXw", "vw5LmwG4y/e6dPP/zAP9Gp5k")
    assert not request.end_of_candidates and len(request.candidates) == 1
    response = parse_sdpfrag(RFC9725_RESTART_RESPONSE)
    assert response.ufrag == "289b31b754eaa438" and response.end_of_candidates
    assert response.candidates == (
        Candidate("0", "1 1 udp 2130706431 198.51.100.1 39132 typ host"),
    )


SDPFRAG_CASES = [
    ("candidates-eoc", "u1", "p1", ["1 1 udp 2130706431 127.0.0.1 5000 typ host"], True, ["0"]),
    ("eoc-only", None, None, [], True, ["0"]),
    ("restart-no-candidates", "newU", "newP+/pwd", [], False, ["0"]),
    (
        "two-mids",
        "u",
        "p",
        [
            Candidate("0", "1 1 udp 1 10.0.0.1 1 typ host"),
            Candidate("1", "2 1 UDP 5 ::1 9 typ host"),
        ],
        False,
        ["0", "1"],
    ),
    (
        "srflx-raddr",
        "u",
        "p",
        ["3 1 udp 1694498815 203.0.113.9 61000 typ srflx raddr 10.0.0.2 rport 5000"],
        True,
        ["video0"],
    ),
]


@pytest.mark.parametrize(
    ("ufrag", "pwd", "candidates", "eoc", "mids"),
    [c[1:] for c in SDPFRAG_CASES],
    ids=[c[0] for c in SDPFRAG_CASES],
)
def test_sdpfrag_round_trip(
    ufrag: str | None, pwd: str | None, candidates: list, eoc: bool, mids: list[str]
) -> None:
    text = format_sdpfrag(ufrag, pwd, candidates, end_of_candidates=eoc, mids=mids)
    assert text.endswith("\r\n")
    frag = parse_sdpfrag(text)
    assert (frag.ufrag, frag.pwd, frag.end_of_candidates, frag.mids) == (
        ufrag,
        pwd,
        eoc,
        tuple(mids),
    )
    expected = [c if isinstance(c, Candidate) else Candidate(mids[0], c) for c in candidates]
    assert list(frag.candidates) == expected
    # LF-only line ends parse the same.
    assert parse_sdpfrag(text.replace("\r\n", "\n")) == frag


def test_sdpfrag_unusable_candidates_are_counted_not_raised() -> None:
    text = (
        "a=ice-ufrag:u\na=ice-pwd:p\nm=video 9 UDP/TLS/RTP/SAVPF 96\na=mid:0\n"
        "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\n"
        "a=candidate:garbage\n"
        "a=candidate:1 1 udp notanumber 127.0.0.1 5000 typ host\n"
        "a=candidate:1 1 sctp 1 127.0.0.1 5000 typ host\n"
        "a=candidate:1 1 udp 1 127.0.0.1 70000 typ host\n"
        "a=candidate:1 1 udp 1 127.0.0.1 5000 kind host\n"
    )
    frag = parse_sdpfrag(text)
    assert len(frag.candidates) == 1 and frag.invalid_candidates == 5


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("\r\n\r\n", "empty"),
        ("hello world", "line 1"),
        ("a=mid:0\nm=audio 9 RTP/AVP 0", "line 1"),
        ("m=audio\na=mid:0", "line 1: malformed m="),
        ("a=ice-ufrag:u\nm=audio 9 RTP/AVP 0\na=ice-ufrag:v", "line 3: conflicting"),
        ("a=ice-pwd:", "line 1: empty"),
        ("a=ice-ufrag:u\n<script>", "line 2"),
    ],
)
def test_sdpfrag_garbage_raises_naming_the_line(text: str, fragment: str) -> None:
    with pytest.raises(SdpFragError, match=fragment):
        parse_sdpfrag(text)
    assert issubclass(SdpFragError, ValueError)


def test_sdpfrag_session_level_candidate_and_full_offer() -> None:
    frag = parse_sdpfrag("a=candidate:1 1 udp 1 127.0.0.1 9 typ host\na=end-of-candidates")
    assert frag.candidates == (Candidate(None, "1 1 udp 1 127.0.0.1 9 typ host"),)
    assert frag.mid is None and frag.end_of_candidates


@pytest.mark.parametrize(
    "line",
    [
        "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
        "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
        "1 1 udp 2130706431 127.0.0.1 5000 typ host",
    ],
)
def test_candidate_from_sdpfrag_line_prefixes(line: str) -> None:
    candidate = candidate_from_sdpfrag_line(line, mid="0")
    assert candidate is not None
    assert (candidate.ip, candidate.port, candidate.sdpMid) == ("127.0.0.1", 5000, "0")


@pytest.mark.parametrize(
    "line",
    ["", "a=candidate:", "1 x udp 1 h 1 typ host", "1 1 udp 1 h p typ host", "1 1 udp 1 h 1 typ"],
)
def test_candidate_from_sdpfrag_line_rejects(line: str) -> None:
    assert candidate_from_sdpfrag_line(line) is None
