"""ComfyStream compatibility: ``POST /offer``, ``POST /prompt`` and the ``control`` data channel.

How it maps onto this server (docs/comfystream.md has the user-facing version):

* ``POST /offer`` takes ComfyStream's JSON ``{"offer": {"sdp", "type"}, "prompts"?,
  "resolution"?}`` and answers ``200 {"sdp", "type": "answer", "session_id"}``. The session
  (kind ``offer``) is send-receive: its processed video goes back on the same peer connection
  and offered audio is relayed back untouched. Errors are problem+json with a 4xx status, never
  ComfyStream's "200 with an error". As in ComfyStream, ``prompts`` are not private to the peer:
  they replace the server's prompt (or ``?channelId=``'s), exactly as ``POST /prompt`` would.
* ``POST /prompt`` is ``POST /prompts`` with ComfyStream's body shapes (graph, list of graphs,
  or ``{"prompts": ...}``) and answers JSON instead of ComfyStream's bare ``OK``.
* A data channel labelled ``control`` is served on ``offer`` *and* ``whip`` sessions. Every
  message gets exactly one JSON reply ``{"type": <reply>, "success": bool, "error"?: str}``;
  malformed ones get ``{"type": "error", ...}``; nothing closes the channel. Replies keep the
  order of the requests (one lock per channel). ``update_prompts`` sets *this session's*
  prompt. ``pause_prompts`` stops running the prompt and passes the input through until
  ``resume_prompts``; ``stop_prompts`` does the same and also forgets the session's own prompt,
  so ``resume_prompts`` then runs the channel/default prompt. Channel swaps made while paused
  or stopped are recorded but do not restart processing.
* ``update_resolution`` (and ``/offer``'s ``resolution``) sets the size of the video sent back
  on this connection: each processed frame is scaled on the processing worker thread before
  encoding. WHIP sessions send no video back, so there it answers ``success: false``.

Nothing here runs on the event loop that could block it: prompt validation and the node
catalogue run in the default executor, frame scaling on the session's worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import av
from aiohttp import web
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.exceptions import OperationError
from aiortc.mediastreams import MediaStreamError

from .core import DEFAULT_CHANNEL, WhipCore, _no_codec_error
from .errors import BadRequest, TooManySessions, UnsupportedMediaType
from .offer import OfferSummary, check_offer
from .processing import ProcessedFrame
from .sessions import Session
from .whip import CORE_KEY, core_of, read_body, validate_prompts

__all__ = [
    "HUB_KEY",
    "ControlHub",
    "ReturnVideoTrack",
    "SessionControl",
    "describe_node",
    "parse_size",
    "setup_routes",
]

logger = logging.getLogger(__name__)

JSON_TYPES = ("application/json", "text/plain")  # text/plain: what a no-cors fetch sends
MIN_SIDE, MAX_SIDE = 16, 4096
VIDEO_CLOCK = 90000
TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
RUNNING, PAUSED, STOPPED = "running", "paused", "stopped"
REPLIES = {
    "get_nodes": "nodes_info",
    "update_prompts": "prompts_updated",
    "update_resolution": "resolution_updated",
    "pause_prompts": "prompts_paused",
    "resume_prompts": "prompts_resumed",
    "stop_prompts": "prompts_stopped",
}


class ControlError(Exception):
    """A control message that cannot be carried out; its text goes to the peer."""

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.extra = extra


def parse_size(value: Any, where: str = "resolution") -> tuple[int, int]:
    """``{"width", "height"}`` -> (w, h); even sides (yuv420p) in 16..4096, else ValueError."""
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object {{width, height}}, got {value!r:.60}")
    sides = []
    for key in ("width", "height"):
        side = value.get(key)
        if isinstance(side, bool) or not isinstance(side, int):
            raise ValueError(f"{where}.{key} must be an integer, got {side!r:.40}")
        if not MIN_SIDE <= side <= MAX_SIDE or side % 2:
            raise ValueError(f"{where}.{key} must be even and in {MIN_SIDE}..{MAX_SIDE}: {side}")
        sides.append(side)
    return sides[0], sides[1]


@dataclass
class SessionControl:
    """What the control channel changed on one session (loop thread writes, worker reads)."""

    mode: str = RUNNING
    size: tuple[int, int] | None = None
    """Output size of the video sent back; read by the worker thread (a tuple swap is atomic)."""
    sends_video: bool = False


class ReturnVideoTrack(MediaStreamTrack):
    """The session's processed video for its own ``/offer`` peer; only the newest frame waits.

    Not ``egress.ProcessedVideoTrack``: one peer per session gains nothing from a shared
    encoder, aiortc's own one honours this peer's PLI and bitrate, and frames must be scaled
    to the control channel's size. The worker thread makes a private yuv420p copy (processed
    frames are shared with previews and WHEP), scales it and stamps a monotonic 90 kHz pts.
    """

    kind = "video"

    def __init__(self, session: Session, control: SessionControl) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._control = control
        self._session = session
        self._frame: av.VideoFrame | None = None
        self._ready = asyncio.Event()
        self._t0 = time.monotonic()
        self._last_pts = -1  # worker thread only
        session.frame_listeners.append(self._on_processed)
        session.add_close_callback(lambda _s: self.stop())

    def _on_processed(self, processed: ProcessedFrame) -> None:  # worker thread
        frame = processed.frame
        width, height = self._control.size or (frame.width & ~1, frame.height & ~1)
        out = frame.reformat(width=width, height=height, format="yuv420p")
        if out is frame:  # PyAV hands back the same object when nothing changes
            out = av.VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")
        pts = max(self._last_pts + 1, round((time.monotonic() - self._t0) * VIDEO_CLOCK))
        out.pts, out.time_base, self._last_pts = pts, TIME_BASE, pts
        with contextlib.suppress(RuntimeError):  # loop closed: the server is stopping
            self._loop.call_soon_threadsafe(self._deliver, out)

    def _deliver(self, frame: av.VideoFrame) -> None:
        self._frame = frame
        self._ready.set()

    async def recv(self) -> av.VideoFrame:
        while self.readyState == "live":
            await self._ready.wait()
            self._ready.clear()
            frame, self._frame = self._frame, None
            if frame is not None:
                return frame
        raise MediaStreamError

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self._session.frame_listeners.remove(self._on_processed)
        super().stop()
        self._ready.set()


class ControlHub:
    """Control state per session, and the ``control`` channel handler installed on each one."""

    def __init__(self, core: WhipCore) -> None:
        self.core = core
        self.controls: dict[str, SessionControl] = {}

    def control(self, session: Session) -> SessionControl:
        return self.controls.setdefault(session.id, SessionControl())

    def on_session_event(self, event: str, session: Session) -> None:
        """``core.listeners`` callback (loop thread)."""
        if event == "created" and session.kind in ("whip", "offer"):
            self.control(session)
            session.pc.on("datachannel", lambda channel: self._on_datachannel(session, channel))
        elif event == "prompt":
            self._hold(session)  # a channel swap must not restart a paused session
        elif event == "closed":
            self.controls.pop(session.id, None)

    def _on_datachannel(self, session: Session, channel: Any) -> None:
        if channel.label != "control":
            return
        session.log(logging.INFO, "control data channel opened")
        lock = asyncio.Lock()  # FIFO: replies keep the order of the messages

        @channel.on("message")
        async def _on_message(message: str | bytes) -> None:
            async with lock:
                reply = await self.handle(session, message)
            if channel.readyState == "open":
                channel.send(json.dumps(reply))

    # -- messages ---------------------------------------------------------------------------
    async def handle(self, session: Session, message: str | bytes) -> dict[str, Any]:
        """One reply for one message; never raises."""
        try:
            data = self._parse(message)
        except ControlError as exc:
            return {"type": "error", "success": False, "error": str(exc)}
        kind = data["type"]
        reply: dict[str, Any] = {"type": REPLIES[kind]}
        if "id" in data:  # not in ComfyStream; lets a client match replies to requests
            reply["id"] = data["id"]
        try:
            reply.update(await getattr(self, kind)(session, data))
            reply["success"] = True
        except ControlError as exc:
            reply.update(exc.extra)
            reply.update(success=False, error=str(exc))
        except Exception as exc:  # a bug must cost one reply, not the channel
            logger.exception("WHIP: %s control message %s failed", session.id[:8], kind)
            reply.update(success=False, error=f"internal error: {type(exc).__name__}: {exc}")
        return reply

    def _parse(self, message: str | bytes) -> dict[str, Any]:
        limit = self.core.config.max_json_bytes
        if len(message) > limit:
            raise ControlError(f"message too large ({len(message)} bytes; limit {limit})")
        try:
            data = json.loads(message)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ControlError(f"message is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            raise ControlError('message must be a JSON object with a string "type"')
        if data["type"] not in REPLIES:
            raise ControlError(
                f"unknown message type {data['type'][:60]!r}; expected one of " + ", ".join(REPLIES)
            )
        return data

    async def get_nodes(self, session: Session, data: dict[str, Any]) -> dict[str, Any]:
        from .prompts import node_catalogue

        loop = asyncio.get_running_loop()
        catalogue = await loop.run_in_executor(None, node_catalogue)
        return {"nodes": {name: describe_node(info) for name, info in catalogue.items()}}

    async def update_prompts(self, session: Session, data: dict[str, Any]) -> dict[str, Any]:
        if "prompts" not in data:
            raise ControlError('update_prompts needs "prompts" (a graph, a list, or null)')
        prompt = None
        if data["prompts"] is not None:
            try:
                prompt = await validate_prompts(data["prompts"])
            except BadRequest as exc:
                nodes = exc.extra.get("node_errors")
                raise ControlError(
                    exc.message, **({"node_errors": nodes} if nodes else {})
                ) from None
        if session.closed:
            raise ControlError("the session has ended")
        entry = self.core.swap_prompts(prompt, session_id=session.id)
        control = self.control(session)
        if control.mode == STOPPED:  # a new prompt starts a stopped session again
            control.mode = RUNNING
        self._hold(session)
        return {"version": entry.version, "state": control.mode}

    async def update_resolution(self, session: Session, data: dict[str, Any]) -> dict[str, Any]:
        try:
            size = parse_size(data, "update_resolution")
        except ValueError as exc:
            raise ControlError(str(exc)) from None
        control = self.control(session)
        if not control.sends_video:
            raise ControlError(
                "this session sends no video back (a WHIP publisher only sends); the "
                "resolution applies to the processed video of /offer sessions"
            )
        control.size = size
        session.log(logging.INFO, "output resolution set to %dx%d", *size)
        return {"width": size[0], "height": size[1]}

    async def pause_prompts(self, session: Session, data: dict[str, Any]) -> dict[str, Any]:
        return self._set_mode(session, PAUSED)

    async def resume_prompts(self, session: Session, data: dict[str, Any]) -> dict[str, Any]:
        return self._set_mode(session, RUNNING)

    async def stop_prompts(self, session: Session, data: dict[str, Any]) -> dict[str, Any]:
        if session.session_prompt is not None and not session.closed:
            self.core.swap_prompts(None, session_id=session.id)
        return self._set_mode(session, STOPPED)

    # -- prompt state -----------------------------------------------------------------------
    def _set_mode(self, session: Session, mode: str) -> dict[str, Any]:
        control = self.control(session)
        control.mode = mode
        if mode == RUNNING:
            entry = session.session_prompt or self.core.prompts.for_channel(session.channel_id)
            session.prompt_source = entry.source
            session.processor.set_prompt(entry.prompt, entry.version)
        self._hold(session)
        session.log(logging.INFO, "prompts %s by control message", mode)
        return {"state": mode}

    def _hold(self, session: Session) -> None:
        """Keep a paused/stopped session on passthrough (the version stays the recorded one)."""
        control = self.controls.get(session.id)
        if control is None or control.mode == RUNNING:
            return
        entry = session.session_prompt or self.core.prompts.for_channel(session.channel_id)
        session.processor.set_prompt(None, entry.version)


def describe_node(info: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI ``/object_info`` entry -> inputs flattened to {type, required, default, ...}."""
    inputs: dict[str, Any] = {}
    for group in ("required", "optional"):
        for name, spec in (info.get("input", {}).get(group) or {}).items():
            spec = list(spec) if isinstance(spec, (list, tuple)) else [spec]
            kind = spec[0] if spec else "*"
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            entry: dict[str, Any] = {"required": group == "required"}
            if isinstance(kind, list):
                entry.update(type="COMBO", choices=kind)
            else:
                entry["type"] = kind
            for key in ("default", "min", "max", "step", "tooltip", "multiline"):
                if key in options:
                    entry[key] = options[key]
            inputs[name] = entry
    return {
        "display_name": info.get("display_name", info.get("name")),
        "category": info.get("category", ""),
        "description": info.get("description", ""),
        "inputs": inputs,
        "outputs": list(info.get("output", [])),
        "output_node": bool(info.get("output_node", False)),
    }


