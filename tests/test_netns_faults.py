"""Network faults between publisher and server (issue 16), in network namespaces.

A ``comfywhip serve`` process in one namespace, an aiortc publisher in another, and a monitor
in a third that reads ``/whip-stats`` over a clean link (so the fault does not delay the
measurement). Loss and the blackout are nftables drops on the publisher's link (this kernel
has no sch_netem; see tests/netlab.py). Checked: the session survives 5 % loss and a 3 s
blackout, loss is answered with NACKs and counted, and processing resumes within 2 s after
the blackout (the issue's bound; without the server's gap resync it took 4.5-6 s at
640x480). Other conditions and figures: benchmarks/network_faults.py.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import aioice.ice
import pytest
from netlab import Host, Lab, NetnsLoop, leftovers, unavailable_reason, wait_http

from comfywhip_nb.client.whip_client import WHIPClient

_reason = unavailable_reason()
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")


@dataclass
class Rig:
    lab: Lab
    srv: Host
    pub: Host
    pub_loop: NetnsLoop
    mon_loop: NetnsLoop

    @property
    def whip_url(self) -> str:
        return f"http://{self.srv.address}:8889/whip"

    def stats(self) -> dict:
        async def get() -> dict:
            url = f"http://{self.srv.address}:8889/whip-stats"
            timeout = aiohttp.ClientTimeout(total=5)
            async with aiohttp.ClientSession() as http, http.get(url, timeout=timeout) as r:
                return json.loads(await r.text())

        return self.mon_loop.run(get())

    def processed(self, session_id: str) -> int:
        entry = self.stats().get(session_id)
        return -1 if entry is None else int(entry["frames_processed"])

    def publish(self, width: int = 320, height: int = 240, fps: int = 15) -> WHIPClient:
        async def go() -> WHIPClient:
            client = WHIPClient(self.whip_url)
            await client.publish("testsrc", width=width, height=height, fps=fps)
            await client.wait_connected(30)
            return client

        return self.pub_loop.run(go(), timeout=60)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    logs = tmp_path_factory.mktemp("faults")
    lab = Lab()
    loops: list[NetnsLoop] = []
    original = aioice.ice.get_host_addresses
    try:
        srv, mon, pub = lab.add_host("srv"), lab.add_host("mon"), lab.add_host("pub")
        lab.spawn(
            srv,
            [sys.executable, "-m", "comfywhip_nb", "serve", "--host", srv.address,
             "--port", "8889", "--rate-limit", "0"],
            logs / "server.log",
        )  # fmt: skip
        loops += [NetnsLoop(pub.ns), NetnsLoop(mon.ns)]
        aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: [pub.address]
        wait_http(loops[1], f"http://{srv.address}:8889/health", timeout=90)
        yield Rig(lab, srv, pub, loops[0], loops[1])
    finally:
        aioice.ice.get_host_addresses = original
        for loop in loops:
            loop.close()
        prefix = lab.prefix
        lab.close()
        assert leftovers(prefix) == [], "namespaces left behind"


def _rate(rig: Rig, session_id: str, seconds: float) -> float:
    start, t0 = rig.processed(session_id), time.monotonic()
    time.sleep(seconds)
    return (rig.processed(session_id) - start) / (time.monotonic() - t0)


def test_session_survives_5_percent_loss_and_counts_nacks(rig: Rig) -> None:
    client = rig.publish()
    session_id = client.resource_url.rsplit("/", 1)[1]
    try:
        time.sleep(2)  # past the first keyframe
        clean = _rate(rig, session_id, 4)
        rig.lab.impair(rig.pub, 5)
        try:
            lossy = _rate(rig, session_id, 8)
        finally:
            rig.lab.impair(rig.pub, 0)
        entry = rig.stats()[session_id]
        counts = {k: entry[k] for k in ("packets_lost", "nacks_sent", "plis_sent")}
        share = lossy / clean if clean else 0.0
        print(f"5 % loss: {lossy:.1f} fps processed vs {clean:.1f} clean ({share:.0%}); {counts}")
        assert clean > 0
        assert lossy > 0, "nothing was processed under 5 % loss"
        assert entry["connection_state"] == "connected"
        assert client.connection_state == "connected"
        assert entry["nacks_sent"] > 0, entry  # losses are asked for again
    finally:
        rig.pub_loop.run(client.unpublish())


def test_session_survives_3s_blackout_and_resumes_within_2s(rig: Rig) -> None:
    # 640x480/30 fps: a 3 s gap outgrows the publisher's retransmission history, so only the
    # server's resync (rtc/resync.py) gets processing going again quickly
    client = rig.publish(640, 480, 30)
    session_id = client.resource_url.rsplit("/", 1)[1]
    try:
        time.sleep(2)
        assert _rate(rig, session_id, 2) > 0
        rig.lab.impair(rig.pub, 100)
        time.sleep(3)
        before = rig.processed(session_id)
        rig.lab.impair(rig.pub, 0)
        cleared = time.monotonic()
        recovered: float | None = None
        while time.monotonic() - cleared < 10:  # bounded: measure, then judge
            if rig.processed(session_id) > before:
                recovered = time.monotonic() - cleared
                break
            time.sleep(0.05)
        entry = rig.stats().get(session_id)
        print(f"3 s blackout: processing resumed after {recovered} s; stats {entry}")
        assert entry is not None, "the session ended during a 3 s blackout"
        assert recovered is not None, "processing never resumed after the blackout"
        assert recovered <= 2.0, f"processing resumed only after {recovered:.2f} s"
        time.sleep(2)
        assert rig.stats()[session_id]["connection_state"] == "connected"
        assert client.connection_state == "connected"
    finally:
        rig.pub_loop.run(client.unpublish())
