"""The node's transport process: the UDP transport (udpu, udp; knet is run as udpu) between the node
segment's ``tx``/``rx`` rings and the network (PROTOCOL.md §1).

    python -m pycorosync.engine.runtime.transport_proc     # started by the supervisor, PYCOROSYNC_NODE set

It consumes ``tx`` (sleeping on the ``transport`` doorbell) and produces ``rx`` (ringing ``totem``).
"""

from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger("TOTEM")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pycorosync.engine.runtime.transport_proc")
    ap.parse_known_args(argv)  # --config/--nodeid/... are in $PYCOROSYNC_NODE too
    from pycorosync.engine.runtime.node import NodeInfo, setup_child

    setup_child()
    node = NodeInfo.from_env()
    from pycorosync.engine.config import ConfigError, load
    from pycorosync.engine.supervisor.child import notify_ready
    from pycorosync.transports.udp.plan import plan_from_config
    from pycorosync.transports.udp.transport import UdpTransport

    try:
        plan = plan_from_config(load(node.config), node.nodeid)
    except (ConfigError, OSError, ValueError) as exc:
        log.error("cannot start the transport: %s", exc)
        return 1
    rings = node.attach()
    try:
        transport = UdpTransport(plan, rings.tx, rings.rx, node.bells["transport"], node.bells["totem"])
    except OSError as exc:
        rings.close()
        log.error("cannot start the transport: %s", exc)
        return 1
    log.info("%s transport of node %d on %s port %d", plan.transport, node.nodeid, plan.local_addr,
             plan.port_of(node.nodeid))
    def ready() -> None:
        notify_ready()

    try:
        return int(transport.run(on_ready=ready))
    finally:
        transport.close()
        rings.close()


if __name__ == "__main__":
    sys.exit(main())
