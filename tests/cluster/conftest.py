"""Real clusters on loopback for tests (``pycorosync.localcluster``): N ``pycorosync daemon -f`` processes, each with its own config,
run dir and address (127.0.0.<nodeid>, one free UDP port per cluster).

Fixtures::

    def test_x(cluster3):                      # 3 nodes, ring formed and synchronized, torn down after
        cluster3.nodes[1].status()             # totem.status.json: ring_id, members, sync_completed
        with cluster3.nodes[2].connect("cpg") as conn: ...      # ipc.client connection to a service
        cluster3.nodes[3].kill_child("totem")  # SIGKILL one process of a node (supervisor restarts it)
        cluster3.wait_ring([1, 2])             # every listed node in one synchronized ring of exactly them

    def test_z(shared3): ...                   # one cluster per module, for tests that break no node

    def test_y(make_cluster):                  # your own shape
        c = make_cluster(5, totem={"token": 1000}, env={2: {"SOME": "1"}}, test_services=("testecho",))

``make_cluster(n, *, totem=None, env=None, test_services=("testecho",), start=True, wait=True,
extra_config="")`` returns a ``Cluster``; every cluster made is stopped at teardown, even when the
test failed: SIGTERM to each daemon, SIGKILL after a deadline to anything of it still alive, and its
``/dev/shm/pcs-<cluster>-*`` segments removed. Node logs are in ``<tmp_path>/n<id>/daemon.log``;
``Cluster.logs()`` returns them (printed on failure by the tests that want them).

``Node``: ``start()``, ``stop(timeout)`` (SIGTERM; returns the exit code), ``kill()`` (SIGKILL of every
process of the node, children first: a crash), ``kill_child(name)``, ``child_pid(name)``, ``pids()``,
``status()``, ``connect(service)``, ``alive``. ``EchoClient(node)`` drives the ``testecho`` service;
``order_chain(client.delivered)`` hashes what it delivered, in order (equal chains = same messages in the
same order); ``wait_regular(clients, members, timeout)`` waits until every client saw the same regular
configuration of exactly ``members``.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pycorosync.ipc.errors import CS_ERR_TRY_AGAIN, CsError
from pycorosync.ipc.framing import check_response
from pycorosync.localcluster import (  # noqa: F401 - re-exported for the tests
    CONFIG_TEMPLATE,
    DEFAULT_TOTEM,
    SHM_DIR,
    START_TIMEOUT_S,
    Cluster,
    Node,
    wait_for,
)


class EchoClient:
    """A client of a node's ``testecho`` service: multicast, collect deliveries and sync events."""

    def __init__(self, node: Node) -> None:
        from pycorosync.engine.runtime import testservice as ts

        self.ts = ts
        self.node = node
        self.conn = node.connect("testecho")
        self.delivered: list[tuple[int, list[int], bytes]] = []  # (sender, ring_id, body)
        self.confchgs: list[dict[str, Any]] = []
        self.syncs: list[dict[str, Any]] = []

    def mcast(self, body: bytes, guarantee: int = 2, timeout: float = 30.0) -> None:
        """Multicasts ``body``, retrying CS_ERR_TRY_AGAIN until ``timeout`` (collecting events meanwhile)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                check_response(self.conn.request(self.ts.MCAST, bytes([guarantee]) + body, timeout=timeout)[1])
                return
            except CsError as exc:
                if exc.code != CS_ERR_TRY_AGAIN or time.monotonic() >= deadline:
                    raise
            self.poll(0.002)

    def status(self) -> dict[str, Any]:
        return dict(json.loads(check_response(self.conn.request(self.ts.STATUS, b"", timeout=10)[1])))

    def _on_event(self, rtype: int, payload: bytes) -> None:
        if rtype == self.ts.EV_DELIVERED:
            sender, rep, seq = self.ts.DELIVERED_HEADER.unpack_from(payload)
            self.delivered.append((sender, [rep, seq], payload[self.ts.DELIVERED_HEADER.size:]))
        elif rtype == self.ts.EV_CONFCHG:
            self.confchgs.append(json.loads(payload))
        elif rtype == self.ts.EV_SYNC:
            self.syncs.append(json.loads(payload))

    def poll(self, timeout: float = 0.0) -> int:
        """Collects the events waiting (waiting up to ``timeout`` for the first); returns how many."""
        from pycorosync.ipc.client import CS_DISPATCH_ALL

        n = self.conn.dispatch(CS_DISPATCH_ALL, self._on_event)
        if n == 0 and timeout > 0 and self.conn.wait_event(timeout):
            n = self.conn.dispatch(CS_DISPATCH_ALL, self._on_event)
        return n

    def wait_delivered(self, count: int, timeout: float = 30.0) -> list[tuple[int, list[int], bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.delivered) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"node {self.node.nodeid}: {len(self.delivered)} of {count} messages delivered"
            self.poll(min(left, 0.2))
        return self.delivered

    def close(self) -> None:
        self.conn.close()


def order_chain(delivered: list[tuple[int, list[int], bytes]]) -> str:
    """A hash chain over (sender, body) in delivery order: equal chains = same messages, same order."""
    h = hashlib.sha256()
    for sender, _ring, body in delivered:
        h.update(struct.pack("<I", sender) + hashlib.sha256(body).digest())
    return h.hexdigest()


def wait_regular(clients: Mapping[int, EchoClient], members: list[int], timeout: float) -> list[int]:
    """Waits until every client saw a regular configuration of exactly ``members``; asserts that they all saw
    the same ring id (the one they agree on) and returns it."""
    want = sorted(members)

    def ring_of(client: EchoClient) -> list[int] | None:
        client.poll(0.0)
        for event in reversed(client.confchgs):
            if event["type"] == "regular":
                return list(event["ring_id"]) if event["members"] == want else None
        return None

    def all_agree() -> bool:
        return all(ring_of(c) is not None for c in clients.values())

    try:
        wait_for(all_agree, timeout, f"a regular configuration {want} on nodes {sorted(clients)}", interval=0.005)
    except AssertionError:
        seen = {i: [e for e in c.confchgs if e["type"] == "regular"][-1:] for i, c in clients.items()}
        raise AssertionError(f"no agreement on {want} within {timeout:g} s; last regular configurations {seen}") from None
    rings = {i: ring_of(c) for i, c in clients.items()}
    assert len({tuple(r or ()) for r in rings.values()}) == 1, f"members agree, ring ids differ: {rings}"
    return list(next(iter(rings.values())) or [])


def wait_until(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Polls ``cond()`` until truthy (returns it); CsError or KeyError from it count as "not yet" (a key, a
    service or a stats row still coming). AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = cond()
        except (CsError, KeyError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {timeout}s")
        time.sleep(interval)


def exported(cluster_name: str, nodeid: int, run_dir: str | Path) -> str:
    """The exporter's text for a node, read from its shared memory as the exporter process reads it."""
    from pycorosync.ipc.segment import segment_name
    from pycorosync.monitoring.collector import exposition
    from pycorosync.monitoring.sources import NodeReader, NodeSpec

    spec = NodeSpec(nodeid=nodeid, cluster=cluster_name, run_dir=Path(run_dir),
                    stats=segment_name(cluster_name, nodeid, "stats"), services=None)
    reader = NodeReader(spec)
    try:
        return exposition(reader.read())
    finally:
        reader.close()


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the series ``name`` with these labels in an exposition text (None: absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Factory of started clusters (see the module docstring); all are stopped at teardown."""
    made: list[Cluster] = []

    def make(n: int = 3, *, start: bool = True, wait: bool = True, **kw: Any) -> Cluster:
        cluster = Cluster(tmp_path, n, **kw)
        made.append(cluster)
        if start:
            cluster.start()
            if wait:
                cluster.wait_ring()
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


@pytest.fixture
def cluster3(make_cluster: Callable[..., Cluster]) -> Cluster:
    """Three nodes with the testecho service, one synchronized ring (token 400 ms)."""
    return make_cluster(3)


@pytest.fixture(scope="module")
def _module_cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from tests.conftest import LONG_LIVED_PREFIXES

    cluster = Cluster(tmp_path_factory.mktemp("shared"), 3)
    prefix = f"pcs-{cluster.name}-"
    LONG_LIVED_PREFIXES.add(prefix)
    try:
        cluster.start()
        cluster.wait_ring()
        yield cluster
    finally:
        cluster.stop()
        LONG_LIVED_PREFIXES.discard(prefix)


@pytest.fixture
def shared3(_module_cluster3: Cluster) -> Cluster:
    """A 3-node cluster as ``cluster3``, but one per test module: for tests that neither stop, pause nor
    break a node, and that use names of their own (CPG groups, cmap keys) so that tests cannot see each
    other's traffic. Checked to be one whole ring before each test."""
    _module_cluster3.wait_ring([1, 2, 3], timeout=30)
    return _module_cluster3
