"""``python -m pycorosync.transports.udp``: one transport process wired by a JSON plan and a segment name.

Used by tests and bench/udp.py; the supervisor calls ``run_transport`` directly instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pycorosync.transports.udp")
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
    ap.add_argument("--no-gso", action="store_true")
    ap.add_argument("--no-gro", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(name)s] %(message)s", stream=sys.stderr)

    import os

    from pycorosync import jitcache

    jitcache.configure()
    jitcache.check_warm("transport")
    from pycorosync.transports.udp.node import TransportSegment, plan_from_json
    from pycorosync.transports.udp.transport import UdpTransport

    plan = plan_from_json(args.plan)
    if args.segment_fd is not None:
        seg = TransportSegment.attach_fd(args.segment_fd, args.capacity, plan.node_ids)
    else:
        seg = TransportSegment.attach(args.segment, args.capacity, plan.node_ids)
    t = UdpTransport(
        plan, seg.tx, seg.rx, args.tx_bell, args.rx_bell, link_table=seg.links, stats_row=seg.counters,
        stats_columns=None, use_gso=not args.no_gso, use_gro=not args.no_gro,
        drop_log_interval_s=args.drop_log_interval,
    )
    def ready() -> None:
        if args.ready_fd >= 0:
            info = {"gso": t.sockets.gso, "gro": t.sockets.gro, "rcvbuf": t.sockets.rcvbuf_bytes, "pid": os.getpid()}
            os.write(args.ready_fd, (json.dumps(info) + "\n").encode())
            os.close(args.ready_fd)

    try:
        return t.run(args.stop_fd, on_ready=ready)
    finally:
        t.close()
        seg.close()


if __name__ == "__main__":
    sys.exit(main())
