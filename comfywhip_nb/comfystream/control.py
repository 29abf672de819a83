"""The ``control`` data channel of ComfyStream, served on ``offer`` and ``whip`` sessions.

Protocol: the peer opens a data channel labelled ``control`` and sends JSON objects with a
``type``; each gets exactly one reply ``{"type": <reply>, "success": bool, "error"?: str}``
(plus an echoed ``id`` when the request had one, which ComfyStream does not do):

==================  ======================  ==============================================
request             reply                   effect
==================  ======================  ==============================================
get_nodes           nodes_info              ``nodes``: every node class, inputs flattened
update_prompts      prompts_updated         ``prompts`` (graph, list, JSON string or null)
                                            become this session's own prompt
update_resolution   resolution_updated      ``width``/``height`` of the video sent back
pause_prompts       prompts_paused          stop running the prompt; input passes through
resume_prompts      prompts_resumed         run the session's prompt again
stop_prompts        prompts_stopped         pause, and forget the session's own prompt
==================  ======================  ==============================================

Malformed messages (not JSON, not an object, unknown ``type``) get ``{"type": "error",
"success": false, "error": ...}``; a bad request of a known type gets its reply type with
``success: false``; nothing closes the channel. Replies keep the order of the requests (one
FIFO lock per channel). Pause is passthrough rather than a frozen picture so that previews,
WHEP viewers and the way back keep moving; a channel-wide prompt swap made while a session is
paused or stopped is recorded but does not restart it. Validation and the node catalogue run
in the default executor: nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from ..prompts.graph import PromptError
from ..prompts.validation import describe_prompt_error, load_prompt_data
from ..rtc.lifecycle import SessionEvent, SessionEventType
from ..rtc.sessions import Session
from ..server_state import WhipCore

__all__ = [
    "REPLIES",
    "ControlError",
    "ControlHub",
    "SessionControl",
    "describe_node",
    "parse_size",
]

logger = logging.getLogger(__name__)

MIN_SIDE, MAX_SIDE = 16, 4096
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
    """What the control channel changed on one session (event loop only)."""

    mode: str = RUNNING
    size: tuple[int, int] | None = None
    """Output size of the video sent back (the return track reads it for each frame)."""
    sends_video: bool = False


class ControlHub:
    """Control state per session, and the ``control`` channel handler installed on each one."""

    def __init__(self, core: WhipCore) -> None:
        self.core = core
        self.controls: dict[str, SessionControl] = {}
        self.subscription = core.events.subscribe(self.on_session_event)

    def control(self, session: Session) -> SessionControl:
        return self.controls.setdefault(session.id, SessionControl())

    def on_session_event(self, event: SessionEvent) -> None:
        """The core's event bus (loop thread)."""
        session = event.session
        if event.type is SessionEventType.CREATED and session.kind.publishes:
            self.control(session)
            session_id = session.id  # the handler must not hold the session (issue 17)
            session.pc.on("datachannel", lambda channel: self._on_datachannel(session_id, channel))
        elif event.type is SessionEventType.CLOSED:
            self.controls.pop(session.id, None)

    def _on_datachannel(self, session_id: str, channel: Any) -> None:
        session = self.core.sessions.get(session_id)
        if channel.label != "control" or session is None:
            return
        session.log(logging.INFO, "control data channel opened")
        lock = asyncio.Lock()  # FIFO: replies keep the order of the messages

        @channel.on("message")
        async def _on_message(message: str | bytes) -> None:
            live = self.core.sessions.get(session_id)
            async with lock:
                if live is None:
                    reply = {"type": "error", "success": False, "error": "the session has ended"}
                else:
                    reply = await self.handle(live, message)
            if channel.readyState == "open":
                channel.send(fit_reply(reply, _max_message_size(channel)))

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
        loop = asyncio.get_running_loop()
        catalogue = await loop.run_in_executor(None, self.core.engine.catalogue)
        return {"nodes": {name: describe_node(info) for name, info in catalogue.items()}}

    async def update_prompts(self, session: Session, data: dict[str, Any]) -> dict[str, Any]:
        if "prompts" not in data:
            raise ControlError('update_prompts needs "prompts" (a graph, a list, or null)')
        prompt = None
        raw = data["prompts"]
        if isinstance(raw, str):  # some clients send the graph as a JSON string
            try:
                raw = json.loads(raw)
            except (json.JSONDecodeError, RecursionError) as exc:
                raise ControlError(f"prompts is not valid JSON: {exc}") from None
        if raw is not None:
            try:
                prompt = await load_prompt_data(
                    raw,
                    self.core.config.warmup,
                    self.core.config.prompts_dir,
                    engine=self.core.engine,
                )
            except PromptError as exc:
                message, details = describe_prompt_error(exc)
                nodes = details.get("node_errors")
                raise ControlError(message, **({"node_errors": nodes} if nodes else {})) from None
        if session.closed:
            raise ControlError("the session has ended")
        control = self.control(session)
        resume = None
        if control.mode == STOPPED:  # a new prompt starts a stopped session again
            control.mode, resume = RUNNING, False
        swap = self.core.swap_prompts(prompt, session_id=session.id, paused=resume)
        return {"version": swap.version, "state": control.mode}

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
            # "stop" forgets the session's prompt and pauses, in one step
            self.core.swap_prompts(None, session_id=session.id, paused=True)
        return self._set_mode(session, STOPPED)

    # -- prompt state: the core decides what runs; this only records the mode -------------
    def _set_mode(self, session: Session, mode: str) -> dict[str, Any]:
        control = self.control(session)
        control.mode = mode
        self.core.set_paused(session, mode != RUNNING)  # also re-arms a benched prompt
        session.log(logging.INFO, "prompts %s by control message", mode)
        return {"state": mode}


def _max_message_size(channel: Any) -> int:
    """The largest message the peer takes (SDP ``a=max-message-size``; 0 = no limit)."""
    size = getattr(channel.transport, "_remote_max_message_size", 0)  # aiortc keeps no public one
    return size if isinstance(size, int) else 0


def fit_reply(reply: dict[str, Any], limit: int) -> str:
    """The reply as compact JSON within the peer's message size: a node list too large (a
    real ComfyUI has 400+ nodes) loses descriptions and tooltips first; what still does not
    fit becomes an error reply naming the sizes, never an exception in the channel."""
    text = json.dumps(reply, separators=(",", ":"))
    if not limit or len(text.encode()) <= limit:
        return text
    if isinstance(reply.get("nodes"), dict):
        slim = {name: _slim(node) for name, node in reply["nodes"].items()}
        text = json.dumps({**reply, "nodes": slim}, separators=(",", ":"))
        if len(text.encode()) <= limit:
            return text
    error = {key: reply[key] for key in ("type", "id") if key in reply} | {
        "success": False,
        "error": f"reply of {len(text.encode())} bytes exceeds the peer's data channel "
        f"message limit of {limit} bytes",
    }
    return json.dumps(error)


def _slim(node: dict[str, Any]) -> dict[str, Any]:
    inputs = {
        name: {k: v for k, v in spec.items() if k != "tooltip"}
        for name, spec in node.get("inputs", {}).items()
    }
    return {**node, "description": "", "inputs": inputs}


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
