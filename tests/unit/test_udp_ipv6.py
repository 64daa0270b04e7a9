"""The UDP transport over IPv6: udpu on ::1 (one port per node), and udp multicast (ff02::/ff12:: groups)
inside a private network namespace, over a veth pair holding the three nodes' addresses. (Loopback does
not do: an IPv6 group on lo is unreachable without a multicast route, and with one, nothing is looped
back to the members.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.unit.test_udp_transport import AES, PLAIN

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[2]

MCAST_SCRIPT = textwrap.dedent("""
    import json, subprocess, sys, time
    for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"],
                ["ip", "link", "set", "v1", "up"], ["ip", "link", "set", "v0", "up"],
                *(["ip", "-6", "addr", "add", f"fd00::{i}/64", "dev", "v0", "nodad"] for i in (1, 2, 3))):
        subprocess.run(cmd, check=True)
    deadline = time.monotonic() + 10
    while "LOWER_UP" not in subprocess.run(["ip", "-o", "link", "show", "v0"], capture_output=True, text=True).stdout:
        assert time.monotonic() < deadline, "veth v0 never came up"
        time.sleep(0.02)
    from pycorosync.transports.crypto import CryptoSettings
    from pycorosync.transports.udp.plan import make_plan
    from tests.unit.test_udp_transport import Node, run_until
    group, cipher = sys.argv[1], sys.argv[2]
    crypto = CryptoSettings(cipher, "sha256" if cipher != "none" else "none", "v6", bytes(range(200)))
    ids = [(i, f"fd00::{i}") for i in (1, 2, 3)]
    nodes = [Node(make_plan(i, ids, crypto, transport="udp", ip_version="ipv6", mcastport=5405, mcastaddr=group))
             for i, _ in ids]
    try:
        for k in range(200):
            nodes[0].tx.push(0, k.to_bytes(4, "little") * 50)
        nodes[0].tx.push(3, b"token for 3")
        run_until(nodes, lambda: len(nodes[1].got) >= 200 and len(nodes[2].got) >= 201, timeout_s=60)
        print(json.dumps({
            "family": nodes[0].t.plan.family,
            "got2": [p.hex() for _s, p in nodes[1].got], "got3": [p.hex() for _s, p in nodes[2].got],
            "senders": sorted({s for n in nodes[1:] for s, _p in n.got}), "got1": len(nodes[0].got),
            "own_dropped": nodes[0].t.counters()["rx_drop_own"],
        }))
    finally:
        for n in nodes:
            n.t.close()
""")


def _netns_or_skip() -> None:
    if os.geteuid() != 0:
        pytest.skip("IPv6 multicast on loopback needs a private network namespace (root: unshare -n)")
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("unshare(1) and ip(8) are needed to make a private network namespace")


@pytest.mark.parametrize("cipher", ["none", "aes256"])
@pytest.mark.parametrize("group", ["ff02::7a:1", "ff12::7a:2"])
def test_udp_multicast_over_ipv6_reaches_every_other_node_in_a_private_namespace(group: str, cipher: str) -> None:
    _netns_or_skip()
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", MCAST_SCRIPT, group, cipher], cwd=REPO, capture_output=True,
        text=True, timeout=150)
    if proc.returncode != 0 and "Operation not permitted" in proc.stderr:
        pytest.skip(f"no private network namespace here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["family"] == 10  # AF_INET6
    want = [(k.to_bytes(4, "little") * 50).hex() for k in range(200)]
    assert res["got2"] == want
    assert res["got3"] == [*want, b"token for 3".hex()]
    assert res["senders"] == [1] and res["got1"] == 0
    assert res["own_dropped"] >= 1  # our own multicast looped back and was not delivered


def test_udpu_over_ipv6_loopback_in_both_crypto_modes() -> None:
    """udpu on ::1 with a port per node (test_udp_transport covers AES; this adds the plain mode)."""
    import socket

    from pycorosync.transports.udp.plan import make_plan
    from tests.unit.test_udp_transport import Node, free_port, run_until, seq_payload

    for crypto in (PLAIN, AES):
        p1, p2 = free_port("::1", socket.AF_INET6), free_port("::1", socket.AF_INET6)
        ids = [(1, "::1"), (2, "::1")]
        a = Node(make_plan(1, ids, crypto, ports=((1, p1), (2, p2))))
        b = Node(make_plan(2, ids, crypto, ports=((1, p1), (2, p2))))
        try:
            assert a.t.plan.family == socket.AF_INET6
            for i in range(100):
                a.tx.push(2, seq_payload(i, 512))
            run_until([a, b], lambda b=b: len(b.got) >= 100)
            assert b.got == [(1, seq_payload(i, 512)) for i in range(100)]
            assert a.t.plan.max_datagram_bytes == a.t.plan.netmtu - 48
        finally:
            a.t.close()
            b.t.close()
