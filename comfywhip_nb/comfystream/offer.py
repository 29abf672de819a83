"""ComfyStream compatibility: ``POST /offer``, ``POST /prompt``, and the ``control`` channel.

* ``POST /offer``: ComfyStream's JSON ``{"offer": {"sdp", "type"}, "prompts"?, "resolution"?}``
  -> ``200 {"sdp", "type": "answer", "session_id"}``. The session (kind ``offer``) is
  send-receive: processed video goes back on the same connection (scaled to ``resolution``
  when given), and so is its processed audio (its own audio when no audio prompt runs).
  Errors are problem+json with a 4xx status, never ComfyStream's "200 with an error". As
  in ComfyStream, ``prompts`` are the server's prompt (or ``?channelId=``'s), exactly as if
  sent to ``POST /prompt``.
* ``POST /prompt``: ``POST /prompts`` with ComfyStream's body shapes; answers JSON.
* ``setup_routes`` also serves the ``control`` data channel (``control.py``) on every new
  ``offer`` and ``whip`` session, through the core's event bus.

The README section "Coming from ComfyStream" is the user's guide.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from aiortc import MediaStreamTrack

from ..errors import BadRequest, UnsupportedMediaType
from ..http.api_routes import post_prompts
from ..http.bodies import read_body, validate_prompts
from ..http.middleware import CORE_KEY, EGRESS_KEY, core_of
from ..http.whip import extension_links
from ..pipeline.egress import Egress
from ..rtc.lifecycle import SessionKind
from ..rtc.offer_checks import OfferSummary, check_offer
from ..rtc.sessions import Session
from ..server_state import WhipCore
from .control import ControlHub, SessionControl, parse_size

__all__ = ["HUB_KEY", "create_offer_session", "setup_routes"]

logger = logging.getLogger(__name__)

JSON_TYPES = ("application/json", "text/plain")  # text/plain: what a no-cors fetch sends


# -- HTTP ----------------------------------------------------------------------------------
async def read_json(request: web.Request, limit: int) -> Any:
    if request.content_type.lower() not in JSON_TYPES:
        raise UnsupportedMediaType(request.headers.get("Content-Type"), "application/json")
    text = await read_body(request, limit)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError: also ints over 4300 digits
        raise BadRequest(f"body is not valid JSON: {exc}") from None


def _offer_sdp(body: Any) -> str:
    if not isinstance(body, dict):
        raise BadRequest('body must be a JSON object {"offer": {"sdp", "type"}, ...}')
    offer = body.get("offer")
    if not isinstance(offer, dict) or not isinstance(offer.get("sdp"), str):
        raise BadRequest('"offer" must be an object with an "sdp" string')
    if offer.get("type", "offer") != "offer":
        raise BadRequest(f'"offer.type" must be "offer", got {offer.get("type")!r:.40}')
    return offer["sdp"]


async def offer_endpoint(request: web.Request) -> web.Response:
    """ComfyStream's ``POST /offer``: JSON offer in, JSON answer out; send-receive media."""
    core = core_of(request)
    body = await read_json(request, core.config.max_json_bytes)
    sdp = _offer_sdp(body)
    size = None
    if body.get("resolution") is not None:
        try:
            size = parse_size(body["resolution"])
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    raw_prompts = body.get("prompts")
    prompt = (
        await validate_prompts(
            raw_prompts,
            core.config.warmup,
            engine=core.engine,
            image_dir=core.config.prompts_dir,
        )
        if raw_prompts not in (None, [], {})
        else None
    )
    channel = request.query.get("channelId") or None
    hub = request.app[HUB_KEY]
    egress = request.app[EGRESS_KEY]
    session, answer = await create_offer_session(core, hub, egress, sdp, channel, size)
    if prompt is not None:  # ComfyStream semantics: the prompt of the server (or channel)
        core.swap_prompts(prompt, channel=channel)
    response = web.json_response({"sdp": answer, "type": "answer", "session_id": session.id})
    for value in extension_links(request, session.id):  # its events are at /whip/{id}/events
        response.headers.add("Link", value)
    return response


async def prompt_endpoint(request: web.Request) -> web.Response:
    """ComfyStream's ``POST /prompt``: the same as ``POST /prompts`` (and its query)."""
    channel = request.query.get("channelId") or None
    session_id = request.query.get("sessionId") or None
    return await post_prompts(request, channel, session_id)


def _wants_back(summary: OfferSummary, kind: str) -> bool:
    return any(m.kind == kind and m.direction == "sendrecv" for m in summary.media)


async def create_offer_session(
    core: WhipCore,
    hub: ControlHub,
    egress: Egress,
    sdp: str,
    channel: str | None,
    size: tuple[int, int] | None,
) -> tuple[Session, str]:
    """``core.create_session`` whose ``track`` handler also adds the tracks sent back.

    The processed video goes back on ``egress``'s track with aiortc's per-peer encoder (one
    peer gains nothing from a shared encoder; aiortc's honours this peer's PLI and bitrate),
    scaled to the control channel's size. The processed audio goes back on the session feed's
    shared audio encoder (``audio_egress.py``).
    """
    summary = check_offer(sdp)  # which media the peer wants back
    control = SessionControl(size=size)
    made: list[str] = []

    def on_track(session: Session, track: MediaStreamTrack) -> None:
        made.append(session.id)
        hub.controls[session.id] = control  # before "created", which would make a fresh one
        if track.kind == "video":
            session.attach_track(track)
            if _wants_back(summary, "video"):
                control.sends_video = True
                session.send(
                    egress.viewer_track(
                        session.pc, session=session, shared=False, size=lambda: control.size
                    )
                )
        else:
            session.attach_track(track)
            if _wants_back(summary, "audio"):  # the session's processed audio, as for video
                session.send(egress.audio_track(session.pc, session=session))

    try:
        session, answer, _ = await core.create_session(
            sdp, channel_id=channel, kind=SessionKind.OFFER, on_track=on_track
        )
    except Exception:
        for session_id in made:
            hub.controls.pop(session_id, None)
        raise
    return session, answer


HUB_KEY: web.AppKey[ControlHub] = web.AppKey("control_hub", ControlHub)


def setup_routes(app: web.Application) -> None:
    """Add /offer and /prompt, and serve ``control`` channels on every new session."""
    core = app[CORE_KEY]
    app[HUB_KEY] = ControlHub(core)  # subscribes to the core's session events
    app.router.add_post("/offer", offer_endpoint, name="comfystream-offer")
    app.router.add_post("/prompt", prompt_endpoint, name="comfystream-prompt")
