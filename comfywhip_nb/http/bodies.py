"""Reading what a request carries: size-capped UTF-8 bodies, content types, prompt JSON.

Prompt JSON is checked by ``prompts.validation`` (off the loop); this module maps its
``PromptError`` to the HTTP 400 that names the failing nodes.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..errors import BadRequest, PayloadTooLarge
from ..prompts.graph import PromptError
from ..prompts.validation import describe_prompt_error, load_prompt_data

__all__ = ["read_body", "validate_prompts"]


async def read_body(request: web.Request, limit: int) -> str:
    """Read a UTF-8 body of at most ``limit`` bytes, or raise 413/400."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(length, limit)
    # StreamReader.read(n) returns as soon as *some* bytes are there: a body that arrives in
    # several TCP segments would be cut short. Read until EOF (or one byte over the limit).
    data = bytearray()
    while len(data) <= limit:
        chunk = await request.content.read(limit + 1 - len(data))
        if not chunk:
            break
        data += chunk
    if len(data) > limit:
        raise PayloadTooLarge(None, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request body is not valid UTF-8 (byte {exc.start})") from None


async def validate_prompts(
    raw: Any, warmup: bool = False, *, engine: Any = None, image_dir: str | None = None
) -> Any:
    """Validate decoded prompt JSON (dict or list) in the executor with the server's engine
    (``core.engine``; the built-in one when None); 400 on any problem. Reference images
    load from ``image_dir`` (the server's ``prompts_dir``) only."""
    try:
        return await load_prompt_data(raw, warmup, image_dir, engine=engine)
    except PromptError as exc:
        message, details = describe_prompt_error(exc)
        raise BadRequest(message, extra=details) from None
