"""Scale-out behind Debian's nginx (issue 16): three ``comfywhip serve`` processes, each in its
own network namespace, nginx with ``deploy/nginx/`` in a fourth, aiortc publishers in a fifth.

Checks: nine publishers spread three per instance (``/whip-stats``), PATCH and DELETE reach the
instance named in ``Location``, stopping an instance sends new POSTs to the others, and no
client ever sees a 5xx other than 502/503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import aioice.ice
import pytest
from netlab import Host, Lab, NetnsLoop, leftovers, unavailable_reason, wait_http

from comfywhip_nb.client.whip_client import WHIPClient

ROOT = Path(__file__).resolve().parent.parent
NGINX = "/usr/sbin/nginx"

_reason = unavailable_reason()
pytestmark = [
    pytest.mark.skipif(_reason is not None, reason=_reason or ""),
    pytest.mark.skipif(shutil.which(NGINX) is None, reason="nginx missing (make network-deps)"),
]


def render_nginx(prefix: Path, subnet_prefix: str) -> None:
    """The shipped deploy/nginx files with the example 10.0.0.x addresses replaced."""
    (prefix / "comfywhip").mkdir(parents=True)
    (prefix / "tmp").mkdir()
    src = ROOT / "deploy" / "nginx"
    for rel in ("comfywhip.conf", "comfywhip/upstream.conf", "comfywhip/instances.conf"):
        text = (src / rel).read_text().replace("10.0.0.", subnet_prefix + ".")
        (prefix / rel).write_text(text)
    temps = "\n".join(
        f"    {kind}_temp_path {prefix}/tmp/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (prefix / "nginx.conf").write_text(
        f"""daemon off;
user root;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
{temps}
    include comfywhip.conf;
}}
"""
    )


@dataclass
class Cluster:
    lab: Lab
    servers: list[Host]
    front: Host
    pub: Host
    loop: NetnsLoop
    procs: dict[str, object] = field(default_factory=dict)
    statuses: list[tuple[str, str, int, str | None]] = field(default_factory=list)
    """Every answer a client got through nginx: (method, url, status, Retry-After)."""

    @property
    def front_url(self) -> str:
        return f"http://{self.front.address}"

    async def request(self, method: str, url: str, **kw: object) -> tuple[int, dict, str]:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, url, timeout=aiohttp.ClientTimeout(total=20), **kw) as r,
        ):
            text = await r.text()
            self.statuses.append((method, url, r.status, r.headers.get("Retry-After")))
            return r.status, dict(r.headers), text

    def stats(self, index: int) -> dict:
        """``/whip-stats`` of instance ``index`` (0-based), asked through its /i/N prefix."""

        async def get() -> dict:
            status, _, text = await self.request(
                "GET", f"{self.front_url}/i/{index + 1}/whip-stats"
            )
            assert status == 200, text
            import json

            return json.loads(text)

        return self.loop.run(get())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    logs = tmp_path_factory.mktemp("scaleout")
    lab = Lab()
    loop: NetnsLoop | None = None
    original = aioice.ice.get_host_addresses
    try:
        servers = [lab.add_host(f"s{i}") for i in (1, 2, 3)]  # .11 .12 .13
        front = lab.add_host("ngx")
        pub = lab.add_host("pub")
        subnet_prefix = front.address.rsplit(".", 1)[0]
        render_nginx(logs / "nginx", subnet_prefix)
        cl = Cluster(lab, servers, front, pub, loop := NetnsLoop(pub.ns))
        for i, host in enumerate(servers, 1):
            cl.procs[host.name] = lab.spawn(
                host,
                [sys.executable, "-m", "comfywhip_nb", "serve", "--host", host.address,
                 "--port", "8889", "--public-url", f"{cl.front_url}/i/{i}",
                 "--rate-limit", "0", "--max-sessions", "8"],
                logs / f"{host.name}.log",
            )  # fmt: skip
        cl.procs["nginx"] = lab.spawn(
            front, [NGINX, "-p", str(logs / "nginx"), "-c", str(logs / "nginx/nginx.conf")],
            logs / "nginx.out",
        )  # fmt: skip
        # ICE in the publisher namespace: its own veth address (aioice skips 127.0.0.1)
        aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: [pub.address]
        for host in servers:
            wait_http(loop, f"http://{host.address}:8889/health", timeout=90)
        wait_http(loop, f"{cl.front_url}/health", timeout=30)
        yield cl
    finally:
        aioice.ice.get_host_addresses = original
        if loop is not None:
            loop.close()
        prefix = lab.prefix
        lab.close()
        assert leftovers(prefix) == [], "namespaces left behind"


def _publish(cl: Cluster, count: int) -> list[WHIPClient]:
    async def go() -> list[WHIPClient]:
        clients = []
        for _ in range(count):  # one after the other: least_conn ties go round-robin
            c = WHIPClient(f"{cl.front_url}/whip")
            await c.publish("testsrc", width=160, height=120, fps=10)
            cl.statuses.append(("POST", c.url, 201, None))
            clients.append(c)
        await asyncio.gather(*(c.wait_connected(30) for c in clients))
        return clients

    return cl.loop.run(go(), timeout=180)


def _instance_of(client: WHIPClient) -> int:
    """0-based instance from the Location's /i/N/ prefix."""
    path = client.resource_url.split("/i/", 1)[1]
    return int(path.split("/", 1)[0]) - 1


