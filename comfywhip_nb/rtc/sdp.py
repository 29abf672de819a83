"""SDP in one place: summaries of offers and answers, and trickle-ice-sdpfrag fragments.

Every SDP the server reads comes from the network, and aiortc's parser checks its input with
``assert``; so what the server needs from an SDP is read here, by tolerant line parsers that
never raise on hostile input (``summarise``), or raise a typed ``SdpFragError``
(``parse_sdpfrag``, a ``ValueError`` the server maps to 400):

* ``summarise(sdp)``: media sections (kind, mid, direction, codecs, port), ICE credentials,
  candidate count and whether a DTLS fingerprint is there; ``offer_checks.py`` turns that into
  RFC 9725's 400/422 answers, egress reads the codec an answer chose from it;
* ``parse_sdpfrag`` / ``format_sdpfrag``: the ``PATCH`` bodies of trickle ICE and ICE restarts
  (RFC 8840, RFC 9725 §4.3). Candidate lines that cannot be used are counted, not raised:
  RFC 9725 §4.3.2 says unusable candidates are silently discarded;
* ``strip_candidates``: an offer for trickle ICE (no candidates; what a trickling client
  POSTs).

The inspector's line-by-line notes (``http/trace.py``) explain SDP; they parse nothing the
server acts on. This module imports no aiohttp; aiortc is imported lazily.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiortc import RTCIceCandidate

__all__ = [
    "Candidate",
    "MediaSection",
    "SdpFragError",
    "SdpSummary",
    "TrickleFragment",
    "candidate_from_sdpfrag_line",
    "format_sdpfrag",
    "parse_sdpfrag",
    "section_codec",
    "split_lines",
    "strip_candidates",
    "summarise",
]

logger = logging.getLogger(__name__)


# --- offers and answers ----------------------------------------------------------------------
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


@dataclass(frozen=True)
class MediaSection:
    kind: str
    """``audio``, ``video`` or ``application``."""
    mid: str | None
    direction: str
    """The offerer's direction (``sendrecv`` when the offer says nothing)."""
    codecs: tuple[str, ...]
    """Codec names from ``a=rtpmap`` lines, as offered."""
    port: int


@dataclass(frozen=True)
class SdpSummary:
    media: tuple[MediaSection, ...]
    ice_ufrag: str | None
    ice_pwd: str | None
    candidate_count: int
    has_fingerprint: bool = False
    """An ``a=fingerprint`` line is there (WebRTC media needs DTLS-SRTP)."""

    @property
    def has_video(self) -> bool:
        return any(m.kind == "video" for m in self.media)

    @property
    def has_audio(self) -> bool:
        return any(m.kind == "audio" for m in self.media)

    @property
    def wants_media_back(self) -> bool:
        """True when a media section is sendrecv (the publisher can receive processed video)."""
        return any(m.kind in ("audio", "video") and m.direction == "sendrecv" for m in self.media)


def split_lines(sdp: str) -> list[str]:
    """The non-empty lines of an SDP, stripped (CRLF or LF line ends)."""
    return [line.strip() for line in sdp.replace("\r\n", "\n").split("\n") if line.strip()]


def summarise(sdp: str) -> SdpSummary:
    """What an offer or answer says, read line by line; never raises on malformed input
    (a media line too short or with a bad port is skipped: ``offer_checks`` rejects those)."""
    lines = split_lines(sdp)
    session_direction = "sendrecv"
    session_ufrag = session_pwd = None
    sections: list[dict] = []
    candidates = 0
    for line in lines:
        key, value = line[0], line[2:]
        if key == "m":
            parts = value.split()
            if len(parts) < 4:
                continue
            try:
                port = int(parts[1].split("/")[0])
            except ValueError:
                continue
            sections.append(
                {
                    "kind": parts[0],
                    "port": port,
                    "direction": None,
                    "mid": None,
                    "codecs": [],
                    "ufrag": None,
                    "pwd": None,
                }
            )
            continue
        target = sections[-1] if sections else None
        if key != "a":
            continue
        name, _, rest = value.partition(":")
        if name in _DIRECTIONS:
            if target is None:
                session_direction = name
            else:
                target["direction"] = name
        elif name == "mid" and target is not None:
            target["mid"] = rest.strip()
        elif name == "rtpmap" and target is not None:
            fields = rest.split()
            if len(fields) >= 2:
                target["codecs"].append(fields[1].split("/")[0])
        elif name == "candidate":
            candidates += 1
        elif name == "ice-ufrag":
            if target is None:
                session_ufrag = rest.strip()
            else:
                target["ufrag"] = rest.strip()
        elif name == "ice-pwd":
            if target is None:
                session_pwd = rest.strip()
            else:
                target["pwd"] = rest.strip()

    media = tuple(
        MediaSection(
            kind=s["kind"],
            mid=s["mid"],
            direction=s["direction"] or session_direction,
            codecs=tuple(s["codecs"]),
            port=s["port"],
        )
        for s in sections
    )
    first = sections[0] if sections else {"ufrag": None, "pwd": None}
    return SdpSummary(
        media=media,
        ice_ufrag=first["ufrag"] or session_ufrag,
        ice_pwd=first["pwd"] or session_pwd,
        candidate_count=candidates,
        has_fingerprint=any(line.startswith("a=fingerprint:") for line in lines),
    )


def section_codec(sdp: str, mid: str | None = None) -> str | None:
    """The first codec (lower case, e.g. ``vp8``) of the section ``mid`` (default: the
    first media section): in an answer, the codec it chose."""
    for section in summarise(sdp).media:
        if (mid is None or section.mid == mid) and section.codecs:
            return section.codecs[0].lower()
    return None


def strip_candidates(sdp: str) -> str:
    """An offer for trickle ICE: no candidates, RFC 8840's placeholder port 9 / 0.0.0.0."""
    out = []
    for line in sdp.splitlines():
        if line.startswith(("a=candidate:", "a=end-of-candidates")):
            continue
        if line.startswith("m="):
            fields = line.split(" ")
            line = " ".join([fields[0], "9", *fields[2:]])
        elif line.startswith("c=IN "):
            line = "c=IN IP4 0.0.0.0"
        out.append(line)
        if line.startswith("t="):
            out.append("a=ice-options:trickle")
    return "\r\n".join(out) + "\r\n"


# --- trickle-ice-sdpfrag (RFC 8840) ----------------------------------------------------------


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
