"""ICE configuration and the two ICE wire formats WHIP uses.

* STUN/TURN servers travel in ``Link: <turn:host?transport=udp>; rel="ice-server";
  username="u"; credential="p"; credential-type="password"`` headers (RFC 9725 §4.6,
  RFC 8288). ``format_link_header`` / ``parse_link_header`` are a pure pair; the parser splits
  each parameter on its first ``=`` and honours quoting, so base64 credentials ending in ``=``
  and credentials containing ``"``, ``\\``, ``;`` or ``,`` survive a round trip.
* Trickle ICE and ICE restarts travel in ``PATCH`` bodies of type
  ``application/trickle-ice-sdpfrag`` (RFC 8840, RFC 9725 §4.3). ``parse_sdpfrag`` turns
  network input into a ``TrickleFragment`` and raises ``SdpFragError`` (a ``ValueError`` the
  server maps to 400) instead of asserting. Candidate lines that cannot be used are counted,
  not raised: RFC 9725 §4.3.2 says unusable candidates are silently discarded.

This module imports no aiohttp; aiortc is imported lazily, only to build aiortc objects.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiortc import RTCIceCandidate, RTCIceServer

__all__ = [
    "ICE_SERVERS_ENV",
    "Candidate",
    "IceServer",
    "SdpFragError",
    "TrickleFragment",
    "candidate_from_sdpfrag_line",
    "format_link_header",
    "format_sdpfrag",
    "ice_servers_from_env",
    "parse_ice_server_arg",
    "parse_link_header",
    "parse_sdpfrag",
    "redacted",
]

logger = logging.getLogger(__name__)

ICE_SERVERS_ENV = "COMFYWHIP_ICE_SERVERS"
ICE_URL_SCHEMES = ("stun", "stuns", "turn", "turns")
CREDENTIAL_TYPES = ("password", "oauth")
_FORBIDDEN_IN_HEADER = re.compile(r"[\x00\r\n]")


@dataclass(frozen=True)
class IceServer:
    """One STUN/TURN server, shaped like W3C ``RTCIceServer`` (and aiortc's copy of it)."""

    urls: tuple[str, ...] | str
    """RFC 7064/7065 URI(s), e.g. ``"turn:turn.example.net?transport=udp"``; a single string
    or a list is normalised to a tuple, so equal configurations compare equal."""
    username: str | None = None
    "TURN username (long-term credential mechanism)."
    credential: str | None = field(default=None, repr=False)
    "TURN password; kept out of ``repr`` so logging the object does not leak it."
    credential_type: str = "password"
    'How ``credential`` is used; RFC 9725 §4.6 default is ``"password"``.'

    def __post_init__(self) -> None:
        urls = (self.urls,) if isinstance(self.urls, str) else tuple(self.urls)
        if not urls:
            raise ValueError("IceServer needs at least one url")
        for url in urls:
            scheme, sep, rest = url.partition(":")
            if scheme.lower() not in ICE_URL_SCHEMES or not sep or not rest.strip():
                raise ValueError(
                    f"IceServer url scheme must be one of {', '.join(ICE_URL_SCHEMES)} "
                    f"followed by a host; got {url!r}"
                )
            if any(c in url for c in "<> \t") or _FORBIDDEN_IN_HEADER.search(url):
                raise ValueError(f"IceServer url must not contain '<', '>' or spaces: {url!r}")
        if self.credential_type not in CREDENTIAL_TYPES:
            raise ValueError(
                f"IceServer credential_type must be one of {', '.join(CREDENTIAL_TYPES)}; "
                f"got {self.credential_type!r}"
            )
        for name in ("username", "credential"):
            value = getattr(self, name)
            if value is not None and _FORBIDDEN_IN_HEADER.search(value):
                # CR/LF would let a configured value inject HTTP headers.
                raise ValueError(f"IceServer {name} must not contain CR, LF or NUL")
        object.__setattr__(self, "urls", urls)

    def to_rtc(self) -> RTCIceServer:
        """The aiortc equivalent, for ``RTCConfiguration(iceServers=[...])``."""
        from aiortc import RTCIceServer

        return RTCIceServer(
            urls=list(self.urls),
            username=self.username,
            credential=self.credential,
            credentialType=self.credential_type,
        )


def redacted(server: IceServer) -> str:
    """A log-safe description: the urls and username, never the credential."""
    text = " ".join(server.urls)
    if server.username is not None:
        text += f" username={server.username}"
    if server.credential is not None:
        text += " credential=<redacted>"
    return text


# --- Link header (RFC 8288 §3) -------------------------------------------------------------


def _quote(value: str) -> str:
    """RFC 9110 quoted-string: backslash-escape ``\\`` and ``"``."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_link_header(servers: Iterable[IceServer]) -> list[str]:
    """One ``Link`` header value per server URL (RFC 9725 §4.6 example shape)."""
    values = []
    for server in servers:
        params = ['rel="ice-server"']
        if server.username is not None:
            params.append(f"username={_quote(server.username)}")
        if server.credential is not None:
            params.append(f"credential={_quote(server.credential)}")
            params.append(f"credential-type={_quote(server.credential_type)}")
        for url in server.urls:
            values.append(f"<{url}>; " + "; ".join(params))
    return values


_WS = re.compile(r"[ \t\r\n]*")
_URI = re.compile(r"<([^>]*)>")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)
_NAME = re.compile(r"[^=;,\s]*")
_BARE = re.compile(r"[^;,\s]*")


class _LinkScanner:
    """Regex-driven scanner over one header value; errors name the offset."""

    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def fail(self, what: str) -> ValueError:
        return ValueError(f"malformed Link header at offset {self.pos}: {what}: {self.text!r}")

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def take(self, pattern: re.Pattern[str], error: str = "") -> str:
        match = pattern.match(self.text, self.pos)
        if match is None:
            raise self.fail(error)
        self.pos = match.end()
        return match.group(match.lastindex or 0)

    def param(self) -> tuple[str, str | None]:
        # Split on the FIRST '=' only: a bare base64 credential may end in '='.
        name = self.take(_NAME).lower()
        if not name:
            raise self.fail("empty parameter name")
        self.take(_WS)
        if self.peek() != "=":
            return name, None
        self.pos += 1
        self.take(_WS)
        if self.peek() == '"':
            quoted = self.take(_QUOTED, "unterminated quoted string")
            return name, re.sub(r"\\(.)", r"\1", quoted, flags=re.S)
        value = self.take(_BARE)
        if not value:
            raise self.fail(f"empty value for {name!r}")
        return name, value


def _parse_links(value: str) -> list[tuple[str, dict[str, str | None]]]:
    """All ``(uri, params)`` pairs of a (possibly comma-joined) Link header value."""
    scan = _LinkScanner(value)
    links: list[tuple[str, dict[str, str | None]]] = []
    scan.take(_WS)
    while scan.peek():
        if scan.peek() == ",":  # empty list elements are allowed by RFC 9110 §5.6.1
            scan.pos += 1
            scan.take(_WS)
            continue
        if scan.peek() != "<":
            raise scan.fail("expected '<'")
        uri = scan.take(_URI, "unterminated '<'").strip()
        params: dict[str, str | None] = {}
        scan.take(_WS)
        while scan.peek() == ";":
            scan.pos += 1
            scan.take(_WS)
            if scan.peek() in (";", ",", ""):
                continue
            name, pvalue = scan.param()
            params.setdefault(name, pvalue)  # RFC 8288 §3.3: later duplicates are ignored
            scan.take(_WS)
        if scan.peek() not in ("", ","):
            raise scan.fail("expected ';' or ','")
        links.append((uri, params))
    return links


def parse_link_header(value: str) -> list[IceServer]:
    """The ``rel="ice-server"`` links of a Link header value; other relations are ignored.

    Raises ``ValueError`` for malformed syntax or an ice-server link that is not a STUN/TURN URI.
    """
    servers = []
    for uri, params in _parse_links(value):
        rels = (params.get("rel") or "").lower().split()
        if "ice-server" not in rels:
            continue
        servers.append(
            IceServer(
                urls=uri,
                username=params.get("username"),
                credential=params.get("credential"),
                credential_type=params.get("credential-type") or "password",
            )
        )
    return servers


# --- configuration from the environment / CLI ---------------------------------------------


def parse_ice_server_arg(s: str) -> IceServer:
    """``URL[,username,credential]`` as given to ``--ice-server``; commas in the credential
    are kept (only the first two split)."""
    parts = s.strip().split(",", 2)
    if len(parts) == 1:
        return IceServer(urls=parts[0].strip())
    if len(parts) == 3:
        return IceServer(urls=parts[0].strip(), username=parts[1], credential=parts[2])
    raise ValueError(
        f"expected URL or URL,username,credential; got {parts[0]!r} with 1 extra field"
    )


def ice_servers_from_env(environ: Mapping[str, str] = os.environ) -> list[IceServer]:
    """``COMFYWHIP_ICE_SERVERS="stun:a:3478;turn:b:3478,user,cred"`` (``;`` separates entries,
    so a credential containing ``;`` must be given with ``--ice-server`` instead)."""
    raw = environ.get(ICE_SERVERS_ENV, "")
    return [parse_ice_server_arg(entry) for entry in raw.split(";") if entry.strip()]


# --- trickle-ice-sdpfrag (RFC 8840) --------------------------------------------------------


class SdpFragError(ValueError):
    """A PATCH body that is not a usable trickle-ice-sdpfrag; maps to HTTP 400."""


@dataclass(frozen=True)
class Candidate:
    """One ``a=candidate`` line of a fragment, tied to the media section it came from."""

    mid: str | None
    "The ``a=mid`` of the enclosing m= section, or None for a session-level line."
    sdp: str
    "The value after ``a=candidate:``, e.g. ``1 1 udp 2130706431 10.0.0.1 5000 typ host``."

    def to_rtc(self) -> RTCIceCandidate | None:
        """An aiortc candidate with ``sdpMid`` set, or None when the line is unusable."""
        return candidate_from_sdpfrag_line(self.sdp, mid=self.mid)


@dataclass(frozen=True)
class TrickleFragment:
    """What a trickle-ice-sdpfrag body says (RFC 8840 §4.4, RFC 9725 §4.3)."""

    ufrag: str | None
    "``a=ice-ufrag``; a value differing from the session's means an ICE restart (RFC 9725 §4.3.3)."
    pwd: str | None
    "``a=ice-pwd``."
    candidates: tuple[Candidate, ...]
    "Usable candidates, in body order."
    end_of_candidates: bool
    "Whether ``a=end-of-candidates`` appeared (session- or media-level)."
    mid: str | None
    "The first media section's ``a=mid`` (with max-bundle, the only one that carries ICE)."
    mids: tuple[str, ...] = ()
    "Every ``a=mid`` in body order."
    invalid_candidates: int = 0
    "Candidate lines dropped because they could not be parsed (RFC 9725: discard silently)."


_SDP_LINE = re.compile(r"^([a-z])=(.*)$")
_CANDIDATE_TYPES = ("host", "srflx", "prflx", "relay")


def candidate_from_sdpfrag_line(line: str, mid: str | None = None) -> RTCIceCandidate | None:
    """Parse ``a=candidate:...`` (prefixes optional) into an aiortc candidate, or None.

    aiortc's ``candidate_from_sdp`` checks its input with ``assert``; PATCH bodies come from
    the network, so its failure modes are caught here and turned into None.
    """
    from aiortc.sdp import candidate_from_sdp

    value = line.strip()
    for prefix in ("a=", "candidate:"):
        if value.startswith(prefix):
            value = value[len(prefix) :]
    bits = value.split()
    if len(bits) < 8 or bits[6] != "typ" or bits[7] not in _CANDIDATE_TYPES:
        return None
    if bits[2].lower() not in ("udp", "tcp"):
        return None
    try:
        candidate = candidate_from_sdp(value)
    except (AssertionError, ValueError, IndexError):
        return None
    if not 0 <= candidate.port <= 65535 or not 1 <= candidate.component <= 256:
        return None
    candidate.sdpMid = mid
    return candidate


def parse_sdpfrag(text: str) -> TrickleFragment:
    """Parse an ``application/trickle-ice-sdpfrag`` body (CRLF or LF line ends).

    Raises ``SdpFragError`` naming the line for anything that is not SDP, for ``a=mid`` outside
    an m= section, for conflicting ufrag/pwd values and for an empty body.
    """
    ice: dict[str, str] = {}
    sections: list[str | None] = []  # mid per m= section, filled by a=mid
    raw_candidates: list[tuple[int, str]] = []  # (section index or -1, value)
    end_of_candidates = False
    seen_content = False
    for number, raw in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        match = _SDP_LINE.match(line)
        if match is None:
            raise SdpFragError(f"line {number}: not an SDP line: {line[:80]!r}")
        seen_content = True
        kind, value = match.groups()
        if kind == "m":
            fields = value.split()
            if len(fields) < 3 or not fields[1].split("/")[0].isdigit():
                raise SdpFragError(f"line {number}: malformed m= line: {line[:80]!r}")
            sections.append(None)
            continue
        if kind != "a":
            continue  # c=, b=, v=, o= ... carry nothing ICE needs
        name, _, attr = value.partition(":")
        if name in ("ice-ufrag", "ice-pwd"):
            if not attr.strip():
                raise SdpFragError(f"line {number}: empty a={name}")
            previous = ice.setdefault(name, attr.strip())
            if previous != attr.strip():
                raise SdpFragError(f"line {number}: conflicting a={name} values")
        elif name == "mid":
            if not sections:
                raise SdpFragError(f"line {number}: a=mid outside an m= section")
            sections[-1] = attr.strip()
        elif name == "candidate":
            raw_candidates.append((len(sections) - 1, attr))
        elif name == "end-of-candidates":
            end_of_candidates = True
    if not seen_content:
        raise SdpFragError("empty trickle-ice-sdpfrag body")

    candidates = []
    invalid = 0
    for index, value in raw_candidates:
        mid = sections[index] if index >= 0 else None
        if candidate_from_sdpfrag_line(value, mid) is None:
            invalid += 1
            logger.debug("WHIP: dropping unusable candidate %r", value[:120])
            continue
        candidates.append(Candidate(mid=mid, sdp=" ".join(value.split())))
    mids = tuple(m for m in sections if m is not None)
    return TrickleFragment(
        ufrag=ice.get("ice-ufrag"),
        pwd=ice.get("ice-pwd"),
        candidates=tuple(candidates),
        end_of_candidates=end_of_candidates,
        mid=mids[0] if mids else None,
        mids=mids,
        invalid_candidates=invalid,
    )


def format_sdpfrag(
    ufrag: str | None,
    pwd: str | None,
    candidates: Iterable[Candidate | str],
    end_of_candidates: bool = False,
    mids: Sequence[str] = ("0",),
    *,
    kind: str = "audio",
    ice_options: str | None = None,
) -> str:
    """Build a trickle-ice-sdpfrag body (CRLF line ends), one m= section per mid.

    Plain strings and candidates without a mid go to the first section (with max-bundle the
    only one that carries ICE, RFC 9725 §4.3.2); candidates naming another mid get a section
    of their own. ``kind`` only fills the m= line, which receivers do not interpret.
    """
    order = list(mids) or ["0"]
    per_mid: dict[str, list[str]] = {m: [] for m in order}
    for item in candidates:
        if isinstance(item, str):
            item = Candidate(mid=None, sdp=item.removeprefix("a=").removeprefix("candidate:"))
        mid = item.mid if item.mid is not None else order[0]
        if mid not in per_mid:
            order.append(mid)
            per_mid[mid] = []
        per_mid[mid].append(item.sdp)
    lines = [f"a=ice-options:{ice_options}"] if ice_options else []
    for mid in order:
        lines += [f"m={kind} 9 UDP/TLS/RTP/SAVPF 0", f"a=mid:{mid}"]
        if ufrag is not None:
            lines.append(f"a=ice-ufrag:{ufrag}")
        if pwd is not None:
            lines.append(f"a=ice-pwd:{pwd}")
        lines += [f"a=candidate:{sdp}" for sdp in per_mid[mid]]
        if end_of_candidates:
            lines.append("a=end-of-candidates")
    return "\r\n".join(lines) + "\r\n"
