"""Non-WHIP HTTP endpoints: health, stats (ours, ComfyStream-shaped, Prometheus), prompts,
preview JPEGs and the browser page.

JPEG encoding happens in the default executor, never on the event loop.
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from importlib import resources
from typing import Any

from aiohttp import web

from ..errors import BadRequest, MethodNotAllowed, NotFound
from .bodies import read_body, validate_prompts
from .middleware import core_of

__all__ = ["setup_api_routes"]


async def health(request: web.Request) -> web.Response:
    core = core_of(request)
    return web.json_response(
        {"status": "ok", "sessions": len(core.sessions), "uptime_s": time.time() - core.started_at}
    )


async def whip_stats(request: web.Request) -> web.Response:
    sessions = core_of(request).sessions
    await asyncio.gather(*(s.rtp.refresh() for s in sessions.values()))  # packets lost
    snapshot = sessions.snapshot()
    return web.json_response({sid: info.to_dict() for sid, info in snapshot.items()})


def _comfystream_stats(info: Any) -> dict[str, Any]:
    minute = list(info.minute_fps)
    return {
        "timestamp": time.time(),
        "fps": round(info.fps_out, 2),
        "minute_avg_fps": round(sum(minute) / len(minute), 2) if minute else 0.0,
        "minute_fps_array": [round(v, 2) for v in minute],
        "fps_in": round(info.fps_in, 2),
        "latency_ms": round(info.latency_ms, 2),
        "frames_dropped": info.frames_dropped,
        "connection_state": info.connection_state,
    }


async def streams_stats(request: web.Request) -> web.Response:
    snapshot = core_of(request).sessions.snapshot()
    return web.json_response({sid: _comfystream_stats(info) for sid, info in snapshot.items()})


async def stream_stats(request: web.Request) -> web.Response:
    session_id = request.match_info["id"]
    session = core_of(request).sessions.get(session_id)
    if session is None:
        raise NotFound(f"no stream {session_id[:64]!r}")
    return web.json_response({session_id: _comfystream_stats(session.info())})


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition (version 0.0.4)."""
    snapshot = core_of(request).sessions.snapshot()
    lines = [
        "# HELP comfywhip_sessions Live sessions.",
        "# TYPE comfywhip_sessions gauge",
        f"comfywhip_sessions {len(snapshot)}",
    ]
    series = [
        ("frames_in_total", "counter", "Video frames received.", "frames_in"),
        ("frames_processed_total", "counter", "Video frames processed.", "frames_processed"),
        (
            "frames_dropped_total",
            "counter",
            "Frames dropped (slot overwritten or failed).",
            "frames_dropped",
        ),
        ("fps_in", "gauge", "Input frame rate.", "fps_in"),
        ("fps_out", "gauge", "Processed frame rate.", "fps_out"),
        ("latency_ms", "gauge", "p50 receipt-to-processed latency.", "latency_ms"),
        ("prompt_version", "gauge", "Version of the running prompt.", "prompt_version"),
        ("audio_frames_in_total", "counter", "Audio frames received.", "audio_frames_in"),
        (
            "audio_frames_out_total",
            "counter",
            "Processed audio, in 20 ms frames.",
            "audio_frames_out",
        ),
        (
            "audio_buffers_dropped_total",
            "counter",
            "Whole audio buffers dropped (processing slower than real time).",
            "audio_buffers_dropped",
        ),
        ("audio_latency_ms", "gauge", "p50 audio latency, buffering included.", "audio_latency_ms"),
        ("audio_latency_p95_ms", "gauge", "p95 audio latency.", "audio_latency_p95_ms"),
        ("audio_level_in_dbfs", "gauge", "RMS level of the input audio.", "audio_level_in_db"),
        (
            "audio_level_out_dbfs",
            "gauge",
            "RMS level of the processed audio.",
            "audio_level_out_db",
        ),
    ]
    for name, kind, text, attr in series:
        lines += [f"# HELP comfywhip_{name} {text}", f"# TYPE comfywhip_{name} {kind}"]
        for sid, info in snapshot.items():
            labels = f'session="{_label(sid)}",channel="{_label(info.channel_id)}"'
            lines.append(f"comfywhip_{name}{{{labels}}} {float(getattr(info, attr)):g}")
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")


