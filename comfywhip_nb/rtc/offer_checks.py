"""Checks on an SDP offer (WHIP publisher, WHEP viewer) before it reaches aiortc.

``sdp.py`` reads the offer; this module decides whether it is acceptable.

aiortc's SDP parser trusts its input (it uses ``assert``), while a POST body comes from the
network. This module reads just enough of the offer to give the RFC 9725 answers: 400 for
something that is not an SDP offer or has no media, 422 for an offer that cannot be ingested
(recvonly/inactive media, more than one audio or video track — RFC 9725 §4.2).
"""

from __future__ import annotations

from ..errors import BadRequest, UnprocessableOffer
from .sdp import SdpSummary, split_lines, summarise

__all__ = ["OfferSummary", "check_offer", "check_viewer_offer", "wants_audio"]

OfferSummary = SdpSummary
"""What the checks return: the offer's ``SdpSummary``."""


def check_offer(sdp: str, *, allow_sendrecv: bool = True) -> OfferSummary:
    """Return a summary of ``sdp`` or raise ``BadRequest``/``UnprocessableOffer``."""
    if not sdp.strip():
        raise BadRequest("empty SDP offer")
    if "\x00" in sdp:
        raise BadRequest("SDP offer contains NUL bytes")
    lines = split_lines(sdp)
    if not lines[0].startswith("v="):
        raise BadRequest("malformed SDP offer: it must start with 'v=0'")
    for number, line in enumerate(lines, 1):
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise BadRequest(
                f"malformed SDP offer: line {number} is not '<type>=<value>': {line[:60]!r}"
            )

    summary = summarise(sdp)
    for line in lines:  # summarise skips what it cannot read; a network offer gets a 400
        if line.startswith("m="):
            parts = line[2:].split()
            if len(parts) < 4:
                raise BadRequest(f"malformed SDP offer: bad media line {line[:60]!r}")
            try:
                int(parts[1].split("/")[0])
            except ValueError:
                raise BadRequest(f"malformed SDP offer: bad port in {line[:60]!r}") from None
    media = summary.media
    av_media = [m for m in media if m.kind in ("audio", "video")]
    if not av_media:
        raise BadRequest("SDP offer has no audio or video media section")
    if not summary.has_fingerprint:
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
    return summary


def check_viewer_offer(sdp: str) -> OfferSummary:
    """Summary of a usable WHEP viewer offer, or 400 (not SDP) / 422 (nothing to receive).
    Its media: the video section, then the first audio one if offered (``wants_audio`` says
    whether it receives)."""
    from aiortc.sdp import SessionDescription

    if not sdp.strip() or not sdp.lstrip().startswith("v="):
        raise BadRequest("empty or malformed SDP offer: it must start with 'v=0'")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser asserts on hostile input
        raise BadRequest(f"malformed SDP offer: {type(exc).__name__}: {exc}") from None
    mids = {m.rtp.muxId for m in parsed.media}
    for group in parsed.group:  # e.g. an m= line lost in transit: aiortc would trip on it
        missing = [item for item in group.items if item not in mids]
        if missing:
            raise BadRequest(
                f"malformed SDP offer: {group.semantic} names mid {missing[0]!r}, "
                "which no media section has"
            )
    video = [m for m in parsed.media if m.kind == "video"]
    if len(video) != 1:
        raise UnprocessableOffer(
            f"a WHEP offer needs exactly one video section, got {len(video)}; this server "
            "sends processed video only"
        )
    if video[0].direction not in ("recvonly", "sendrecv", None):
        raise UnprocessableOffer(
            f"the video section is {video[0].direction}; a WHEP viewer offers recvonly"
        )
    summary = summarise(sdp)
    video_sections = [m for m in summary.media if m.kind == "video"]
    # the first audio section gets the audio (a viewer's addTrack takes the first audio
    # transceiver); one the viewer only sends on gets none, and further ones are left alone
    audio_sections = [m for m in summary.media if m.kind == "audio"]
    return SdpSummary(
        media=tuple(video_sections[:1] + audio_sections[:1]),
        ice_ufrag=summary.ice_ufrag,
        ice_pwd=summary.ice_pwd,
        candidate_count=summary.candidate_count,
        has_fingerprint=summary.has_fingerprint,
    )


def wants_audio(summary: OfferSummary) -> bool:
    """True when a viewer offer's audio section receives (``recvonly``/``sendrecv``)."""
    return any(
        m.kind == "audio" and m.direction in ("recvonly", "sendrecv", None) for m in summary.media
    )
