"""ComfyStream compatibility: ``POST /offer``, ``POST /prompt``, and the ``control`` channel.

* ``POST /offer``: ComfyStream's JSON ``{"offer": {"sdp", "type"}, "prompts"?, "resolution"?}``
  -> ``200 {"sdp", "type": "answer", "session_id"}``. The session (kind ``offer``) is
  send-receive: processed video goes back on the same connection (scaled to ``resolution``
  when given), offered audio is relayed back untouched. Errors are problem+json with a 4xx
  status, never ComfyStream's "200 with an error". As in ComfyStream, ``prompts`` are the
  server's prompt (or ``?channelId=``'s), exactly as if sent to ``POST /prompt``.
* ``POST /prompt``: ``POST /prompts`` with ComfyStream's body shapes; answers JSON.
* ``setup_routes`` also serves the ``control`` data channel (``control.py``) on every new
  ``offer`` and ``whip`` session, through ``WhipCore.listeners``.

The README section "Coming from ComfyStream" is the user's guide.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import logging
import time
from typing import Any

import av
from aiohttp import web
from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError

from ..errors import BadRequest, UnsupportedMediaType
from ..http.api_routes import post_prompts
from ..http.bodies import read_body, validate_prompts
from ..http.middleware import CORE_KEY, core_of
from ..http.whip import extension_links
from ..pipeline.egress import REFORMAT_LOCK
from ..pipeline.processor import ProcessedFrame
from ..rtc.offer_checks import OfferSummary, check_offer
from ..rtc.sessions import Session
from ..server_state import WhipCore
from .control import ControlHub, SessionControl, parse_size

__all__ = [
    "HUB_KEY",
    "ReturnVideoTrack",
    "create_offer_session",
    "private_copy",
    "setup_routes",
]

logger = logging.getLogger(__name__)

JSON_TYPES = ("application/json", "text/plain")  # text/plain: what a no-cors fetch sends
VIDEO_CLOCK = 90000
TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)


def private_copy(frame: av.VideoFrame, size: tuple[int, int] | None) -> av.VideoFrame:
    """A yuv420p copy we may re-stamp (processed frames are shared with previews and WHEP),
    scaled to ``size`` when given; runs on an executor thread."""
    width, height = size or (frame.width & ~1, frame.height & ~1)
    # PyAV caches one converter per frame object: two threads converting the same shared
    # frame at once corrupt it, so conversions of shared frames take egress's lock
    with REFORMAT_LOCK:
        out = frame.reformat(width=width, height=height, format="yuv420p")
        if out is frame:  # PyAV hands back the same object when nothing changes
            out = av.VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")
    return out


class ReturnVideoTrack(MediaStreamTrack):
    """The session's processed video for its own ``/offer`` peer; only the newest frame waits.

    Not ``egress.ProcessedVideoTrack``: one peer per session gains nothing from a shared
    encoder, aiortc's own one honours this peer's PLI and bitrate, and frames are scaled to the
    control channel's size. Only frames actually sent are copied and scaled, on an executor
    thread (the worker stays on prompts), and get a monotonic 90 kHz pts.
    """

    kind = "video"

    def __init__(self, session: Session, control: SessionControl) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._control = control
        self._session = session
        self._latest: ProcessedFrame | None = None
        self._ready = asyncio.Event()
        self._t0 = time.monotonic()
        self._last_pts = -1
        session.frame_listeners.append(self._on_processed)
        session.add_close_callback(lambda _s: self.stop())

    def _on_processed(self, processed: ProcessedFrame) -> None:  # worker thread: hand over
        with contextlib.suppress(RuntimeError):  # loop closed: the server is stopping
            self._loop.call_soon_threadsafe(self._deliver, processed)

    def _deliver(self, processed: ProcessedFrame) -> None:
        self._latest = processed  # an unsent older frame is simply replaced
        self._ready.set()

    async def recv(self) -> av.VideoFrame:
        while self.readyState == "live":
            await self._ready.wait()
            self._ready.clear()
            processed, self._latest = self._latest, None
            if processed is None:
                continue
            frame = await self._loop.run_in_executor(
                None, private_copy, processed.frame, self._control.size
            )
            pts = max(self._last_pts + 1, round((time.monotonic() - self._t0) * VIDEO_CLOCK))
            frame.pts, frame.time_base, self._last_pts = pts, TIME_BASE, pts
            return frame
        raise MediaStreamError

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self._session.frame_listeners.remove(self._on_processed)
        super().stop()
        self._ready.set()


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
        await validate_prompts(raw_prompts, core.config.warmup, engine=core.engine)
        if raw_prompts not in (None, [], {})
        else None
    )
    channel = request.query.get("channelId") or None
    hub = request.app[HUB_KEY]
    session, answer = await create_offer_session(core, hub, sdp, channel, size)
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
    sdp: str,
    channel: str | None,
    size: tuple[int, int] | None,
) -> tuple[Session, str]:
    """``core.create_session`` whose ``track`` handler also adds the tracks sent back."""
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
                session.pc.addTrack(ReturnVideoTrack(session, control))
        else:  # one reader, two consumers: the session's counter and the way back
            relay = MediaRelay()
            session.attach_track(relay.subscribe(track))
            if _wants_back(summary, "audio"):
                session.pc.addTrack(relay.subscribe(track))

    try:
        session, answer, _ = await core.create_session(
            sdp, channel_id=channel, kind="offer", on_track=on_track
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
    hub = ControlHub(core)
    app[HUB_KEY] = hub
    core.listeners.append(hub.on_session_event)
    app.router.add_post("/offer", offer_endpoint, name="comfystream-offer")
    app.router.add_post("/prompt", prompt_endpoint, name="comfystream-prompt")
