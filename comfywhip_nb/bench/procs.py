"""What every benchmark process shares: loopback-only ICE, the command pipe, CPU time.

Each benchmark role (publisher, raw baseline receiver, project receiver) is a long-lived
``multiprocessing`` spawn child driven by the runner over a ``Pipe``: one command dict in,
one reply dict out. Long-lived so a leg costs no interpreter/torch start-up; separate
processes so each receiver's CPU time (``getrusage(RUSAGE_SELF)``) is its own.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import resource
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["Child", "command_loop", "cpu_seconds", "loopback_only", "quiet_logs"]

MAX_LIFETIME_S = 3 * 3600.0
"""A child whose parent vanished without saying ``quit`` still ends after this."""


def loopback_only() -> None:
    """ICE on 127.0.0.1 only: nothing else is reachable (or wanted) in a benchmark."""
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"]


def quiet_logs() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(processName)s %(name)s: %(message)s")
    for name in ("aioice", "aiortc", "comfywhip_nb"):
        logging.getLogger(name).setLevel(logging.WARNING)


def cpu_seconds() -> float:
    """User + system CPU of this process, all threads included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def command_loop(conn: Connection, handle: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Answer commands until ``quit``, a closed pipe or ``MAX_LIFETIME_S``; errors are replied
    as ``{"error": ...}`` so the runner can report them instead of hanging."""
    deadline = time.monotonic() + MAX_LIFETIME_S
    parent = os.getppid()
    while time.monotonic() < deadline:
        if not conn.poll(1.0):
            if os.getppid() != parent:  # orphaned: the runner died
                return
            continue
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message.get("cmd") == "ping":
            conn.send({"ok": True, "pid": os.getpid()})
            continue
        if message.get("cmd") == "quit":
            handle(message)
            conn.send({"ok": True})
            return
        try:
            reply = handle(message)
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        conn.send(reply)


class Child:
    """The runner's handle on one child process."""

    def __init__(self, name: str, target: Callable[[Connection], None]) -> None:
        context = multiprocessing.get_context("spawn")
        self.name = name
        self.conn, child_end = context.Pipe()
        self.process = context.Process(target=target, args=(child_end,), name=name, daemon=True)
        self.process.start()
        child_end.close()

    def call(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one command and wait for its reply; ``RuntimeError`` on error or timeout."""
        self.conn.send(message)
        if not self.conn.poll(timeout):
            raise RuntimeError(f"{self.name}: no reply to {message['cmd']!r} in {timeout:g} s")
        reply: dict[str, Any] = self.conn.recv()
        if "error" in reply:
            raise RuntimeError(f"{self.name}: {reply['error']}\n{reply.get('trace', '')}")
        return reply

    def close(self, timeout: float = 10.0) -> None:
        """Ask the child to quit; terminate it if it does not within ``timeout``."""
        if self.process.is_alive():
            with contextlib.suppress(RuntimeError, OSError, EOFError):
                self.call({"cmd": "quit"}, timeout)
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5.0)
        self.conn.close()