async def prompts_endpoint(request: web.Request) -> web.Response:
    core = core_of(request)
    channel = request.query.get("channelId") or None
    session_id = request.query.get("sessionId") or None
    if request.method == "GET":
        entry = core.prompts.channel_entry(channel)
        if session_id is not None:
            session = core.sessions.get(session_id)
            if session is None:
                raise NotFound(f"no session {session_id[:64]!r}")
            entry = core.prompt_entry(session)
        graphs = entry.prompt.graphs if entry.prompt is not None else None
        return web.json_response(
            {
                "channel_id": channel,
                "prompts": graphs,
                "version": entry.version,
                "source": entry.source,
            }
        )
    if request.method != "POST":
        raise MethodNotAllowed(request.method, ("GET", "HEAD", "POST", "OPTIONS"))
    return await post_prompts(request, channel, session_id)


async def post_prompts(
    request: web.Request, channel: str | None, session_id: str | None
) -> web.Response:
    core = core_of(request)
    if request.content_type not in ("application/json", "text/plain", ""):
        from ..errors import UnsupportedMediaType

        raise UnsupportedMediaType(request.headers.get("Content-Type"), "application/json")
    text = await read_body(request, core.config.max_json_bytes)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError: also ints over 4300 digits
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if isinstance(data, dict) and "prompts" in data:  # ComfyStream's {"prompts": [...]} shape
        data = data["prompts"]
    if data is None:
        prompt = None
    else:
        prompt = await validate_prompts(
            data, core.config.warmup, engine=core.engine, image_dir=core.config.prompts_dir
        )
    try:
        swap = core.swap_prompts(prompt, channel=channel, session_id=session_id)
    except KeyError:
        raise NotFound(f"no session {session_id!r}") from None
    return web.json_response(
        {
            "ok": True,
            "channel_id": channel,
            "session_id": session_id,
            "version": swap.version,
            "not_following": list(swap.not_following),
        }
    )


async def preview(request: web.Request) -> web.Response:
    from ..pipeline.frames import encode_preview_jpeg

    session_id = request.match_info["id"]
    session = core_of(request).sessions.get(session_id)
    if session is None:
        raise NotFound(f"no session {session_id[:64]!r}")
    latest = session.processor.latest()
    if latest is None:
        raise NotFound(f"session {session_id[:8]} has no processed frame yet")
    try:
        width = int(request.query.get("width", "640"))
    except ValueError:
        raise BadRequest("width must be an integer") from None
    width = max(16, min(width, 3840))
    kind = request.query.get("kind", "processed")
    if kind not in ("processed", "input"):
        raise BadRequest("kind must be processed or input")
    frame = latest.frame if kind == "processed" else latest.input_frame
    loop = asyncio.get_running_loop()
    # the processed av frame encodes 2-4x faster than the tensor (swscale + YUV planes)
    data = await loop.run_in_executor(None, encode_preview_jpeg, frame, width)
    return web.Response(
        body=data,
        content_type="image/jpeg",
        headers={"Cache-Control": "no-store", "X-Frame-Index": str(latest.index)},
    )


async def presets(request: web.Request) -> web.Response:
    """The bundled example prompts ``{name: API-format graph}``, for the page's preset menu."""
    from ..prompts import list_presets, load_preset

    def collect() -> dict[str, Any]:
        graphs = {name: load_preset(name).graphs for name in list_presets()}
        return {name: g[0] if len(g) == 1 else g for name, g in graphs.items()}

    return web.json_response(await asyncio.get_running_loop().run_in_executor(None, collect))


async def index(request: web.Request) -> web.StreamResponse:
    page = resources.files("comfywhip_nb").joinpath("static/index.html")
    if not page.is_file():
        return web.Response(
            text="comfywhip_nb WHIP server: POST an SDP offer to /whip", content_type="text/plain"
        )
    text = page.read_text("utf-8")
    public_url = core_of(request).config.public_url
    if public_url:  # the page then talks to the address clients reach this instance at
        meta = f'<meta name="comfywhip-server" content="{html.escape(public_url)}">'
        text = text.replace("<head>", "<head>\n    " + meta, 1)
    return web.Response(text=text, content_type="text/html")


def setup_api_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/whip-stats", whip_stats)
    app.router.add_get("/streams/stats", streams_stats)
    app.router.add_get("/stream/{id}/stats", stream_stats)
    app.router.add_get("/metrics", metrics)
    app.router.add_route("*", "/prompts", prompts_endpoint)
    app.router.add_get("/preview/{id}.jpg", preview)
    app.router.add_get("/presets", presets)
    app.router.add_get("/", index)
    static_dir = resources.files("comfywhip_nb").joinpath("static")
    if static_dir.is_dir():
        app.router.add_static("/static/", str(static_dir))
