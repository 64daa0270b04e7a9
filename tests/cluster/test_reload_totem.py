"""A config reload (cfgtool -R) applies the new totem timers and logging keys on every node without
re-forming the ring."""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from typing import Any

from pycorosync.cmap import CmapClient
from pycorosync.localcluster import Cluster, Node, wait_for
from pycorosync.services.cfg import cfgtool


def cfgtool_run(node: Node, *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir")
    cfgtool.register(parser.add_subparsers())
    args = parser.parse_args(["--run-dir", str(node.run_dir), "cfgtool", *argv])
    out, err = io.StringIO(), io.StringIO()
    return args.func(args, out, err), out.getvalue(), err.getvalue()


def status(node: Node) -> dict[str, Any]:
    return node.status() or {}


def test_cfgtool_reload_gives_every_totem_the_new_token_and_keeps_the_ring(
        make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(2)
    nodes = list(cluster.nodes.values())
    for node in nodes:  # the totem process tracks the reload flag once cmap is up
        wait_for(lambda node=node: status(node).get("reload_tracked"), 30, f"node {node.nodeid} tracking reloads")
        assert status(node)["totem"]["token"] == 400
    ring = status(nodes[0])["ring_id"]
    for node in nodes:
        text = node.config_path.read_text()
        text = text.replace("    token: 400\n", "    token: 1200\n")
        text = text.replace("    timestamp: hires\n", "    timestamp: hires\n    debug: on\n")
        node.config_path.write_text(text)
    assert cfgtool_run(nodes[0], "-R") == (0, "Reloading corosync.conf...\nDone\n", "")
    try:
        for node in nodes:
            wait_for(lambda node=node: status(node).get("totem", {}).get("token") == 1200, 30,
                     f"node {node.nodeid}'s totem running with token 1200")
            st = status(node)
            assert st["totem"]["consensus"] == 1440 and st["totem"]["token_retransmit"] == int(1200 / 4.2)
            with CmapClient(str(node.run_dir)) as cmap:
                assert cmap.get("runtime.config.totem.token")[0] == 1200
            log = node.log_path
            wait_for(lambda log=log: "token changed from 400 to 1200 ms" in log.read_text(errors="replace"), 10,
                     "totem logs the change")
            wait_for(lambda log=log: "logging settings re-applied from" in log.read_text(errors="replace"), 10,
                     "logging re-applied")
        assert all(status(node)["ring_id"] == ring for node in nodes)  # no new membership for a reload
        assert cluster.ring_of([1, 2]) == ring
    except AssertionError:
        print(cluster.logs())
        raise
