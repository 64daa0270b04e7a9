"""Real clusters whose nodes live in separate network namespaces joined by a bridge (pycorosync/netlab.py), so
that nftables can drop, between real sockets, what a test says.

    def test_x(netns_cluster):
        cluster, lab = netns_cluster(5)            # started, one synchronized ring of 5
        lab.partition([1, 2, 3], [4, 5]); ...; lab.heal()

Skipped, with the reason, when not root or when ``ip`` / ``nft`` are missing or namespaces cannot be made.
At teardown, even after a failure: every daemon is stopped (SIGKILL after a deadline, strays reaped), the
cluster's shm segments are removed, then the namespaces (with their links and nftables tables).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pycorosync.localcluster import Cluster
from pycorosync.netlab import LabUnavailable, NetnsLab, check_available

# the first free one is not needed: every cluster has namespaces of its own
PORT_RANGE = (20000, 60000)


@pytest.fixture
def netns_cluster(tmp_path: Path) -> Iterator[Callable[..., tuple[Cluster, NetnsLab]]]:
    """Factory ``(n, *, start=True, mtu=None, **cluster_kw) -> (Cluster, NetnsLab)``; all torn down after the
    test. ``mtu`` sets every link's MTU."""
    try:
        check_available()
    except LabUnavailable as exc:
        pytest.skip(str(exc))
    made: list[tuple[Cluster | None, NetnsLab]] = []

    def make(n: int, *, start: bool = True, mtu: int | None = None, **kw: Any) -> tuple[Cluster, NetnsLab]:
        lab = NetnsLab(n, mtu)
        made.append((None, lab))
        try:
            lab.build()
        except RuntimeError as exc:
            pytest.skip(f"cannot build network namespaces here: {exc}")
        cluster = Cluster(tmp_path, n, addresses=lab.addresses(), launcher=lab.exec_prefix,
                          port=random.randrange(*PORT_RANGE), name_prefix="ns", **kw)
        made[-1] = (cluster, lab)
        if start:
            cluster.start()
            cluster.wait_ring(timeout=90)
        return cluster, lab

    yield make
    for cluster, lab in made:
        try:
            if cluster is not None:
                cluster.stop()
        finally:
            lab.destroy()
