"""Throughput of the pure Totem core: messages one node's core orders and delivers per second.

A lossless in-process pump drives a 3- and a 16-node ring (every node submits an equal share, no
faults, virtual time frozen after the ring formed). Timed: only the calls into node 1's core
(submit, on_frame, on_timer), so the figure is what ONE node's core sustains. Baseline in the same
run: the same pump with a trivial echo core (one frame per message, delivered at once).

Prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import deque
from typing import Any

from pycorosync.engine.totem.api import Deliver, Guarantee, QueueFull, RingId, SendFrame
from pycorosync.engine.totem.config import TotemConfig
from pycorosync.engine.totem.loopback import LoopbackNet

_RING = RingId(1, 4)


class EchoCore:
    """The baseline: multicasts each submitted payload as one frame and delivers on receipt."""

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.msg_id = 0

    def submit(self, now_ns: int, payload: bytes, guarantee: int) -> list[Any]:
        self.msg_id += 1
        return [SendFrame(None, payload), Deliver(_RING, self.node_id, self.msg_id, Guarantee.AGREED, payload)]

    def on_frame(self, now_ns: int, data: bytes) -> list[Any]:
        return [Deliver(_RING, 2, 0, Guarantee.AGREED, data)]

    def on_timer(self, now_ns: int) -> list[Any]:
        return []


def pump(cores: dict[int, Any], total: int, size: int, now_ns: int) -> tuple[float, float, int]:
    """Submit ``total`` messages spread over all nodes and run until node 1 delivered them all.

    Returns (seconds spent in node 1's core, wall seconds, messages node 1 delivered).
    """
    ids = sorted(cores)
    frames: deque[tuple[int, int, bytes]] = deque()
    payload = bytes(size)
    per_node = {n: total // len(ids) for n in ids}
    per_node[ids[0]] += total - sum(per_node.values())
    left = dict(per_node)
    delivered = 0
    in_core = 0.0
    perf = time.perf_counter
    t_start = perf()

    def carry(src: int, actions: list[Any]) -> int:
        got = 0
        for a in actions:
            if type(a) is SendFrame:
                if a.dest is None:
                    for t in ids:
                        if t != src:
                            frames.append((src, t, a.data))
                else:
                    frames.append((src, a.dest, a.data))
            elif type(a) is Deliver:
                got += 1
        return got

    while delivered < total:
        for n in ids:  # clients keep every queue topped up
            core = cores[n]
            while left[n]:
                t0 = perf()
                try:
                    actions = core.submit(now_ns, payload, Guarantee.AGREED)
                except QueueFull:
                    if n == 1:
                        in_core += perf() - t0
                    break
                if n == 1:
                    in_core += perf() - t0
                left[n] -= 1
                got = carry(n, actions)
                if n == 1:
                    delivered += got
                if len(frames) > 2000:
                    break
        if not frames:
            t0 = perf()
            actions = cores[1].on_timer(now_ns + 10**12)
            in_core += perf() - t0
            delivered += carry(1, actions)
            if not frames and all(v == 0 for v in left.values()) and delivered < total:
                raise RuntimeError(f"pump stalled with {delivered}/{total} delivered")
            continue
        for _ in range(len(frames)):
            _src, dest, data = frames.popleft()
            if dest == 1:
                t0 = perf()
                actions = cores[1].on_frame(now_ns, data)
                in_core += perf() - t0
                delivered += carry(1, actions)
            else:
                carry(dest, cores[dest].on_frame(now_ns, data))
    return in_core, perf() - t_start, delivered


def formed_ring(nodes: int) -> tuple[dict[int, Any], int]:
    cfg = TotemConfig.defaults_for(token=3000, node_count=nodes, token_coefficient=0)
    net = LoopbackNet(cfg, list(range(1, nodes + 1)))
    if not net.run_until(net.operational, 60 * 10**9):
        raise RuntimeError(f"{nodes} nodes did not form a ring")
    return dict(net.cores), net.now_ns


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=60_000)
    ap.add_argument("--quick", action="store_true", help="fewer messages (smoke run)")
    args = ap.parse_args()
    total = 6000 if args.quick else args.messages
    grid = [(nodes, size, total) for nodes in (3, 16) for size in (64, 1024)]
    # large CPG messages: fragmented over many frames and reassembled
    grid += [(3, 64 * 1024, max(30, total // 200)), (3, 1024 * 1024, max(6, total // 2500))]
    for nodes, size, count in grid:
        base_cores = {n: EchoCore(n) for n in range(1, nodes + 1)}
        b_core, b_wall, b_n = pump(base_cores, count, size, 0)
        cores, now = formed_ring(nodes)
        c_core, c_wall, c_n = pump(cores, count, size, now)
        print(json.dumps({
            "bench": "totem_core", "nodes": nodes, "size_bytes": size, "messages": c_n,
            "msgs_per_s": round(c_n / c_core), "msgs_per_s_all_nodes_wall": round(c_n / c_wall),
            "baseline": "echo_core", "baseline_msgs_per_s": round(b_n / b_core),
            "baseline_msgs_per_s_all_nodes_wall": round(b_n / b_wall),
            "mbytes_per_s": round(c_n * size / c_core / 1e6, 1),
            "ratio_to_baseline": round((c_n / c_core) / (b_n / b_core), 3),
        }), flush=True)


if __name__ == "__main__":
    main()
