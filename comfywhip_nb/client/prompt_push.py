"""``comfywhip prompts push URL... FILE``: set one prompt on several instances.

Behind a balancer every instance holds its own prompts; pushing the same file to each keeps
them alike. Each instance answers on its own: the result lists every answer, so a partial
failure is visible (and the command exits non-zero).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

__all__ = ["PushResult", "prompts_url", "push_prompts"]


@dataclass(frozen=True)
class PushResult:
    """One instance's answer to ``POST /prompts``."""

    url: str
    status: int | None
    """HTTP status, or ``None`` when no answer came (connection refused, timeout)."""
    detail: str

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def prompts_url(base: str, channel: str | None = None) -> str:
    """``http://host:port[/prefix]`` (or a URL already ending in ``/prompts``) -> the endpoint."""
    url = URL(base)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"not an http(s) URL: {base!r}")
    if not url.path.rstrip("/").endswith("/prompts"):
        url = url.with_path(url.path.rstrip("/") + "/prompts")
    return str(url.update_query(channelId=channel) if channel else url.with_query(None))


def _describe(status: int, text: str) -> str:
    try:
        body: Any = json.loads(text)
    except ValueError:
        return text.strip()[:300]
    if isinstance(body, dict):
        if "version" in body:
            return f"prompt version {body['version']}"
        for key in ("detail", "error", "title"):  # problem+json (RFC 9457) first
            if key in body:
                return str(body[key])[:300]
    return json.dumps(body)[:300]


async def _push_one(
    session: aiohttp.ClientSession, url: str, body: str, headers: dict[str, str]
) -> PushResult:
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            return PushResult(url, resp.status, _describe(resp.status, await resp.text()))
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        return PushResult(url, None, f"{type(exc).__name__}: {exc}".rstrip(": "))


async def push_prompts(
    urls: list[str],
    prompt_json: str,
    *,
    token: str | None = None,
    channel: str | None = None,
    timeout: float = 10.0,
) -> list[PushResult]:
    """POST ``prompt_json`` to every instance concurrently; one result per URL, in order."""
    targets = [prompts_url(u, channel) for u in urls]
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        return list(
            await asyncio.gather(*(_push_one(session, t, prompt_json, headers) for t in targets))
        )
