"""The node's transport process: the UDP transport (udpu, udp; knet is run as udpu) between the node
segment's ``tx``/``rx`` rings and the network (PROTOCOL.md §1).

    python -m pycorosync.engine.runtime.transport_proc     # started by the supervisor, PYCOROSYNC_NODE set

It consumes ``tx`` (sleeping on the ``transport`` doorbell) and produces ``rx`` (ringing ``totem``).

Two things are shared with the rest of the node:

- the per-peer link table (``transports.links``) in its own segment ``/pcs-<cluster>-<nodeid>-links``,
  made afresh at every transport start (a restarted transport must not inherit a dead one's last-heard
  times); the cfg service reads it for ``corosync-cfgtool -s``/``-n``. The supervisor removes it with the
  node's prefix at stop;
- the transport counters, copied into the ``transport`` row of the node's stats table when the
  supervisor made one and gave this process a slot (else they stay local).

SIGHUP reopens the process's log file (``corosync-cfgtool -L``; installed by ``setup_child``'s logging).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from typing import Any

log = logging.getLogger("TOTEM")


def _stats_row(stats_name: str) -> tuple[Any, list[int] | None]:
    """The transport's stats row and columns, or (None, None) when the node has no stats table yet."""
    import os

    from pycorosync.transports.udp.node import stats_row_for

    if not stats_name or not os.path.exists(f"/dev/shm/{stats_name.lstrip('/')}"):
        log.debug("no stats table %r: transport counters stay local", stats_name)
        return None, None
    row, columns = stats_row_for(stats_name)
    return row, columns


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pycorosync.engine.runtime.transport_proc")
    ap.parse_known_args(argv)  # --config/--nodeid/... are in $PYCOROSYNC_NODE too
    from pycorosync.engine.runtime.node import NodeInfo, setup_child

    setup_child()
    node = NodeInfo.from_env()
    from pycorosync.engine.config import ConfigError, load
    from pycorosync.engine.supervisor.child import notify_ready
    from pycorosync.transports.udp.node import shared_link_table
    from pycorosync.transports.udp.plan import plan_from_config
    from pycorosync.transports.udp.transport import UdpTransport

    try:
        plan = plan_from_config(load(node.config), node.nodeid)
    except (ConfigError, OSError, ValueError) as exc:
        log.error("cannot start the transport: %s", exc)
        return 1
    try:
        links, links_seg = shared_link_table(node.cluster, node.nodeid, plan.node_ids)
    except (OSError, ValueError) as exc:
        log.error("cannot create the link table of node %d: %s", node.nodeid, exc)
        return 1
    stats_row, stats_columns = _stats_row(node.stats)
    rings = node.attach()
    try:
        transport = UdpTransport(plan, rings.tx, rings.rx, node.bells["transport"], node.bells["totem"],
                                 link_table=links, stats_row=stats_row, stats_columns=stats_columns)
    except OSError as exc:
        rings.close()
        del links
        with contextlib.suppress(BufferError):
            links_seg.close()
        log.error("cannot start the transport: %s", exc)
        return 1
    log.info("%s transport of node %d on %s port %d", plan.transport, node.nodeid, plan.local_addr,
             plan.port_of(node.nodeid))
    try:
        return int(transport.run(on_ready=notify_ready))
    finally:
        transport.close()
        rings.close()
        # the table stays for readers until the supervisor removes the node's segments
        del transport, links
        with contextlib.suppress(BufferError):
            links_seg.close()


if __name__ == "__main__":
    from pycorosync.engine.supervisor.child import exit_process

    exit_process(main())
