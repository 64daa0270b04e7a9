"""``totem.transport: iba`` under the real executive: three daemons whose transports talk verbs to the fake
backend (one fake fabric per cluster), with CPG on top; and the daemon's clean refusal when pyverbs or
an RDMA device is missing."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from pycorosync.cpg import ConfChg, CpgClient, CsError, CsErrorCode, Deliver
from pycorosync.transports.iba.verbs import BACKEND_ENV, FABRIC_ENV, NO_DEVICE_MESSAGE, NO_PYVERBS_MESSAGE
from tests.cluster.conftest import Cluster

pytestmark = pytest.mark.timeout(240)

GROUP = b"iba-test"


def iba_cluster(make_cluster: Callable[..., Cluster], n: int, env: dict[str, str] | None = None,
                wait: bool = True) -> Cluster:
    """A cluster whose config says ``transport: iba``, on the fake verbs backend unless ``env`` says otherwise."""
    base_env = {BACKEND_ENV: "fake"}
    cluster = make_cluster(n, start=False, env={i: {**base_env, **(env or {})} for i in range(1, n + 1)})
    for _i, node in cluster.nodes.items():
        node.env.setdefault(FABRIC_ENV, cluster.name)
        text = node.config_path.read_text()
        assert "transport: udpu" in text
        node.config_path.write_text(text.replace("transport: udpu", "transport: iba"))
    if wait:
        cluster.start()
        cluster.wait_ring()
    return cluster


@pytest.fixture
def clients() -> Iterator[Callable[[CpgClient], CpgClient]]:
    with ExitStack() as stack:
        yield lambda c: stack.enter_context(c)


def _retry(call: Callable[[], None], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            call()
            return
        except CsError as exc:
            if exc.code != CsErrorCode.CS_ERR_TRY_AGAIN or time.monotonic() > deadline:
                raise
        time.sleep(0.005)


def _join(cluster: Cluster, nodeid: int, keep: Callable[[CpgClient], CpgClient]) -> CpgClient:
    c = keep(CpgClient(str(cluster.nodes[nodeid].run_dir), timeout=10.0))
    _retry(lambda: c.join(GROUP))
    return c


def _deliveries(c: CpgClient, count: int, timeout: float = 60.0) -> list[Deliver]:
    out: list[Deliver] = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"{len(out)} of {count} messages delivered"
        ev = c.next_event(min(left, 1.0))
        if isinstance(ev, Deliver):
            out.append(ev)
    return out


def _wait_members(c: CpgClient, want: set[int], timeout: float = 30.0) -> ConfChg:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no group view with nodes {sorted(want)}"
        ev = c.next_event(min(left, 1.0))
        if isinstance(ev, ConfChg) and {m.nodeid for m in ev.members} == want:
            return ev


def _send_interleaved(senders: dict[int, CpgClient], per_sender: int) -> None:
    for k in range(per_sender):
        for i, c in senders.items():
            body = struct.pack("<II", i, k) + bytes(k % 300)
            _retry(lambda c=c, body=body: c.mcast_joined(body))


def _check_order(got: dict[int, list[Deliver]], senders: list[int], per_sender: int) -> None:
    heads = {i: [struct.unpack_from("<II", d.msg) for d in ds] for i, ds in got.items()}
    first = next(iter(heads.values()))
    for i, h in heads.items():
        assert h == first, f"node {i} delivered in another order"
    for s in senders:
        assert [k for sender, k in first if sender == s] == list(range(per_sender)), f"node {s}'s messages lost"


def test_three_nodes_over_fake_verbs_form_a_ring_and_deliver_cpg_messages_in_one_order(
        make_cluster: Callable[..., Cluster], clients: Callable[[CpgClient], CpgClient]) -> None:
    cluster = iba_cluster(make_cluster, 3)
    cs = {i: _join(cluster, i, clients) for i in (1, 2, 3)}
    for c in cs.values():
        _wait_members(c, {1, 2, 3})
    per_sender = 150
    _send_interleaved(cs, per_sender)
    got = {i: _deliveries(c, 3 * per_sender) for i, c in cs.items()}
    _check_order(got, [1, 2, 3], per_sender)
    log = cluster.nodes[1].log_path.read_text()
    assert "iba transport (fake backend)" in log
    assert "link to node 2 up" in log and "link to node 3 up" in log
    # corosync-cfgtool -s reads the link table the iba transport shares, as with udp
    out = subprocess.run(
        [sys.executable, "-m", "pycorosync", "--run-dir", str(cluster.nodes[1].run_dir), "cfgtool", "-s"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "transport iba" in out.stdout
    assert out.stdout.count("connected") >= 2, out.stdout


def test_killed_node_is_dropped_then_reconnects_and_rejoins_over_fake_verbs(
        make_cluster: Callable[..., Cluster], clients: Callable[[CpgClient], CpgClient]) -> None:
    cluster = iba_cluster(make_cluster, 3)
    cs = {i: _join(cluster, i, clients) for i in (1, 2)}
    for c in cs.values():
        _wait_members(c, {1, 2})
    cluster.nodes[3].kill()
    cluster.wait_ring([1, 2], timeout=(cluster.token_ms + cluster.consensus_ms) / 1000 + 15)
    _send_interleaved(cs, 50)  # the survivors still agree while node 3 is gone
    got = {i: _deliveries(c, 100) for i, c in cs.items()}
    _check_order(got, [1, 2], 50)
    cluster.nodes[3].start()
    cluster.wait_ring([1, 2, 3], timeout=60)
    cs[3] = _join(cluster, 3, clients)
    for c in cs.values():
        _wait_members(c, {1, 2, 3})
    _send_interleaved(cs, 50)
    got = {i: _deliveries(c, 150) for i, c in cs.items()}
    _check_order(got, [1, 2, 3], 50)
    # node 1 connects to node 3: once at start, once more after node 3 came back
    log1 = cluster.nodes[1].log_path.read_text()
    assert log1.count("link to node 3 up") >= 2, log1[-3000:]
    assert "link to node 3 down" in log1


def _exit_of(cluster: Cluster, timeout: float = 60.0) -> tuple[int | None, str]:
    node = cluster.nodes[1]
    node.start()
    assert node.proc is not None
    try:
        code = node.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        code = None
    return code, node.log_path.read_text()


def test_daemon_without_pyverbs_exits_with_the_install_hint_and_no_traceback(
        make_cluster: Callable[..., Cluster]) -> None:
    cluster = iba_cluster(make_cluster, 1, env={BACKEND_ENV: "pyverbs"}, wait=False)
    code, log = _exit_of(cluster)
    assert code == 1, log
    assert NO_PYVERBS_MESSAGE in log
    assert "Traceback" not in log


def test_daemon_with_pyverbs_but_no_device_exits_with_no_rdma_device_found(
        make_cluster: Callable[..., Cluster], tmp_path: Path) -> None:
    # a stand-in for pyverbs on a host without a device: get_device_list raises as the real one does
    stub = tmp_path / "stub" / "pyverbs"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("")
    (stub / "pyverbs_error.py").write_text(
        "class PyverbsError(Exception):\n    pass\n\n\n"
        "class PyverbsRDMAError(PyverbsError):\n"
        "    def __init__(self, msg, error_code=-1):\n        super().__init__(msg)\n"
        "        self.error_code = error_code\n")
    (stub / "device.py").write_text(
        "from pyverbs.pyverbs_error import PyverbsRDMAError\n\n\n"
        "def get_device_list():\n    raise PyverbsRDMAError('Failed to get devices list')\n")
    path = os.pathsep.join(p for p in (str(stub.parent), os.environ.get("PYTHONPATH", "")) if p)
    cluster = iba_cluster(make_cluster, 1, env={BACKEND_ENV: "pyverbs", "PYTHONPATH": path}, wait=False)
    code, log = _exit_of(cluster)
    assert code == 1, log
    assert NO_DEVICE_MESSAGE in log
    assert "Failed to get devices list" in log
    assert "Traceback" not in log
