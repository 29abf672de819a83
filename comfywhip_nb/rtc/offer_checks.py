"""Checks on a WHIP SDP offer before it reaches aiortc.

aiortc's SDP parser trusts its input (it uses ``assert``), while a POST body comes from the
network. This module reads just enough of the offer to give the RFC 9725 answers: 400 for
something that is not an SDP offer or has no media, 422 for an offer that cannot be ingested
(recvonly/inactive media, more than one audio or video track — RFC 9725 §4.2).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BadRequest, UnprocessableOffer

__all__ = ["MediaSection", "OfferSummary", "check_offer"]

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
class OfferSummary:
    media: tuple[MediaSection, ...]
    ice_ufrag: str | None
    ice_pwd: str | None
    candidate_count: int

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


def _split_lines(sdp: str) -> list[str]:
    return [line.strip() for line in sdp.replace("\r\n", "\n").split("\n") if line.strip()]


def check_offer(sdp: str, *, allow_sendrecv: bool = True) -> OfferSummary:
    """Return a summary of ``sdp`` or raise ``BadRequest``/``UnprocessableOffer``."""
    if not sdp.strip():
        raise BadRequest("empty SDP offer")
    if "\x00" in sdp:
        raise BadRequest("SDP offer contains NUL bytes")
    lines = _split_lines(sdp)
    if not lines[0].startswith("v="):
        raise BadRequest("malformed SDP offer: it must start with 'v=0'")
    for number, line in enumerate(lines, 1):
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise BadRequest(
                f"malformed SDP offer: line {number} is not '<type>=<value>': {line[:60]!r}"
            )

    session_direction = "sendrecv"
    session_ufrag = session_pwd = None
    sections: list[dict] = []
    candidates = 0
    for line in lines:
        key, value = line[0], line[2:]
        if key == "m":
            parts = value.split()
            if len(parts) < 4:
                raise BadRequest(f"malformed SDP offer: bad media line {line[:60]!r}")
            try:
                port = int(parts[1].split("/")[0])
            except ValueError:
                raise BadRequest(f"malformed SDP offer: bad port in {line[:60]!r}") from None
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
    av_media = [m for m in media if m.kind in ("audio", "video")]
    if not av_media:
        raise BadRequest("SDP offer has no audio or video media section")
    if not any(line.startswith("a=fingerprint:") for line in lines):
        # aiortc would answer 201 and then fail DTLS in a background task (an assert)
        raise BadRequest("SDP offer has no a=fingerprint line; WebRTC media needs DTLS-SRTP")
    for kind in ("audio", "video"):
        count = sum(1 for m in av_media if m.kind == kind)
        if count > 1:
            raise UnprocessableOffer(
                f"SDP offer has {count} {kind} sections; WHIP allows at most one {kind} track "
                "(RFC 9725 §4.2)"
            )
    for m in av_media:
        if m.direction in ("recvonly", "inactive"):
            raise UnprocessableOffer(
                f"the {m.kind} section (mid {m.mid}) is {m.direction}; a WHIP publisher must "
                "send media (sendonly)"
            )
        if m.direction == "sendrecv" and not allow_sendrecv:
            raise UnprocessableOffer(f"the {m.kind} section must be sendonly")
    first = sections[0]
    return OfferSummary(
        media=media,
        ice_ufrag=first["ufrag"] or session_ufrag,
        ice_pwd=first["pwd"] or session_pwd,
        candidate_count=candidates,
    )
