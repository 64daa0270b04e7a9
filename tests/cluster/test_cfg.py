"""The cfg service on a real 3-node cluster: cfgtool's link and node views, addresses, kill, reload,
log reopening, and the shutdown protocol with a tracker that refuses."""

from __future__ import annotations

import argparse
import asyncio
import io
import select
import threading
import time
from collections.abc import Callable

from pycorosync.localcluster import Cluster, Node, wait_for
from pycorosync.services.cfg import cfgtool
from pycorosync.services.cfg.client import COROSYNC_CFG_SHUTDOWN_FLAG_NO, AsyncCfgClient, CfgClient

BUSY = 10  # CS_ERR_BUSY, printed as a number by corosync-cfgtool -H


def tool(node: Node, *argv: str) -> tuple[int, str, str]:
    """``pycorosync cfgtool ARGV`` against ``node``, in this process: (exit code, stdout, stderr)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir")
    cfgtool.register(parser.add_subparsers())
    args = parser.parse_args(["--run-dir", str(node.run_dir), "cfgtool", *argv])
    out, err = io.StringIO(), io.StringIO()
    return args.func(args, out, err), out.getvalue(), err.getvalue()


def _log_has(node: Node, text: str) -> bool:
    return text in node.log_path.read_text(errors="replace")


def test_cfgtool_shows_all_nodes_connected_then_a_killed_one_disconnected(cluster3: Cluster) -> None:
    n1 = cluster3.nodes[1]
    rc, out, _ = tool(n1, "-s")
    assert rc == 0
    assert out == ("Local node ID 1, transport udpu\nLINK ID 0 \n\taddr\t= 127.0.0.1\n\tstatus:\n"
                   "\t\tnodeid:          1:\tlocalhost\n\t\tnodeid:          2:\tconnected\n"
                   "\t\tnodeid:          3:\tconnected\n")
    rc, out, _ = tool(n1, "-n")
    assert rc == 0 and out.count(" reachable\n") == 2 and "   LINK: 0  (127.0.0.3) enabled connected mtu: " in out
    rc, out, _ = tool(n1, "-s", "-b")
    assert (rc, out.splitlines()[-1]) == (0, "\tstatus\t= n33")
    assert [tool(n1, "-a", str(i))[1] for i in (1, 2, 3)] == ["127.0.0.1\n", "127.0.0.2\n", "127.0.0.3\n"]
    assert tool(n1, "-a", "9") == (1, "", "Could not get node address for nodeid 9\n")

    async def async_view() -> tuple[int, bool]:
        async with AsyncCfgClient(str(n1.run_dir)) as cfg:
            return await cfg.local_get(), (await cfg.node_status_get(2)).reachable

    assert asyncio.run(async_view()) == (1, True)

    with CfgClient(str(n1.run_dir)) as cfg:
        cluster3.nodes[3].kill()
        killed = time.monotonic()
        wait_for(lambda: not cfg.node_status_get(3).link(0).connected, 30, "node 3 shown disconnected")
        took = time.monotonic() - killed
    # the ring drops it after the token and consensus timeouts (0.4 + 0.48 s); a loaded machine adds to that
    assert took < (cluster3.token_ms + cluster3.consensus_ms) / 1000 + 4.0, f"disconnected after {took:.2f} s"
    rc, out, _ = tool(n1, "-s")
    assert out.endswith("\t\tnodeid:          2:\tconnected\n\t\tnodeid:          3:\tdisconnected\n")
    assert "nodeid: 3" not in tool(n1, "-n")[1]
    rc, out, _ = tool(n1, "-s", "-b")
    assert (rc, out.splitlines()[-1]) == (1, "\tstatus\t= n31")  # a faulty link: exit 1, as corosync-cfgtool


def test_kill_reload_and_reopen_log_files(cluster3: Cluster) -> None:
    n1, n3 = cluster3.nodes[1], cluster3.nodes[3]
    assert tool(n1, "-L") == (0, "", "")
    wait_for(lambda: _log_has(n1, "SIGHUP: reopening log files"), 10, "the supervisor reopening its logs")
    assert tool(n1, "-R") == (0, "Reloading corosync.conf...\nDone\n", "")
    for node in cluster3.nodes.values():
        wait_for(lambda node=node: _log_has(node, "Config reload requested by node 1"), 10, "reload on every node")
    good = n1.config_path.read_text()
    n1.config_path.write_text(good.replace("totem {", "totem {\n    token: soon", 1))
    rc, out, err = tool(n1, "-R")
    n1.config_path.write_text(good)
    assert rc == 1 and out.startswith("Reloading corosync.conf...\nERROR from reload: ")
    assert err == ("Could not reload configuration. Error CS_ERR_INVALID_PARAM\n"
                   "Errors in applying config, corosync.conf might not match the running system\n")

    assert tool(n1, "-k", "3") == (0, "Killing node 3\n", "")
    assert n3.proc is not None
    n3.proc.wait(30)
    assert _log_has(n3, "Killed by node 1 : Killed by corosync-cfgtool")
    cluster3.wait_ring([1, 2])
    assert tool(n1, "-k", "3") == (1, "Killing node 3\n", "Could not kill node (error = CS_ERR_NOT_EXIST)\n")


def _refusing_tracker(node: Node, asked: list[int], ready: threading.Event, stop: threading.Event) -> Callable[[], None]:
    def run() -> None:
        def on_shutdown(cfg: CfgClient, flags: int) -> None:
            asked.append(flags)
            cfg.replyto_shutdown(COROSYNC_CFG_SHUTDOWN_FLAG_NO)

        with CfgClient(str(node.run_dir), shutdown=on_shutdown) as cfg:
            cfg.trackstart()
            ready.set()
            while not stop.is_set() and not cfg.closed:
                if select.select([cfg], [], [], 0.1)[0]:
                    try:
                        cfg.dispatch()
                    except Exception:  # the node went away under us: the test checks the outcome
                        return
    return run


def test_shutdown_is_refused_by_a_tracker_unless_forced(cluster3: Cluster) -> None:
    n2, n3 = cluster3.nodes[2], cluster3.nodes[3]
    asked: list[int] = []
    ready, stop = threading.Event(), threading.Event()
    tracker = threading.Thread(target=_refusing_tracker(n2, asked, ready, stop), daemon=True)
    tracker.start()
    try:
        assert ready.wait(20)
        assert tool(n2, "-H") == (0, "Shutting down corosync\n", f"Could not shutdown (error = {BUSY})\n")
        assert asked == [0] and n2.alive
        assert tool(n2, "-H", "--force") == (0, "Shutting down corosync\n", "")
        assert n2.proc is not None
        n2.proc.wait(30)
        assert asked == [0, 1]
    finally:
        stop.set()
        tracker.join(10)
    cluster3.wait_ring([1, 3])
    assert _log_has(cluster3.nodes[1], "Node 2 was shut down by sysadmin")

    assert tool(n3, "-H") == (0, "Shutting down corosync\n", "")  # nobody tracks on node 3
    assert n3.proc is not None
    n3.proc.wait(30)
    cluster3.wait_ring([1])
