"""SAM's QUORUM policy on a real 3-node cluster: two nodes die, the third loses quorum, its SAM children are handled
per policy; quorum comes back and the restarted child starts."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pycorosync.ipc.errors import CsError
from pycorosync.localcluster import Cluster, wait_for
from pycorosync.quorum import QuorumClient
from tests.unit import test_sam_support as support
from tests.unit.test_sam_support import ProcTree, start_app

pytestmark = pytest.mark.timeout(240)
proc_trees = support.proc_trees  # the fixture
VOTEQUORUM = "quorum {\n    provider: corosync_votequorum\n}\n"


def quorate(run_dir: Path) -> bool | None:
    try:
        with QuorumClient(str(run_dir), timeout=5.0) as q:
            return bool(q.getquorate())
    except CsError:
        return None


def test_quorum_loss_restarts_a_quorum_restart_child_that_waits_for_quorum_and_ends_a_quorum_quit_one(
    make_cluster: Callable[..., Cluster], proc_trees: list[ProcTree], tmp_path: Path
) -> None:
    # a long token: the ring must survive a loaded machine; only the two kills may change it
    cluster = make_cluster(3, totem={"token": 3000}, extra_config=VOTEQUORUM, test_services=())
    node = cluster.nodes[1]
    wait_for(lambda: quorate(node.run_dir), 30, "node 1 quorate")
    app = start_app(proc_trees, tmp_path, """
        sam.initialize(0, sam.SAM_RECOVERY_POLICY_QUORUM_RESTART, run_dir=sys.argv[1])
        iid = sam.register()
        say("registered", iid)
        sam.start()
        say("started", iid)
        time.sleep(120)
    """, args=[str(node.run_dir)])
    script = tmp_path / "quit.sh"
    script.write_text("#!/bin/sh\necho up $SAM_INSTANCE_ID\nexec sleep 120\n")
    script.chmod(0o755)
    run = ProcTree([sys.executable, "-m", "pycorosync", "--run-dir", str(node.run_dir), "sam", "run",
                    "--policy", "quorum-quit", "--", str(script)])
    proc_trees.append(run)
    app.expect("started 1", timeout=30)
    run.expect("up 1", timeout=30)

    cluster.nodes[2].kill()
    cluster.nodes[3].kill()
    lost = time.monotonic()
    app.expect("registered 2", timeout=60)  # quorum lost: the child got SIGTERM and was restarted ...
    assert run.wait(timeout=30) == 128 + signal.SIGTERM  # ... the QUIT one ended with its child's status
    assert time.monotonic() - lost < 60
    assert quorate(node.run_dir) is False
    with pytest.raises(AssertionError):
        app.expect("started 2", timeout=1.0)  # start() waits for quorum

    cluster.start([2, 3])
    app.expect("started 2", timeout=90)
    assert "registered 3" not in app.lines
    assert b"quorum lost" in app.stderr  # the supervisor said why
