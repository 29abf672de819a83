"""A throwaway network namespace for WebRTC stacks that ignore loopback (libnice).

libnice, GStreamer's ICE agent, never gathers loopback addresses, nor interfaces whose name
starts with ``veth``, ``docker`` or ``virbr``. On a machine with only ``lo`` it has no
candidate at all. ``NetNamespace`` creates a namespace with ``lo`` and a veth pair named
``cwpub0``/``cwpub1`` (address on ``cwpub0``), then moves the *calling thread* into it with
setns(2). Threads and processes started from that thread inherit it: a ``WhipServer`` started
there binds the namespace's own 127.0.0.1, and the publisher it runs reaches it. Leaving
moves the thread back, kills whatever still runs in the namespace (only processes this test
started can be there) and deletes it, which also removes the veth pair.

Needs root (CAP_SYS_ADMIN) and iproute2; ``unavailable_reason()`` says why not.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import os
import shutil
import signal
import subprocess
from types import TracebackType

__all__ = ["NetNamespace", "unavailable_reason"]

CLONE_NEWNET = 0x40000000
PREFIX = "cwnb-"
_counter = itertools.count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=20)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@functools.cache
def unavailable_reason() -> str | None:
    """Why a namespace cannot be made here, or None when it can."""
    if shutil.which("ip") is None:
        return "iproute2 ('ip') is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"{PREFIX}probe-{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    veth = _ip("-n", probe, "link", "add", "cwpub0", "type", "veth", "peer", "name", "cwpub1")
    _ip("netns", "del", probe, check=False)
    if veth.returncode != 0:
        return f"cannot create a veth pair: {veth.stderr.strip()}"
    return None


def remove_stale() -> None:
    """Delete namespaces left by test processes that no longer exist (e.g. SIGKILLed)."""
    listing = _ip("netns", "list", check=False).stdout.split("\n")
    for line in listing:
        name = line.split(" ")[0]
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX) :].split("-")[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _ip("netns", "del", name, check=False)


class NetNamespace:
    """``with NetNamespace() as ns:`` runs the block's thread inside a fresh namespace.

    ``veth=False`` leaves it with ``lo`` only: a machine without a network, as in containers.
    """

    def __init__(self, veth: bool = True) -> None:
        n = next(_counter)
        self.name = f"{PREFIX}{os.getpid()}-{n}"
        self.veth = veth
        self.address = f"10.213.{n % 250}.1" if veth else None
        self._home_fd: int | None = None

    def __enter__(self) -> NetNamespace:
        remove_stale()
        _ip("netns", "add", self.name)
        try:
            ns = ("-n", self.name)
            _ip(*ns, "link", "set", "lo", "up")
            if self.veth:
                _ip(*ns, "link", "add", "cwpub0", "type", "veth", "peer", "name", "cwpub1")
                _ip(*ns, "addr", "add", f"{self.address}/24", "dev", "cwpub0")
                _ip(*ns, "link", "set", "cwpub0", "up")
                _ip(*ns, "link", "set", "cwpub1", "up")
            # IPv6 link-local addresses would only add candidates that cannot help
            subprocess.run(
                ["ip", "netns", "exec", self.name, "sysctl", "-qw",
                 "net.ipv6.conf.all.disable_ipv6=1"],
                check=False, capture_output=True, timeout=20,
            )  # fmt: skip
            self._home_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            target = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
            try:
                _setns(target)
            finally:
                os.close(target)
        except BaseException:
            self._cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        if self._home_fd is not None:
            try:
                _setns(self._home_fd)
            finally:
                os.close(self._home_fd)
                self._home_fd = None
        pids = _ip("netns", "pids", self.name, check=False).stdout.split()
        for pid in pids:  # only processes this test started can live in its namespace
            if pid.isdigit() and int(pid) != os.getpid():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        _ip("netns", "del", self.name, check=False)

    def exists(self) -> bool:
        return self.name in _ip("netns", "list", check=False).stdout.split()
