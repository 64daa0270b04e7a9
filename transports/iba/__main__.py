"""``python -m pycorosync.transports.iba``: one verbs transport process wired by a JSON plan and a segment,
with the command line of ``python -m pycorosync.transports.udp`` (``transports.udp.node.TransportProcess``
starts it with ``module="pycorosync.transports.iba"``). The backend comes from ``$PYCOROSYNC_IBA_BACKEND``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pycorosync.transports.iba")
    ap.add_argument("--plan", required=True, help="TransportPlan as JSON (transports.udp.node.plan_to_json)")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--segment", help="name of the TransportSegment (rings, counters, links)")
    where.add_argument("--segment-fd", type=int, help="inherited memfd of the TransportSegment")
    ap.add_argument("--capacity", type=int, required=True, help="ring capacity in bytes")
    ap.add_argument("--tx-bell", type=int, default=-1, help="inherited eventfd rung when the tx ring has records")
    ap.add_argument("--rx-bell", type=int, default=-1, help="inherited eventfd to ring when the rx ring has records")
    ap.add_argument("--stop-fd", type=int, default=-1, help="inherited fd; readable (or hung up) = stop")
    ap.add_argument("--ready-fd", type=int, default=-1, help="inherited fd: one JSON line written once serving")
    ap.add_argument("--drop-log-interval", type=float, default=5.0)
    ap.add_argument("--recv-depth", type=int, default=64)
    args, _unknown = ap.parse_known_args(argv)  # --no-gso/--no-gro of the UDP command line mean nothing here
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(name)s] %(message)s", stream=sys.stderr)

    from pycorosync import jitcache

    jitcache.configure()
    from pycorosync.transports.iba.transport import IbaTransport
    from pycorosync.transports.iba.verbs import TransportUnavailable, load_backend
    from pycorosync.transports.udp.node import TransportSegment, plan_from_json

    try:
        backend = load_backend()
    except TransportUnavailable as exc:
        logging.getLogger("TOTEM").error("%s", exc)
        return 1
    plan = plan_from_json(args.plan)
    if args.segment_fd is not None:
        seg = TransportSegment.attach_fd(args.segment_fd, args.capacity, plan.node_ids)
    else:
        seg = TransportSegment.attach(args.segment, args.capacity, plan.node_ids)
    t = IbaTransport(plan, seg.tx, seg.rx, args.tx_bell, args.rx_bell, backend, link_table=seg.links,
                     stats_row=seg.counters, recv_depth=args.recv_depth, drop_log_interval_s=args.drop_log_interval)

    def ready() -> None:
        if args.ready_fd >= 0:
            os.write(args.ready_fd, (json.dumps({"pid": os.getpid(), "backend": backend.name}) + "\n").encode())
            os.close(args.ready_fd)

    try:
        return int(t.run(args.stop_fd, on_ready=ready))
    finally:
        t.close()
        seg.close()


if __name__ == "__main__":
    sys.exit(main())
