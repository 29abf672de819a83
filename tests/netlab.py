"""Test hosts in Linux network namespaces: one switch, veth links, faults, and clean-up.

``Lab`` builds a private network that cannot reach the machine's own: every host is a
namespace whose only link (``eth0``, 10.216.N.x/24) ends on a bridge inside a hub namespace,
and no interface is ever created in the root namespace (both veth ends are created directly
inside their namespaces), so no traffic leaves it. Names carry a per-run prefix
(``cw16-<pid hex>-<random>``) so parallel runs and other suites never collide.

Clean-up cannot leak: processes started with ``Lab.spawn`` run in their own process group;
``Lab.close`` ends those groups, then kills whatever ``ip netns pids`` still finds in each of
*its* namespaces (only processes it started can be there), then deletes the namespaces, which
removes their links. ``close`` is idempotent and also runs at interpreter exit; namespaces of
a run that was killed outright are removed by the next ``Lab`` (``remove_stale``: the owner's
pid is in the name).

Code in the test process reaches a namespace through ``NetnsLoop``: an asyncio loop on a
thread that has entered the namespace with ``setns(2)`` (a network namespace is per thread on
Linux), so sockets made there (aiortc, aioice, aiohttp) live in that namespace.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
SUBNET_PREFIX = "10.216"


def unavailable_reason() -> str | None:
    """Why namespace tests cannot run here, or ``None`` when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} (iproute2) is not installed"
    probe = f"cw16-probe-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


@dataclass
class Host:
    """One namespace with one address on the lab's switch."""

    name: str
    ns: str
    address: str
    hub_if: str
    """The switch-side end of this host's link (shape traffic towards the host here)."""


