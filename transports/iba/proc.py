"""The node's transport process when ``totem.transport: iba`` (the supervisor starts this module in
place of ``engine/runtime/transport_proc.py``; same rings, doorbells and readiness protocol).

    python -m pycorosync.transports.iba.proc     # started by the supervisor, PYCOROSYNC_NODE set

Without pyverbs, or without an RDMA device, it logs one line and exits 1 before it is ready, so the
daemon stops with that error ("transport iba: no RDMA device found" /
"transport iba: pyverbs is not installed (pip install pycorosync[iba])"). ``$PYCOROSYNC_IBA_BACKEND=fake``
runs it on the fake verbs backend (tests).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from typing import Any

log = logging.getLogger("TOTEM")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pycorosync.transports.iba.proc")
    ap.parse_known_args(argv)  # --config/--nodeid/... are in $PYCOROSYNC_NODE too
    from pycorosync.engine.runtime.node import NodeInfo, setup_child

    setup_child()
    node = NodeInfo.from_env()
    from pycorosync.engine.config import ConfigError, load
    from pycorosync.engine.supervisor.child import notify_ready
    from pycorosync.transports.iba.verbs import TransportUnavailable, VerbsError, load_backend
    from pycorosync.transports.udp.plan import plan_from_config

    try:
        backend = load_backend()
    except TransportUnavailable as exc:
        log.error("%s", exc)
        return 1
    try:
        plan = plan_from_config(load(node.config), node.nodeid)
    except (ConfigError, OSError, ValueError) as exc:
        log.error("cannot start the transport: %s", exc)
        return 1
    from pycorosync.transports.iba.transport import IbaTransport
    from pycorosync.transports.udp.node import shared_link_table

    try:
        links, links_seg = shared_link_table(node.cluster, node.nodeid, plan.node_ids)  # for cfgtool -s
    except (OSError, ValueError) as exc:
        log.error("cannot create the link table of node %d: %s", node.nodeid, exc)
        return 1
    stats_row, stats_columns = _stats_row(node.stats)
    rings = node.attach()
    try:
        transport = IbaTransport(plan, rings.tx, rings.rx, node.bells["transport"], node.bells["totem"], backend,
                                 link_table=links, stats_row=stats_row, stats_columns=stats_columns)
    except (OSError, VerbsError) as exc:
        rings.close()
        del links
        with contextlib.suppress(BufferError):
            links_seg.close()
        log.error("transport iba: cannot open %s port %d: %s", plan.local_addr, plan.port_of(node.nodeid), exc)
        return 1
    try:
        return int(transport.run(on_ready=notify_ready))
    finally:
        transport.close()
        rings.close()
        # the table stays for readers until the supervisor removes the node's segments
        del transport, links
        with contextlib.suppress(BufferError):
            links_seg.close()


def _stats_row(stats_name: str) -> tuple[Any, list[int] | None]:
    """The transport's stats row and columns, or (None, None) when the node has no stats table (yet)."""
    from pycorosync.transports.udp.node import stats_row_for

    if not stats_name or not os.path.exists(f"/dev/shm/{stats_name.lstrip('/')}"):
        return None, None
    try:
        row, columns = stats_row_for(stats_name)
    except (KeyError, ValueError) as exc:  # a table without the transport's columns: counters stay local
        log.warning("transport iba: no stats columns (%s); counters stay local", exc)
        return None, None
    return row, columns

if __name__ == "__main__":
    from pycorosync.engine.supervisor.child import exit_process

    exit_process(main())
