"""The node's transport process, as the supervisor starts it (engine/runtime/PROTOCOL.md §1).

    python -m pycorosync.transports.process --config FILE --run-dir DIR --nodeid N --ready-fd FD

with ``PYCOROSYNC_NODE`` in the environment (segment name, doorbells, ring capacity, services). It maps
the node segment's ``tx``/``rx`` rings, sleeps on its own doorbell (``bells["transport"]``), rings
``bells["totem"]`` after delivering frames, keeps the link table in ``/pcs-<cluster>-<nodeid>-links``
(remade on every start, removed with the node's prefix by the supervisor) and says ready once its
sockets are bound. ``totem.transport: iba`` is not served here.
"""

from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger("TOTEM")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pycorosync.transports.process")
    ap.add_argument("--config", required=True)
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--nodeid", type=int, required=True)
    ap.add_argument("--ready-fd", type=int, default=-1)
    args = ap.parse_args(argv)

    from pycorosync.engine.supervisor import child, logsetup

    logsetup.configure_from_env()
    child.die_with_supervisor()
    from pycorosync.engine.supervisor.resources import node_from_env

    node = node_from_env()
    if node is None:
        log.error("transport: PYCOROSYNC_NODE is not set (this process is started by 'pycorosync daemon')")
        return 1
    return serve(node, args.config, args.nodeid)


def serve(node: dict[str, object], config_path: str, nodeid: int) -> int:
    """Attaches the node's rings and runs the UDP transport until SIGTERM."""
    from pycorosync import jitcache
    from pycorosync.engine.config import load
    from pycorosync.engine.runtime.layout import NodeLayout
    from pycorosync.engine.supervisor import child
    from pycorosync.ipc import segment as shm
    from pycorosync.transports import links
    from pycorosync.transports.crypto import CryptoConfigError
    from pycorosync.transports.udp.plan import plan_from_config
    from pycorosync.transports.udp.transport import UdpTransport

    jitcache.configure()
    jitcache.check_warm("transport")
    config = load(config_path)
    if config.totem.transport == "iba":
        log.error("transport: totem.transport iba is served by the verbs transport, not by UDP")
        return 1
    try:
        plan = plan_from_config(config, nodeid)
    except (CryptoConfigError, ValueError, OSError) as exc:
        log.error("transport: %s", exc)
        return 1
    services = [str(s) for s in node.get("services", [])]  # type: ignore[attr-defined]
    layout = NodeLayout.compute(services, int(node["ring_capacity"]))  # type: ignore[call-overload]
    rings = layout.attach(str(node["segment"]))
    bells: dict[str, int] = {k: int(v) for k, v in node["bells"].items()}  # type: ignore[attr-defined]
    links_name = shm.segment_name(str(node["cluster"]), nodeid, "links")
    shm.unlink(links_name)  # a previous incarnation's table
    seg = shm.Segment.create(links_name, links.table_bytes(len(plan.node_ids)), shm.SegmentKind.RAW, 1)
    table = links.LinkTable.create(seg.array(), plan.node_ids)
    t = UdpTransport(plan, rings.tx, rings.rx, bells.get("transport"), bells.get("totem"), link_table=table)
    try:
        return t.run(on_ready=child.notify_ready)
    finally:
        t.close()


if __name__ == "__main__":
    sys.exit(main())
