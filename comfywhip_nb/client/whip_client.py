"""WHIP publisher (RFC 9725 client) built on aiortc.

Flow of ``WHIPClient.publish``:

1. open the source (test pattern, image, video file, V4L2 camera or a track) and add it to an
   ``RTCPeerConnection`` with ``sendonly`` transceivers and max-bundle (RFC 9725 §4.4.1);
2. ``setLocalDescription`` — aiortc gathers every local candidate before it returns;
3. ``POST`` the offer (``application/sdp``, ``Authorization: Bearer``, ``?channelId=`` and
   ``?prompts=<json>``); a 201 carries the answer, ``Location``, ``ETag`` and ``Link`` headers;
4. with ``trickle=True`` the POSTed offer has no candidates and one aggregated ``PATCH``
   (``application/trickle-ice-sdpfrag``, ``If-Match: <etag>``) sends them with
   ``a=end-of-candidates`` afterwards (RFC 9725 §4.3.2) — mainly to exercise a server's
   trickle path, since aiortc has every candidate before the POST anyway;
5. ``unpublish`` sends ``DELETE`` (404 is fine), closes the peer connection, stops the source.

ICE servers announced in ``Link`` headers are kept in ``ice_servers`` for information only:
aiortc fixes its ICE configuration when the peer connection is created and cannot restart
ICE, so they can only configure a later publish. For the same reason there is no ICE-restart
PATCH here.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCRtpSender,
    RTCSessionDescription,
)
from yarl import URL

from ..rtc.ice import IceServer, format_sdpfrag, parse_link_header, parse_sdpfrag, redacted
from .sources import open_source

__all__ = ["PublishError", "WHIPClient", "run_publish"]

logger = logging.getLogger(__name__)

VIDEO_CODECS = ("VP8", "H264")


class PublishError(Exception):
    """A WHIP request that failed: the server's status and message, or status 0 when no HTTP
    answer came back (connection refused, timeout)."""

    def __init__(self, method: str, url: str, status: int, message: str = "") -> None:
        self.method, self.url, self.status, self.message = method, url, status, message
        try:
            self.reason = http.HTTPStatus(status).phrase
        except ValueError:
            self.reason = ""
        head = f"WHIP {method} {url} failed"
        if status:
            head += f": {status} {self.reason}".rstrip()
        super().__init__(f"{head}: {message}" if message else head)


async def _error_message(resp: aiohttp.ClientResponse) -> str:
    """The server's explanation: RFC 9457 ``detail``/``title`` for problem JSON, else text."""
    text = (await resp.text(errors="replace")).strip()
    if "json" in resp.content_type:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            for key in ("detail", "title", "error", "message"):
                if isinstance(data.get(key), str):
                    return str(data[key])[:500]
    return text[:500]


def _prompts_param(prompts: Any) -> str | None:
    """Prompts for the ``?prompts=`` query: a dict/list, a JSON string or a JSON file path."""
    if prompts is None:
        return None
    if isinstance(prompts, (os.PathLike, str)) and not str(prompts).lstrip().startswith(("{", "[")):
        path = Path(prompts)
        if not path.is_file():
            raise ValueError(f"prompts {str(prompts)!r} is neither JSON nor an existing file")
        prompts = path.read_text()
    if isinstance(prompts, str):
        json.loads(prompts)  # fail here with a ValueError rather than as a server 400
        return prompts
    return json.dumps(prompts, separators=(",", ":"))


def _codec_preferences(name: str) -> list[RTCRtpCodecCapability]:
    """Only ``name`` (plus its rtx retransmission entries) for ``setCodecPreferences``."""
    wanted = (f"video/{name.lower()}", "video/rtx")
    return [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() in wanted]


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