# -- HTTP ----------------------------------------------------------------------------------
async def read_json(request: web.Request, limit: int) -> Any:
    if request.content_type.lower() not in JSON_TYPES:
        raise UnsupportedMediaType(request.headers.get("Content-Type"), "application/json")
    text = await read_body(request, limit)
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
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
    prompt = await validate_prompts(raw_prompts) if raw_prompts not in (None, [], {}) else None
    channel = request.query.get("channelId") or None
    hub = request.app[HUB_KEY]
    session, answer = await create_offer_session(core, hub, sdp, channel, size)
    if prompt is not None:  # ComfyStream semantics: the prompt of the server (or channel)
        core.swap_prompts(prompt, channel=channel)
    return web.json_response({"sdp": answer, "type": "answer", "session_id": session.id})


async def prompt_endpoint(request: web.Request) -> web.Response:
    """ComfyStream's ``POST /prompt``: the same as ``POST /prompts`` (and its query)."""
    from .api import post_prompts

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
    """``core.create_session`` with return media: senders are attached in the ``track`` event.

    A copy of the core's steps until it grows a hook for it (see the report for issue 8).
    """
    summary = check_offer(sdp)
    if len(core.sessions) >= core.config.max_sessions:
        raise TooManySessions(core.config.max_sessions)
    pc = RTCPeerConnection(core.rtc_configuration())
    session = Session(
        pc,
        channel_id=channel or DEFAULT_CHANNEL,
        kind="offer",
        remote_ufrag=summary.ice_ufrag,
        remote_pwd=summary.ice_pwd,
        frame_timeout=core.config.frame_timeout,
    )
    entry = core.prompts.for_channel(session.channel_id)
    session.prompt_source = entry.source
    session.processor.set_prompt(entry.prompt, entry.version)
    control = hub.control(session)
    control.size = size

    @pc.on("track")
    def _on_track(track: MediaStreamTrack) -> None:
        if track.kind == "video":
            session.attach_track(track)
            if _wants_back(summary, "video"):
                control.sends_video = True
                pc.addTrack(ReturnVideoTrack(session, control))
        else:  # one reader, two consumers: the session's counter and the way back
            relay = MediaRelay()
            session.attach_track(relay.subscribe(track))
            if _wants_back(summary, "audio"):
                pc.addTrack(relay.subscribe(track))

    @pc.on("connectionstatechange")
    async def _on_state() -> None:
        state = pc.connectionState
        session.log(logging.INFO, "connection state is: %s", state)
        if state == "connected" and session.connected_at is None:
            session.connected_at = time.monotonic()
        _notify(core, "state", session)
        if state in ("failed", "closed"):
            await core.close_session(session.id, f"ICE {state}")

    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
    except OperationError as exc:
        await session.close("no common codec")
        hub.controls.pop(session.id, None)
        raise _no_codec_error(summary, exc) from exc
    except Exception as exc:  # aiortc raises assorted types on hostile SDP
        await session.close("bad offer")
        hub.controls.pop(session.id, None)
        raise BadRequest(f"could not process the SDP offer: {type(exc).__name__}: {exc}") from exc
    core.sessions.add(session)
    session.log(
        logging.INFO,
        "created send-receive (/offer) session for channel %s (video back=%s, audio back=%s)",
        session.channel_id,
        control.sends_video,
        _wants_back(summary, "audio"),
    )
    _notify(core, "created", session)
    return session, pc.localDescription.sdp


def _notify(core: WhipCore, event: str, session: Session) -> None:
    for listener in list(core.listeners):
        try:
            listener(event, session)
        except Exception:
            logger.exception("WHIP: session listener failed")


HUB_KEY: web.AppKey[ControlHub] = web.AppKey("control_hub", ControlHub)


def setup_routes(app: web.Application) -> None:
    """Add /offer and /prompt, and serve ``control`` channels on every new session."""
    core = app[CORE_KEY]
    hub = ControlHub(core)
    app[HUB_KEY] = hub
    core.listeners.append(hub.on_session_event)
    app.router.add_post("/offer", offer_endpoint, name="comfystream-offer")
    app.router.add_post("/prompt", prompt_endpoint, name="comfystream-prompt")
