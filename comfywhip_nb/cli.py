"""``comfywhip``: serve | publish | demo | bench (``python -m comfywhip_nb`` is the same)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

logger = logging.getLogger("comfywhip_nb")


def _ice_server(value: str) -> Any:
    from .rtc.ice import parse_ice_server_arg

    try:
        return parse_ice_server_arg(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="comfywhip",
        description="A WHIP (RFC 9725) server that runs every video frame through a "
        "ComfyUI-style prompt.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the WHIP server in the foreground")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8889, help="port (default 8889; 0 = any)")
    serve.add_argument("--prompts", help="ComfyUI API-format prompt JSON file (default prompt)")
    serve.add_argument(
        "--prompts-dir",
        help="the only folder prompts may read files from (reference images of LoadImage)",
    )
    serve.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on requests")
    serve.add_argument(
        "--ice-server",
        action="append",
        type=_ice_server,
        default=None,
        metavar="URL[,USER,CRED]",
        help="STUN/TURN server for the server's peers and the Link header (repeatable); "
        "default: $COMFYWHIP_ICE_SERVERS, else none",
    )
    serve.add_argument("--cert", help="TLS certificate (PEM) for HTTPS")
    serve.add_argument("--key", help="TLS private key (PEM) for HTTPS")
    serve.add_argument(
        "--public-url",
        help="base URL clients reach this instance at (behind nginx: Location, WHEP and "
        "event links and the page use it), e.g. https://front.example/i/1",
    )
    serve.add_argument("--max-sessions", type=int, default=8, help="session limit (default 8)")
    serve.add_argument(
        "--nodes",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="load custom nodes (a module's NODE_CLASS_MAPPINGS); repeatable",
    )
    serve.add_argument(
        "--strict-if-match",
        action="store_true",
        help="answer 428 to a PATCH without If-Match (RFC 9725 strict)",
    )
    serve.add_argument(
        "--media-timeout",
        type=float,
        default=15.0,
        help="remove a session after this many seconds without media",
    )
    serve.add_argument(
        "--rate-limit",
        type=float,
        default=20.0,
        help="POST/PATCH/DELETE requests per second per client, bursts of twice that "
        "(default 20; 0 = off)",
    )
    serve.add_argument(
        "--echo-processed",
        action="store_true",
        help="send a sendrecv publisher its processed video back (ComfyStream style; "
        "RFC 9725 answers are recvonly, so off by default)",
    )
    serve.add_argument(
        "--ice-loopback",
        action="store_true",
        help="also offer a 127.0.0.1 ICE candidate (automatic when --host is a loopback "
        "address): for publishers on this machine when it has no other network",
    )
    serve.add_argument(
        "--warmup",
        action="store_true",
        help="run each new prompt once on a blank frame before it goes live",
    )
    serve.add_argument(
        "--comfyui",
        metavar="PATH",
        default=None,
        help="run prompts with the ComfyUI in PATH (its nodes, custom nodes and models, in "
        "this process; default $COMFYUI_PATH, else the built-in engine)",
    )
    serve.add_argument("--duration", type=float, default=None, help=argparse.SUPPRESS)

    publish = sub.add_parser("publish", help="publish to a WHIP endpoint with aiortc")
    publish.add_argument("url", help="WHIP endpoint URL, e.g. http://127.0.0.1:8889/whip")
    publish.add_argument(
        "--source",
        default="testsrc",
        help="testsrc | IMAGE file | VIDEO file | /dev/videoN (default testsrc)",
    )
    publish.add_argument("--prompts", help="prompt JSON file sent as ?prompts= for this session")
    publish.add_argument("--channel", help="channelId query parameter")
    publish.add_argument(
        "--duration", type=float, default=None, help="seconds to publish (default: until Ctrl-C)"
    )
    publish.add_argument("--token", help="bearer token")
    publish.add_argument("--audio", action="store_true", help="also send a 440 Hz tone")
    publish.add_argument(
        "--trickle", action="store_true", help="POST without candidates, then send them in a PATCH"
    )
    publish.add_argument("--codec", choices=["VP8", "H264"], help="preferred video codec")

    demo = sub.add_parser("demo", help="server + test pattern + prompt hot-swap, end to end")
    demo.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    demo.add_argument("--out", default="demo-out", help="output folder (default demo-out)")

    prompts = sub.add_parser("prompts", help="manage prompts on running servers")
    prompts_sub = prompts.add_subparsers(dest="prompts_command", required=True)
    push = prompts_sub.add_parser(
        "push", help="set one prompt file on several instances and report each answer"
    )
    push.add_argument("targets", nargs="+", metavar="URL... FILE", help="instance URLs, then FILE")
    push.add_argument("--channel", help="channelId to set (default: the default prompt)")
    push.add_argument("--token", help="bearer token")
    push.add_argument("--timeout", type=float, default=10.0, help="seconds per instance")

    bench = sub.add_parser("bench", help="benchmarks against a same-run raw baseline")
    bench.add_argument("--quick", action="store_true", help="short run (under 2 minutes)")
    bench.add_argument("--out", default="bench-out", help="output folder (default bench-out)")
    bench.add_argument(
        "--scenarios", help="comma-separated subset of a,b,c,d,e,f,g (g: --comfyui PATH)"
    )
    bench.add_argument("--codec", choices=["VP8", "H264"], help="video codec")
    return parser


def _load_nodes(specs: list[str]) -> None:
    if not specs:
        return
    from .prompts.custom_nodes import load_nodes_module

    for spec in specs:
        names = load_nodes_module(spec)
        print(f"loaded {len(names)} custom node(s) from {spec}: {', '.join(names)}")


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import WhipServer

    _load_nodes(args.nodes)
    prompts = None
    if args.prompts:
        prompts = Path(args.prompts).read_text(encoding="utf-8")
    server = WhipServer(
        host=args.host,
        port=args.port,
        prompts=prompts,
        token=args.token,
        ice_servers=args.ice_server,
        max_sessions=args.max_sessions,
        cert=args.cert,
        key=args.key,
        strict_if_match=args.strict_if_match,
        media_timeout=args.media_timeout,
        echo_processed=args.echo_processed,
        rate_limit=args.rate_limit,
        warmup=args.warmup,
        comfyui=args.comfyui,
        ice_loopback=args.ice_loopback,
        public_url=args.public_url,
        prompts_dir=args.prompts_dir,
    )
    runtime = getattr(server.engine, "runtime", None)
    if runtime is not None:
        print(f"comfywhip: ComfyUI {runtime.version} from {runtime.path} on {runtime.device}")
        for failure in runtime.failed_packs:
            print(f"comfywhip: custom node pack did not load: {failure}", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.token:
        logger.warning(
            "WHIP: listening on %s without --token: anyone who can reach this port can "
            "publish and change prompts",
            args.host,
        )
    server.start()
    print(
        f"comfywhip: WHIP endpoint {server.whip_url}  (page {server.url}/, Ctrl-C to stop)",
        flush=True,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait(args.duration)
    finally:
        server.stop()
        print("comfywhip: stopped", flush=True)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from .client.whip_client import run_publish

    prompts = None
    if args.prompts:
        try:
            prompts = json.loads(Path(args.prompts).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            print(f"error: cannot read prompts file {args.prompts}: {exc}", file=sys.stderr)
            return 2
    return asyncio.run(
        run_publish(
            args.url,
            source=args.source,
            duration=args.duration,
            token=args.token,
            prompts=prompts,
            channel_id=args.channel,
            audio=args.audio,
            trickle=args.trickle,
            video_codec=args.codec,
        )
    )


def cmd_prompts(args: argparse.Namespace) -> int:
    import asyncio

    from .client.prompt_push import push_prompts
    from .prompts import PromptError, load_prompt

    if len(args.targets) < 2:
        print("error: give at least one instance URL and then the prompt FILE", file=sys.stderr)
        return 2
    *urls, file = args.targets
    text = Path(file).read_text(encoding="utf-8")
    try:
        load_prompt(text)  # refuse a bad file before any instance sees it
    except PromptError as exc:
        print(f"error: {file}: {exc}", file=sys.stderr)
        return 1
    results = asyncio.run(
        push_prompts(urls, text, token=args.token, channel=args.channel, timeout=args.timeout)
    )
    for r in results:
        print(f"{r.url}: {r.status if r.status is not None else 'no answer'} {r.detail}")
    failed = sum(not r.ok for r in results)
    print(f"comfywhip: prompt set on {len(results) - failed} of {len(results)} instances")
    return 1 if failed else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(duration=args.duration, out=args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"] and not {"-h", "--help"} & set(argv):
        # the benchmark has its own parser: forward every option to it
        logging.basicConfig(level=logging.WARNING)
        try:
            from .bench import main as bench_main
        except ImportError:
            print("error: the benchmarks are not installed with this package", file=sys.stderr)
            return 2
        return int(bench_main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("aioice").setLevel(logging.WARNING)
    commands = {
        "serve": cmd_serve,
        "publish": cmd_publish,
        "demo": cmd_demo,
        "prompts": cmd_prompts,
    }
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        return 130
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