@dataclass
class Lab:
    """A switch plus hosts; see the module docstring. Use as a context manager."""

    subnet: int = field(default_factory=lambda: 16 + secrets.randbelow(200))
    prefix: str = field(default_factory=lambda: f"cw16-{os.getpid():x}-{secrets.token_hex(2)}")
    hosts: dict[str, Host] = field(default_factory=dict)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _namespaces: list[str] = field(default_factory=list)
    _closed: bool = False

    def __post_init__(self) -> None:
        remove_stale()
        self.hub = f"{self.prefix}-hub"
        self._add_ns(self.hub)
        self.exec_ok(self.hub, "ip", "link", "add", "br0", "type", "bridge")
        self.exec_ok(self.hub, "ip", "link", "set", "br0", "up")
        self.exec_ok(self.hub, "ip", "link", "set", "lo", "up")
        atexit.register(self.close)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_ns(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._namespaces.append(ns)

    def exec_ok(self, ns: str, *cmd: str) -> str:
        result = subprocess.run(
            ["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=30
        )
        if result.returncode != 0:
            raise RuntimeError(f"[{ns}] {' '.join(cmd)}: {result.stderr.strip()}")
        return result.stdout

    def add_host(self, name: str) -> Host:
        """A new namespace linked to the switch; addresses count up from .11."""
        ns = f"{self.prefix}-{name}"
        index = len(self.hosts) + 11
        address = f"{SUBNET_PREFIX}.{self.subnet}.{index}"
        hub_if = f"v{index}"
        self._add_ns(ns)
        _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", hub_if, "netns",
            self.hub)  # fmt: skip
        self.exec_ok(self.hub, "ip", "link", "set", hub_if, "master", "br0")
        self.exec_ok(self.hub, "ip", "link", "set", hub_if, "up")
        self.exec_ok(ns, "ip", "link", "set", "lo", "up")
        self.exec_ok(ns, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
        self.exec_ok(ns, "ip", "link", "set", "eth0", "up")
        host = Host(name, ns, address, hub_if)
        self.hosts[name] = host
        return host

    # -- processes ----------------------------------------------------------------------
    def spawn(
        self, host: Host, cmd: Sequence[str], log_path: str | os.PathLike[str]
    ) -> subprocess.Popen[bytes]:
        """Start ``cmd`` inside ``host``'s namespace in its own process group."""
        log = open(log_path, "wb")  # noqa: SIM115 - closed with the process below
        proc = subprocess.Popen(
            ["ip", "netns", "exec", host.ns, *cmd],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._procs.append(proc)
        return proc

    @staticmethod
    def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        """End a spawned process group: ``sig`` first, SIGKILL after 5 s."""
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    # -- link faults ---------------------------------------------------------------------
    # This kernel is built without sch_netem (CONFIG_NET_SCH_NETEM unset), so loss and
    # blackouts are nftables rules inside the host's namespace (``numgen random`` drops N % of
    # the packets in and out; a blackout drops them all), a bottleneck is ``tc tbf`` on the
    # host's egress, and delay/jitter use netem only where the kernel has it.
    def impair(self, host: Host, loss_pct: float = 0.0) -> None:
        """Drop ``loss_pct`` % of ``host``'s packets each way (100: blackout; 0: clean).

        The drop happens on the switch (a bridge-family table in the hub namespace), as on a
        real path: the host's own sockets see no error, packets simply vanish.
        """
        table = f"cwfault_{host.hub_if}"
        subprocess.run(["ip", "netns", "exec", self.hub, "nft", "delete", "table", "bridge",
                        table], capture_output=True, timeout=30)  # fmt: skip
        if loss_pct <= 0:
            return
        rule = "drop" if loss_pct >= 100 else f"numgen random mod 1000 < {int(loss_pct * 10)} drop"
        dev = host.hub_if
        script = (
            f"table bridge {table} {{\n"
            "  chain faults { type filter hook forward priority 0; policy accept;\n"
            f'    meta iifname "{dev}" {rule}\n'
            f'    meta oifname "{dev}" {rule}\n'
            "  }\n"
            "}\n"
        )
        result = subprocess.run(["ip", "netns", "exec", self.hub, "nft", "-f", "-"],
                                input=script, capture_output=True, text=True,
                                timeout=30)  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"nft in {self.hub}: {result.stderr.strip()}")

    def bottleneck(self, host: Host, rate: str | None) -> None:
        """Limit ``host``'s egress to ``rate`` (e.g. ``"1mbit"``) with tc tbf; None: remove."""
        subprocess.run(["ip", "netns", "exec", host.ns, "tc", "qdisc", "del", "dev", "eth0",
                        "root"], capture_output=True, timeout=30)  # fmt: skip
        if rate:
            self.exec_ok(host.ns, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate",
                         rate, "burst", "32kbit", "latency", "400ms")  # fmt: skip

    def netem(self, host: Host, spec: str | None) -> None:
        """``tc netem`` ``spec`` (e.g. ``"delay 50ms 20ms"``) on both ends of ``host``'s link;
        raises ``NotImplementedError`` where the kernel has no netem."""
        for ns, dev in ((host.ns, "eth0"), (self.hub, host.hub_if)):
            if spec is None:
                subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev,
                                "root"], capture_output=True, timeout=30)  # fmt: skip
                continue
            result = subprocess.run(
                ["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root",
                 "netem", *spec.split()], capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            if result.returncode != 0:
                if "unknown" in result.stderr:
                    raise NotImplementedError("this kernel has no sch_netem")
                raise RuntimeError(f"tc netem in {ns}: {result.stderr.strip()}")

    # -- clean-up -----------------------------------------------------------------------
    def close(self) -> None:
        """Kill every process and delete every namespace this lab made; idempotent."""
        if self._closed:
            return
        self._closed = True
        for proc in self._procs:
            self.stop_process(proc)
        for ns in self._namespaces:
            pids = _ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:  # leftovers inside our own namespace are ours
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in reversed(self._namespaces):
            _ip("netns", "del", ns, check=False)
        atexit.unregister(self.close)


def remove_stale() -> None:
    """Delete lab namespaces whose creating process is gone (a run killed with SIGKILL, where
    neither finalizers nor atexit ran). The owner's pid is in the name: ``cw16-<pid hex>-``."""
    for ns in leftovers("cw16-"):
        parts = ns.split("-")
        try:
            owner = int(parts[1], 16)
        except (IndexError, ValueError):
            continue
        if owner == os.getpid() or os.path.exists(f"/proc/{owner}"):
            continue
        for pid in _ip("netns", "pids", ns, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _ip("netns", "del", ns, check=False)


def leftovers(prefix: str) -> list[str]:
    """Namespaces whose name starts with ``prefix`` (used to prove clean-up)."""
    out = _ip("netns", "list", check=False).stdout.split("\n")
    return [line.split()[0] for line in out if line.strip().startswith(prefix)]


class NetnsLoop:
    """An asyncio loop on a thread inside namespace ``ns``; ``run`` waits for a coroutine."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, args=(ready,), daemon=True)
        self._thread.start()
        ready.result(timeout=10)

    def _main(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{self.ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {self.ns} failed")
            finally:
                os.close(fd)
        except BaseException as exc:
            ready.set_exception(exc)
            return
        asyncio.set_event_loop(self.loop)
        ready.set_result(None)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        if not self.loop.is_running():
            return

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(drain(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


def wait_http(loop: NetnsLoop, url: str, timeout: float = 30) -> None:
    """Poll ``url`` from inside ``loop``'s namespace until it answers 200."""
    import aiohttp

    async def poll() -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if r.status == 200:
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url} did not answer within {timeout} s")
                await asyncio.sleep(0.2)

    loop.run(poll(), timeout=timeout + 10)