class WHIPClient:
    """Publish one audio/video stream to a WHIP endpoint; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        prompts: Any = None,
        channel_id: str | None = None,
        ice_servers: list[IceServer] | None = None,
        trickle: bool = False,
        video_codec: str | None = None,
        on_state: Callable[[str], None] | None = None,
        http_timeout: float = 30.0,
    ) -> None:
        if URL(url).scheme not in ("http", "https"):
            raise ValueError(f"WHIP url must be http(s); got {url!r}")
        if video_codec is not None and video_codec.upper() not in VIDEO_CODECS:
            allowed = ", ".join(VIDEO_CODECS)
            raise ValueError(f"video_codec must be one of {allowed}; got {video_codec!r}")
        self.url, self.token, self.channel_id, self.trickle = url, token, channel_id, trickle
        self.video_codec = video_codec.upper() if video_codec else None
        self.prompts_json = _prompts_param(prompts)
        self.configured_ice_servers = list(ice_servers or [])
        self.on_state = on_state
        self.http_timeout = http_timeout
        self.pc: RTCPeerConnection | None = None
        self._http: aiohttp.ClientSession | None = None
        self._tracks: list[MediaStreamTrack] = []
        self._state = "new"
        self._state_changed = asyncio.Event()
        self._resource_url: str | None = None
        self._delete_pending = False
        self._etag: str | None = None
        self._offer_sdp: str | None = None
        self._answer_sdp: str | None = None
        self._link_servers: list[IceServer] = []

    @property
    def resource_url(self) -> str | None:
        """Absolute session URL (``Location`` resolved against the final POST URL)."""
        return self._resource_url

    @property
    def etag(self) -> str | None:
        """``ETag`` of the 201 answer: the ICE session tag sent back in ``If-Match``."""
        return self._etag

    @property
    def offer_sdp(self) -> str | None:
        """The offer as POSTed (without candidates when trickling)."""
        return self._offer_sdp

    @property
    def answer_sdp(self) -> str | None:
        """The server's SDP answer."""
        return self._answer_sdp

    @property
    def ice_servers(self) -> list[IceServer]:
        """STUN/TURN servers from the answer's ``Link`` headers (information only, see module
        docstring); the servers used are the ``ice_servers`` given to the constructor."""
        return list(self._link_servers)

    @property
    def connection_state(self) -> str:
        """``new``, ``connecting``, ``connected``, ``failed`` or ``closed`` (event: on_state)."""
        return self._state

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            logger.info("WHIP: connection state %s", state)
            self._state_changed.set()
            if self.on_state is not None:
                self.on_state(state)

    async def publish(
        self,
        source: str | os.PathLike[str] | MediaStreamTrack = "testsrc",
        *,
        audio: bool = False,
        width: int = 640,
        height: int = 480,
        fps: float = 30,
    ) -> None:
        """Open ``source`` (see ``open_source``) and set up the WHIP session.

        Raises ``PublishError`` for a refused request, ``ValueError`` for a bad source; on any
        failure whatever was set up (including the server resource) is torn down again.
        """
        if self.pc is not None:
            raise RuntimeError("already publishing; call unpublish() first")
        video, audio_track, _player = open_source(
            source, audio=audio, width=width, height=height, fps=fps
        )
        self._tracks = [t for t in (video, audio_track) if t is not None]
        config = RTCConfiguration(
            iceServers=[s.to_rtc() for s in self.configured_ice_servers],
            bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
        )
        pc = self.pc = RTCPeerConnection(config)
        pc.on("connectionstatechange", lambda: self._set_state(pc.connectionState))
        self._state, self._delete_pending = "new", False
        try:
            if video is not None:
                transceiver = pc.addTransceiver(video, direction="sendonly")
                if self.video_codec:
                    transceiver.setCodecPreferences(_codec_preferences(self.video_codec))
            if audio_track is not None:
                pc.addTransceiver(audio_track, direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            full_offer = pc.localDescription.sdp
            self._offer_sdp = strip_candidates(full_offer) if self.trickle else full_offer
            answer = await self._post()
            try:
                await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            except (ValueError, AssertionError) as exc:
                raise PublishError("POST", self.url, 201, f"unusable SDP answer: {exc}") from exc
            if self.trickle:
                await self._patch_candidates(full_offer, "video" if video else "audio")
        except BaseException:
            await self.unpublish()
            raise

    async def _post(self) -> str:
        """POST the offer; store what the 201 says and return the SDP answer."""
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.http_timeout)
            )
        query = {"channelId": self.channel_id, "prompts": self.prompts_json}
        url = URL(self.url).update_query({k: v for k, v in query.items() if v is not None})
        try:
            async with self._http.post(
                url, data=self._offer_sdp, headers=self._headers("application/sdp")
            ) as resp:
                logger.info("WHIP: POST %s -> %s", self.url, resp.status)
                if resp.status != 201:
                    raise PublishError("POST", self.url, resp.status, await _error_message(resp))
                location = resp.headers.get("Location")
                if not location:
                    raise PublishError("POST", self.url, 201, "answer has no Location header")
                # Resolve against the final URL: a 307 may have moved us to another host.
                self._resource_url = str(resp.url.join(URL(location)))
                self._delete_pending = True
                self._etag = resp.headers.get("ETag")
                self._answer_sdp = await resp.text()
                self._link_servers = []
                for value in resp.headers.getall("Link", []):
                    try:
                        self._link_servers += parse_link_header(value)
                    except ValueError as exc:
                        logger.warning("WHIP: ignoring malformed Link header: %s", exc)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise PublishError("POST", self.url, 0, str(exc) or type(exc).__name__) from exc
        for server in self._link_servers:
            logger.info("WHIP: server offers ICE server %s", redacted(server))
        return self._answer_sdp or ""

    async def _patch_candidates(self, full_offer: str, kind: str) -> None:
        """One aggregated PATCH with our candidates and end-of-candidates (RFC 9725 §4.3.2)."""
        assert self._http is not None and self._resource_url is not None
        local = parse_sdpfrag(full_offer)  # an SDP offer is a superset of the fragment syntax
        candidates = [c for c in local.candidates if c.mid == local.mid]
        mids = [local.mid] if local.mid is not None else ["0"]
        body = format_sdpfrag(local.ufrag, local.pwd, candidates, True, mids, kind=kind)
        headers = self._headers("application/trickle-ice-sdpfrag")
        if self._etag:
            headers["If-Match"] = self._etag
        try:
            async with self._http.patch(self._resource_url, data=body, headers=headers) as resp:
                logger.info("WHIP: PATCH %s -> %s", self._resource_url, resp.status)
                if resp.status in (405, 501):
                    logger.warning("WHIP: server does not accept trickle ICE PATCH")
                elif not 200 <= resp.status < 300:
                    message = await _error_message(resp)
                    raise PublishError("PATCH", self._resource_url, resp.status, message)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise PublishError(
                "PATCH", self._resource_url, 0, str(exc) or type(exc).__name__
            ) from exc

    async def wait_connected(self, timeout: float = 10) -> None:
        """Return once ICE+DTLS are connected; ``ConnectionError`` if that failed,
        ``TimeoutError`` if it takes longer than ``timeout`` seconds."""
        if self.pc is None:
            raise RuntimeError("not publishing; call publish() first")
        deadline = asyncio.get_running_loop().time() + timeout
        while self._state != "connected":
            if self._state in ("failed", "closed"):
                raise ConnectionError(f"WHIP: connection {self._state}")
            self._state_changed.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(self._state_changed.wait(), max(remaining, 0))
            except asyncio.TimeoutError:
                raise TimeoutError(
                    f"WHIP: not connected after {timeout} s (state {self._state})"
                ) from None

    async def unpublish(self) -> None:
        """DELETE the session (404 is fine), close the peer connection; idempotent."""
        if self._delete_pending and self._resource_url and self._http is not None:
            self._delete_pending = False
            try:
                # Short timeout: this runs on Ctrl-C, and a hung server must not hold the exit.
                async with self._http.delete(
                    self._resource_url,
                    headers=self._headers(),
                    timeout=aiohttp.ClientTimeout(total=min(self.http_timeout, 5.0)),
                ) as resp:
                    logger.info("WHIP: DELETE %s -> %s", self._resource_url, resp.status)
                    if resp.status >= 300 and resp.status != 404:
                        logger.warning("WHIP: DELETE failed: %s", await _error_message(resp))
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                logger.warning("WHIP: DELETE %s failed: %s", self._resource_url, exc)
        pc, self.pc = self.pc, None
        if pc is not None:
            await pc.close()
        for track in self._tracks:
            track.stop()  # stopping a MediaPlayer's tracks stops its reader thread
        self._tracks = []
        if self._http is not None:
            await self._http.close()
            self._http = None
        if pc is not None:
            self._set_state("closed")

    async def __aenter__(self) -> WHIPClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.unpublish()


