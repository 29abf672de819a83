"""``WhipServer``: the WHIP server as a notebook-friendly object.

Who owns what:
- The server owns one daemon thread running its *own* asyncio loop; aiohttp, aiortc and all
  session state live there. The kernel's loop is never touched and ``nest_asyncio`` is never
  applied (the original is archived and breaks ``asyncio.current_task()`` on new Pythons).
- Public methods are synchronous, thread-safe wrappers: they hand a coroutine to the loop
  with ``asyncio.run_coroutine_threadsafe`` and wait with a timeout. This module is the only
  one that crosses that boundary (plus the per-session torch workers in ``pipeline/processor.py``).
- Snapshots returned to the caller (``sessions``, ``stats()``) are copies.
- Re-running a cell that starts a server on the same host/port stops the previous instance
  first (a process-wide registry of running servers), so no zombie keeps the port.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import logging
import ssl
import threading
import weakref
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, TypeVar

from aiohttp import web

from .http.api_routes import setup_api_routes
from .http.middleware import CORE_KEY, EGRESS_KEY, middlewares
from .http.trace import TraceRecorder, trace_middleware
from .http.whip import normalize_public_url, setup_whip_routes
from .pipeline.egress import Egress
from .pipeline.processor import ProcessedFrame
from .prompts.engines import comfyui_path_from_env, make_engine
from .prompts.store import PromptStore, VersionedPrompt
from .rtc.end_reason import EndReason, SessionEnd
from .rtc.ice import IceServer, ice_servers_from_env, parse_ice_server_arg
from .rtc.sessions import SessionInfo
from .server_state import ServerConfig, WhipCore

__all__ = ["PromptVersion", "WhipServer"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: running servers by (host, port), so re-running a notebook cell can stop the old one
_RUNNING: dict[tuple[str, int], weakref.ref[WhipServer]] = {}
_RUNNING_LOCK = threading.Lock()


class PromptVersion(int):
    """The version a swap recorded; ``not_following``: ids of sessions that keep their own."""

    not_following: tuple[str, ...]

    def __new__(cls, version: int, not_following: tuple[str, ...] = ()) -> PromptVersion:
        value = super().__new__(cls, version)
        value.not_following = tuple(not_following)
        return value


def _coerce_ice_servers(servers: Any) -> list[IceServer]:
    if servers is None:
        return ice_servers_from_env()
    result = []
    for item in servers:
        if isinstance(item, IceServer):
            result.append(item)
        elif isinstance(item, str):
            result.append(parse_ice_server_arg(item))
        elif isinstance(item, dict):
            result.append(IceServer(**item))
        else:
            raise TypeError(f"ice_servers entries must be IceServer, str or dict, got {item!r}")
    return result


class WhipServer:
    """A WHIP ingest server running in a background thread of this process.

    >>> server = WhipServer(port=0).start()
    >>> server.whip_url  # doctest: +SKIP
    'http://127.0.0.1:40321/whip'
    >>> server.stop()
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8889,
        prompts: Any = None,
        token: str | None = None,
        ice_servers: Any = None,
        max_sessions: int = 8,
        *,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        strict_if_match: bool = False,
        media_timeout: float = 15.0,
        connect_timeout: float = 30.0,
        frame_timeout: float = 2.0,
        cors_origins: str = "*",
        rate_limit: float = 20.0,
        prompts_dir: str | Path | None = None,
        echo_processed: bool = False,
        warmup: bool = False,
        shared_encoding: bool = True,
        comfyui: str | Path | None = None,
        ice_loopback: bool = False,
        public_url: str | None = None,
    ) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, got {max_sessions}")
        if not rate_limit >= 0:
            raise ValueError(f"rate_limit must be >= 0 (0 disables it), got {rate_limit}")
        if (cert is None) != (key is None):
            raise ValueError("HTTPS needs both cert and key")
        public_url = normalize_public_url(public_url)
        self.config = ServerConfig(
            host=host,
            port=int(port),
            token=token or None,
            ice_servers=_coerce_ice_servers(ice_servers),
            max_sessions=max_sessions,
            strict_if_match=strict_if_match,
            media_timeout=media_timeout,
            connect_timeout=connect_timeout,
            frame_timeout=frame_timeout,
            cors_origins=cors_origins,
            rate_limit=float(rate_limit),
            prompts_dir=str(prompts_dir) if prompts_dir else None,
            echo_processed=echo_processed,
            warmup=warmup,
            shared_encoding=shared_encoding,
            comfyui=str(comfyui) if comfyui else comfyui_path_from_env(),
            ice_loopback=ice_loopback,
            public_url=public_url,
        )
        self._cert, self._key = cert, key
        #: the prompt engine: built-in, or the ComfyUI at ``comfyui`` / $COMFYUI_PATH, loaded
        #: into this process now (in the caller's thread: start-up errors surface in the cell)
        self.engine = make_engine(self.config.comfyui)
        initial = self._load(prompts) if prompts is not None else None
        self._store = PromptStore(initial)
        self._core: WhipCore | None = None
        self._egress: Egress | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None
        self._lock = threading.RLock()
        #: signalling trace of recent sessions (HTTP exchanges), read by WhipInspector
        self.trace = TraceRecorder()

    # -- prompt validation happens in the caller's thread: errors surface in the cell ------
    def _load(self, prompts: Any) -> Any:
        prompt = self.engine.load(prompts, allowed_dir=self.config.prompts_dir)
        if self.config.warmup:
            from .prompts.warmup import warm_up

            warm_up(prompt)
        return prompt

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 15.0) -> WhipServer:
        """Bind and serve; returns once bound. Raises ``OSError`` naming a taken port."""
        with self._lock:
            if self.running:
                return self
            self._stop_previous_on_same_port()
            loop = asyncio.new_event_loop()
            started = threading.Event()
            failure: list[BaseException] = []

            def run() -> None:
                asyncio.set_event_loop(loop)
                try:
                    loop.run_until_complete(self._startup())
                except BaseException as exc:
                    failure.append(exc)
                    started.set()
                    loop.run_until_complete(self._cleanup())
                    loop.close()
                    return
                started.set()
                loop.run_forever()
                # stop() ended run_forever: finish cleanup here, on the loop's own thread
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

            self._loop = loop
            self._thread = threading.Thread(target=run, name="comfywhip-server", daemon=True)
            self._thread.start()
            if not started.wait(timeout):
                raise TimeoutError(f"WhipServer did not start within {timeout} s")
            if failure:
                self._thread.join(timeout)
                self._thread = None
                self._loop = None
                raise self._explain(failure[0])
            with _RUNNING_LOCK:
                _RUNNING[(self.config.host, self.port)] = weakref.ref(self)
            logger.info("WHIP: server listening on %s", self.whip_url)
            return self

    def _explain(self, exc: BaseException) -> BaseException:
        if isinstance(exc, OSError) and exc.errno in (errno.EADDRINUSE, errno.EACCES):
            what = "already in use" if exc.errno == errno.EADDRINUSE else "not allowed"
            return OSError(
                exc.errno,
                f"cannot listen on {self.config.host}:{self.config.port}: the port is {what} "
                "(another program, or a server started elsewhere in this kernel). Stop it, "
                "choose another port, or pass port=0 to pick a free one.",
            )
        return exc

    def _stop_previous_on_same_port(self) -> None:
        if self.config.port == 0:
            return
        with _RUNNING_LOCK:
            ref = _RUNNING.get((self.config.host, self.config.port))
        previous = ref() if ref else None
        if previous is not None and previous is not self and previous.running:
            logger.warning(
                "WHIP: stopping the previous server on %s:%s (cell re-run)",
                self.config.host,
                self.config.port,
            )
            previous.stop()

    async def _startup(self) -> None:
        self._core = WhipCore(self.config, self._store, self.engine)
        app = web.Application(
            middlewares=[trace_middleware(self.trace), *middlewares(self._core)],
            client_max_size=max(self.config.max_json_bytes, self.config.max_sdp_bytes) + 1024,
        )
        app[CORE_KEY] = self._core
        self._egress = app[EGRESS_KEY] = Egress(self._core)
        setup_whip_routes(app)
        setup_api_routes(app)
        self._install_extensions(app)
        # ?prompts= carries a whole graph in the request line: allow 64 KiB, not aiohttp's 8 KiB
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            max_line_size=64 * 1024,
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self.config.host,
            self.config.port,
            ssl_context=self._ssl_context(),
            reuse_address=True,
        )
        await site.start()
        await self._core.startup()
        addresses = self._runner.addresses
        self._bound_port = int(addresses[0][1]) if addresses else self.config.port

    def _install_extensions(self, app: web.Application) -> None:
        """Optional modules (WHEP, ComfyStream compatibility, events) add their routes."""
        for name in ("http.whep", "comfystream.offer", "http.events"):
            try:
                module = __import__(f"comfywhip_nb.{name}", fromlist=["setup_routes"])
            except ImportError:
                continue
            setup = getattr(module, "setup_routes", None)
            if setup is not None:
                setup(app)

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self._cert is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self._cert), str(self._key))
        return context

    async def _cleanup(self) -> None:
        if self._core is not None:
            await self._core.shutdown()
        if self._egress is not None:
            self._egress.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def stop(self, timeout: float = 10.0) -> None:
        """Close every session and free the port. Idempotent; safe from any thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            if thread.is_alive() and not loop.is_closed():
                future = asyncio.run_coroutine_threadsafe(self._cleanup(), loop)
                with contextlib.suppress(Exception):
                    future.result(timeout)
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            self._loop = self._thread = None
            with _RUNNING_LOCK:
                key = (self.config.host, self._bound_port or self.config.port)
                ref = _RUNNING.get(key)
                if ref is not None and ref() is self:
                    del _RUNNING[key]
            logger.info("WHIP: server on port %s stopped", self._bound_port)

    def __enter__(self) -> WhipServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the thread boundary --------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        loop = self._loop
        if loop is None or not self.running:
            coro.close()
            raise RuntimeError("the server is not running; call start() first")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("blocking WhipServer calls cannot run on the server's own loop")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    @property
    def core(self) -> WhipCore:
        """The loop-side state. Loop thread only: tests and the inspector read it; notebook
        code uses the thread-safe methods below."""
        if self._core is None:
            raise RuntimeError("the server is not running; call start() first")
        return self._core

    @property
    def egress(self) -> Egress:
        """The WHEP/echo feeds of this server (loop thread only, like ``core``)."""
        if self._egress is None:
            raise RuntimeError("the server is not running; call start() first")
        return self._egress

    # -- public, thread-safe API ----------------------------------------------------------
    @property
    def port(self) -> int:
        return self._bound_port if self._bound_port is not None else self.config.port

    @property
    def url(self) -> str:
        scheme = "https" if self._cert else "http"
        host = self.config.host
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}"

    @property
    def whip_url(self) -> str:
        return f"{self.url}/whip"

    @property
    def sessions(self) -> MappingProxyType[str, SessionInfo]:
        """Immutable snapshot ``{id: SessionInfo}`` (empty when stopped)."""
        if not self.running:
            return MappingProxyType({})

        async def snap() -> dict[str, SessionInfo]:
            return self.core.sessions.snapshot()

        return MappingProxyType(self._call(snap()))

    def stats(self) -> dict[str, dict[str, Any]]:
        """The same data as ``GET /whip-stats``."""
        return {sid: info.to_dict() for sid, info in self.sessions.items()}

    def set_prompts(
        self, prompts: Any, channel: str | None = None, *, session: str | None = None
    ) -> PromptVersion:
        """Validate ``prompts`` (``PromptError`` on problems), then swap atomically.

        ``channel=None`` sets the server default; a channel or a session id narrows it.
        ``prompts=None`` clears a channel/session prompt (or sets passthrough as default).
        Returns the new prompt version (an ``int``) whose ``not_following`` lists the
        sessions that keep a prompt of their own instead.
        """
        prompt = self._load(prompts) if prompts is not None else None
        if not self.running:
            if channel is None and session is None:
                return PromptVersion(self._store.set_default(prompt).version)
            if session is None:
                return PromptVersion(self._store.set_channel(channel, prompt).version)
            raise RuntimeError("the server is not running; sessions have no prompt yet")

        async def swap() -> PromptVersion:
            done = self.core.swap_prompts(prompt, channel=channel, session_id=session)
            return PromptVersion(done.version, done.not_following)

        try:
            return self._call(swap())
        except KeyError:
            raise KeyError(f"no session {session!r}") from None

    # -- prompt snapshots (thread-safe: the store has its own lock) ----------------------
    def prompt_entry(self, channel: str | None = None) -> VersionedPrompt:
        """The prompt a channel runs (its own, else the default); ``None``: the default."""
        return self._store.channel_entry(channel)

    def prompt_channels(self) -> dict[str, VersionedPrompt]:
        """Every channel with a prompt of its own."""
        return self._store.channels()

    # -- worker-thread frame hook ------------------------------------------------------
    def add_frame_hook(self, hook: Callable[[ProcessedFrame], None]) -> Callable[[], None]:
        """Call ``hook(processed)`` for every processed frame of every session, on that
        session's worker thread (keep it short and thread-safe). Returns its remover."""
        return self._add_hook("frame_hooks", hook)

    def add_audio_hook(self, hook: Callable[[str, Any], None]) -> Callable[[], None]:
        """Call ``hook(session_id, chunk)`` for every processed audio buffer (an
        ``AudioChunk``) of every session, on its audio worker thread. Returns its remover."""
        return self._add_hook("audio_hooks", hook)

    def _add_hook(self, attribute: str, hook: Callable[..., None]) -> Callable[[], None]:
        async def apply(add: bool) -> None:  # the core's tuples belong to the loop
            hooks = getattr(self.core, attribute)
            changed = (*hooks, hook) if add else tuple(h for h in hooks if h != hook)
            setattr(self.core, attribute, changed)

        self._call(apply(True))

        def remove() -> None:
            if self.running:
                self._call(apply(False))

        return remove

    def latest_audio(
        self, seconds: float = 5.0, session_id: str | None = None
    ) -> tuple[Any, int] | None:
        """The last ``seconds`` of processed audio of a session (default: the newest session
        with audio) as ``(float32 ndarray [channels, samples] in -1..1, sample_rate)``;
        ``None`` when no audio has been processed yet. ``KeyError`` for an unknown id."""
        if seconds <= 0:
            raise ValueError(f"seconds must be positive, got {seconds!r}")
        if not self.running:
            return None

        async def pick() -> Any:  # the registry belongs to the loop
            core = self.core
            if session_id is not None:
                session = core.sessions.get(session_id)
                if session is None:
                    raise KeyError(f"no session {session_id!r}")
                return session.audio_processor
            live = [s for s in core.sessions.values() if s.audio_processor.latest() is not None]
            return max(live, key=lambda s: s.created_mono).audio_processor if live else None

        processor = self._call(pick())
        return None if processor is None else processor.recent(seconds)

    def latest_frame(self, session_id: str | None = None, kind: str = "pil") -> Any:
        """Newest processed frame of a session (default: the newest session with one).

        ``kind``: ``"pil"`` (PIL.Image), ``"ndarray"`` (uint8 HxWx3), ``"tensor"`` (IMAGE
        [1,H,W,3] float32) or ``"processed"`` (the ``ProcessedFrame`` record). ``None`` when
        nothing has been processed yet.
        """
        from .pipeline import frames

        if not self.running:
            return None

        async def pick() -> ProcessedFrame | None:  # the registry belongs to the loop
            core = self.core
            if session_id is not None:
                session = core.sessions.get(session_id)
                if session is None:
                    raise KeyError(f"no session {session_id!r}")
                return session.processor.latest()
            live = [(s.created_mono, s.processor.latest()) for s in core.sessions.values()]
            frames_ = [(t, f) for t, f in live if f is not None]
            return max(frames_, key=lambda item: item[0])[1] if frames_ else None

        latest = self._call(pick())
        if latest is None:
            return None
        if kind == "pil":
            return frames.to_pil(latest.image)
        if kind == "ndarray":
            return frames.image_to_ndarray(latest.image)
        if kind == "tensor":
            return latest.image
        if kind == "processed":
            return latest
        raise ValueError(f"kind must be pil, ndarray, tensor or processed, got {kind!r}")

    def close_session(self, session_id: str) -> bool:
        """End one session as a DELETE would; returns False for an unknown id."""

        async def close() -> bool:
            end = SessionEnd(EndReason.CLOSED_BY_SERVER, "closed from Python")
            return await self.core.close_session(session_id, end)

        return self._call(close())

    def dashboard(self, **options: Any) -> Any:
        """The ipywidgets dashboard: sessions, live WHEP video (JPEG preview as fallback),
        stats plot, prompt editor, inspector. ``options`` go to ``widgets.Dashboard`` (e.g.
        ``mode="jpeg"``, ``url=`` the address the browser reaches the server at)."""
        from .widgets import Dashboard

        return Dashboard(self, **options)

    def _repr_html_(self) -> str:
        """The status card a notebook shows when the server is a cell's last expression."""
        from .widgets.status import status_card_html

        return status_card_html(self)

    def __repr__(self) -> str:
        state = f"running at {self.whip_url}" if self.running else "stopped"
        return f"<WhipServer {state}, {len(self.sessions) if self.running else 0} sessions>"


@atexit.register
def _stop_all() -> None:
    with _RUNNING_LOCK:
        servers = [ref() for ref in _RUNNING.values()]
    for server in servers:
        if server is not None:
            with contextlib.suppress(Exception):
                server.stop(timeout=2.0)
