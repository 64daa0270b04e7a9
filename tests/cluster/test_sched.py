"""``system.sched_rr``, ``system.priority`` and ``system.sched_batch`` on a running node: what its processes get (as corosync's one
process gets it), and the exporter, off the data path, keeps ordinary scheduling."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from pycorosync.localcluster import Cluster, wait_for
from tests.cluster.test_prometheus import free_tcp_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="realtime scheduling and negative nice need root")

DATA_PATH = {"supervisor", "transport", "totem", "cmap", "cpg", "cfg", "quorum"}


def test_sched_rr_puts_every_process_of_the_data_path_on_round_robin_realtime(
    make_cluster: Callable[..., Cluster],
) -> None:
    exporter = f"127.0.0.1:{free_tcp_port('127.0.0.1')}"
    cluster = make_cluster(1, system={"sched_rr": "yes"}, test_services=(),
                           extra_config=f"monitoring {{\n    prometheus: {exporter}\n}}\n")
    pids = cluster.nodes[1].pids()
    assert set(pids) >= DATA_PATH and "exporter" in pids, pids
    top = os.sched_get_priority_max(os.SCHED_RR)
    got = {name: (os.sched_getscheduler(pid), os.sched_getparam(pid).sched_priority) for name, pid in pids.items()}
    assert {name: got[name] for name in DATA_PATH} == {name: (os.SCHED_RR, top) for name in DATA_PATH}
    assert got["exporter"] == (os.SCHED_OTHER, 0)
    # operators see it in pycorosync status
    out = subprocess.run([sys.executable, "-m", "pycorosync", "--run-dir", str(cluster.nodes[1].run_dir), "status",
                          "--interval", "0.2"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines() if line.split()[:1] in (["totem"], ["exporter"])}
    assert rows["totem"].endswith(f"  RR {top}") and rows["exporter"].split()[-2] == "nice", out.stdout
    # and a restarted child inherits it again
    old = cluster.nodes[1].kill_child("cpg")
    new = wait_for(lambda: (p := cluster.nodes[1].child_pid("cpg")) not in (None, old) and p, 30, "cpg restarted")
    assert os.sched_getscheduler(new) == os.SCHED_RR


def test_without_sched_rr_the_priority_is_the_nice_level_of_every_process_under_sched_batch(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(2, system={"sched_rr": "no", "priority": -3}, test_services=())
    # node 2 asks for plain SCHED_OTHER: one config line apart, same cluster
    cluster.nodes[2].stop()
    config = cluster.nodes[2].config_path
    config.write_text(config.read_text().replace("system {", "system {\n    sched_batch: no", 1))
    cluster.nodes[2].start()
    cluster.wait_ring()
    for nodeid, policy in ((1, os.SCHED_BATCH), (2, os.SCHED_OTHER)):
        pids = cluster.nodes[nodeid].pids()
        assert set(pids) >= DATA_PATH, pids
        got = {name: (os.sched_getscheduler(pid), os.getpriority(os.PRIO_PROCESS, pid)) for name, pid in pids.items()}
        assert got == {name: (policy, -3) for name in pids}, nodeid
    out = subprocess.run([sys.executable, "-m", "pycorosync", "--run-dir", str(cluster.nodes[1].run_dir), "status",
                          "--interval", "0.2"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    totem = [line for line in out.stdout.splitlines() if line.split()[:1] == ["totem"]]
    assert totem and totem[0].endswith("batch nice -3"), out.stdout