async def run_publish(
    url: str,
    source: str = "testsrc",
    duration: float | None = None,
    token: str | None = None,
    prompts: Any = None,
    channel_id: str | None = None,
    audio: bool = False,
    trickle: bool = False,
    *,
    ice_servers: list[IceServer] | None = None,
    video_codec: str | None = None,
) -> int:
    """``comfywhip publish``: publish until ``duration`` elapses or SIGINT/SIGTERM, always
    DELETE. Returns 0 when the stream connected, 1 on a WHIP or connection failure, 2 for
    bad arguments."""
    done = asyncio.Event()
    connected = False

    def on_state(state: str) -> None:
        nonlocal connected
        print(f"WHIP: connection state {state}", flush=True)
        connected = connected or state == "connected"
        if state == "failed":
            done.set()

    try:
        client = WHIPClient(
            url,
            token=token,
            prompts=prompts,
            channel_id=channel_id,
            ice_servers=ice_servers,
            trickle=trickle,
            video_codec=video_codec,
            on_state=on_state,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, done.set)
            handled.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread, or Windows: Ctrl-C still raises KeyboardInterrupt
    try:
        await client.publish(source, audio=audio)
        print(f"WHIP: published, session {client.resource_url}", flush=True)
        with contextlib.suppress(asyncio.TimeoutError):  # duration elapsed
            await asyncio.wait_for(done.wait(), duration)
        if not connected:
            print("error: the WebRTC connection was not established", file=sys.stderr)
            return 1
        return 0
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except PublishError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.unpublish()
        for sig in handled:
            loop.remove_signal_handler(sig)