def _assert_only_retryable_5xx(cl: Cluster) -> None:
    bad = [s for s in cl.statuses if s[2] >= 500 and not (s[2] in (502, 503) and s[3])]
    assert not bad, f"5xx without Retry-After or other than 502/503: {bad}"


def test_nine_publishers_spread_three_per_instance_and_resources_pin(cluster: Cluster) -> None:
    cl = cluster
    clients = _publish(cl, 9)
    try:
        by_instance: dict[int, list[str]] = {0: [], 1: [], 2: []}
        for c in clients:
            by_instance[_instance_of(c)].append(c.resource_url.rsplit("/", 1)[1])
        for index in range(3):
            stats = cl.stats(index)
            assert len(stats) == 3, (index, stats.keys())
            assert sorted(stats) == sorted(by_instance[index])  # Location names the holder

        # PATCH reaches the holder: a stale If-Match is 412 there (elsewhere it would be 404)
        target = clients[4]
        frag = "a=end-of-candidates\r\n"

        async def patch(if_match: str) -> int:
            status, _, _ = await cl.request(
                "PATCH",
                target.resource_url,
                data=frag,
                headers={"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": if_match},
            )
            return status

        assert cl.loop.run(patch('"stale-etag"')) == 412

        async def end_of_candidates() -> int:
            status, _, _ = await cl.request(
                "PATCH",
                target.resource_url,
                data=frag,
                headers={
                    "Content-Type": "application/trickle-ice-sdpfrag",
                    "If-Match": target.etag or "*",
                },
            )
            return status

        assert cl.loop.run(end_of_candidates()) == 204

        # DELETE reaches the holder: its count drops to two, the others keep three
        holder = _instance_of(target)
        cl.loop.run(target.unpublish())
        clients.remove(target)
        counts = [len(cl.stats(i)) for i in range(3)]
        assert counts[holder] == 2 and sum(counts) == 8, counts

        # stopping one instance: the next POSTs go to the living ones
        dead = (holder + 1) % 3
        victim = cl.procs[cl.servers[dead].name]
        cl.lab.stop_process(victim, signal.SIGKILL)  # type: ignore[arg-type]
        fresh = _publish(cl, 4)
        clients.extend(fresh)
        assert all(_instance_of(c) != dead for c in fresh), [c.resource_url for c in fresh]

        async def dead_resource() -> tuple[int, dict, str]:
            return await cl.request("GET", f"{cl.front_url}/i/{dead + 1}/whip-stats")

        status, headers, _ = cl.loop.run(dead_resource())
        assert status == 503 and headers.get("Retry-After")

        # the dead instance's publishers see their connection fail (ICE consent expires)
        orphans = [c for c in clients if _instance_of(c) == dead]
        assert len(orphans) == 3

        async def wait_failed() -> float:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 90:  # bounded; aioice gives up after ~30 s
                if all(c.connection_state in ("failed", "closed") for c in orphans):
                    return time.monotonic() - t0
                await asyncio.sleep(0.5)
            raise AssertionError([c.connection_state for c in orphans])

        waited = cl.loop.run(wait_failed(), timeout=120)
        print(f"orphaned publishers saw their connection fail {waited:.1f} s after the check")
        _assert_only_retryable_5xx(cl)
    finally:

        async def close_all() -> None:
            await asyncio.gather(*(c.unpublish() for c in clients))

        cl.loop.run(close_all(), timeout=60)


def test_no_instance_up_answers_503_with_retry_after(cluster: Cluster) -> None:
    cl = cluster
    for host in cl.servers:
        cl.lab.stop_process(cl.procs[host.name], signal.SIGKILL)  # type: ignore[arg-type]

    async def post() -> tuple[int, dict, str]:
        return await cl.request(
            "POST",
            f"{cl.front_url}/whip",
            data="v=0\r\n",
            headers={"Content-Type": "application/sdp"},
        )

    status, headers, body = cl.loop.run(post())
    assert status == 503, body
    assert headers.get("Retry-After") and "no comfywhip instance" in body
    _assert_only_retryable_5xx(cl)
