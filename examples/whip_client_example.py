"""Publish to a WHIP endpoint from the command line with ``comfywhip_nb.client``.

    python examples/whip_client_example.py http://127.0.0.1:8889/whip --duration 10
    python examples/whip_client_example.py URL --source clip.mp4 --prompts invert.json --audio

Exit status: 0 when the stream connected, 1 on a WHIP or connection failure, 2 for bad
arguments. The session is DELETEd on exit, including on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from comfywhip_nb.client.whip_client import run_publish


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Publish a stream to a WHIP (RFC 9725) endpoint.")
    parser.add_argument("url", help="WHIP endpoint, e.g. http://127.0.0.1:8889/whip")
    parser.add_argument(
        "--source",
        default="testsrc",
        help="testsrc (default), an image, a video file or /dev/videoN",
    )
    parser.add_argument("--duration", type=float, help="seconds to publish (default: until Ctrl-C)")
    parser.add_argument("--token", help="bearer token for the Authorization header")
    parser.add_argument("--prompts", metavar="FILE", help="ComfyUI API-format prompt JSON file")
    parser.add_argument("--channel", help="channelId query parameter")
    parser.add_argument("--audio", action="store_true", help="also send audio (file's or a tone)")
    parser.add_argument(
        "--trickle",
        action="store_true",
        help="POST an offer without candidates, then PATCH them (trickle ICE)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log WHIP protocol steps")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    return asyncio.run(
        run_publish(
            args.url,
            source=args.source,
            duration=args.duration,
            token=args.token,
            prompts=args.prompts,
            channel_id=args.channel,
            audio=args.audio,
            trickle=args.trickle,
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
