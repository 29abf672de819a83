"""ICE configuration: STUN/TURN servers and the ``Link`` header that carries them.

* STUN/TURN servers travel in ``Link: <turn:host?transport=udp>; rel="ice-server";
  username="u"; credential="p"; credential-type="password"`` headers (RFC 9725 §4.6,
  RFC 8288). ``format_link_header`` / ``parse_link_header`` are a pure pair; the parser splits
  each parameter on its first ``=`` and honours quoting, so base64 credentials ending in ``=``
  and credentials containing ``"``, ``\\``, ``;`` or ``,`` survive a round trip.
* Trickle ICE and ICE restarts travel in ``PATCH`` bodies of type
  ``application/trickle-ice-sdpfrag``; those fragments are SDP and live in ``sdp.py``.

This module imports no aiohttp; aiortc is imported lazily, only to build aiortc objects.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiortc import RTCIceServer

__all__ = [
    "ICE_SERVERS_ENV",
    "IceServer",
    "format_link_header",
    "ice_servers_from_env",
    "parse_ice_server_arg",
    "parse_link_header",
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
