"""``pycorosync demo``: a real cluster on this machine.

Starts ``--nodes`` daemons on loopback (127.0.0.1..N, a free UDP port, temporary configs and run
directories, short totem timers), shows the ring forming, runs one CPG process per node that multicasts
numbered messages and checks the delivery order (a hash chain per node, compared live at checkpoints;
at the end every two nodes' delivery sequences are compared message by message), kills one node with
SIGKILL (NODEDOWN and the new membership), restarts it (NODEUP and the rejoin of its CPG process), and
prints a summary (``--json``: a last line of JSON). Everything is stopped and removed at the end, also
on Ctrl-C.

``--ipc``: the client-connection layer alone (pycorosync/demo_ipc.py). The demo's processes (the cpg
process of each node, the order check) are in pycorosync/demo_cpg.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from pycorosync.demo_cpg import (  # fork_child, stop_child: bench/ imports them from here
    DRAIN_TIMEOUT_S,
    GROUP,
    MSG_BYTES,
    Worker,
    check_order,
    fork_child,
    stop_child,
)

__all__ = ["fork_child", "register", "stop_child"]

DEMO_TOTEM = {"token": 1000, "token_coefficient": 0, "join": 50}
MAX_BASE_CHARS = 64


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "demo",
        help="a local cluster demonstration: nodes on loopback, CPG traffic, a node crash and its rejoin",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--nodes", type=int, default=3, metavar="N", help="cluster nodes (--ipc: client processes); 3")
    p.add_argument("--seconds", type=float, default=None, metavar="N",
                   help="how long traffic runs (default 10; --ipc: 5)")
    p.add_argument("--json", action="store_true", help="end with one line of JSON with the results")
    p.add_argument("--ipc", action="store_true", help="the IPC-only demo: one echo service and client processes")
    p.set_defaults(func=_run)


class _Show:
    """Output: a live progress line on a terminal, plain lines otherwise (all on stderr)."""

    def __init__(self) -> None:
        self.out = sys.stderr
        self.live = self.out.isatty()
        self.dirty = False

    def say(self, text: str) -> None:
        if self.dirty:
            print(file=self.out)
            self.dirty = False
        print(f"demo: {text}", file=self.out, flush=True)

    def progress(self, text: str) -> None:
        if self.live:
            print(f"\r{text}\x1b[K", end="", file=self.out, flush=True)
            self.dirty = True
        else:
            print(text, file=self.out, flush=True)


def _wait(cond: Callable[[], Any], timeout: float, what: str, tick: Callable[[], None] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        if tick is not None:
            tick()
        time.sleep(0.05)


def _ring_or_dead(cluster: Any, ids: Any) -> list[int] | None:
    """The synchronized ring of exactly ``ids``; RuntimeError as soon as one of their daemons exited."""
    dead = [i for i in ids if not cluster.nodes[i].alive]
    if dead:
        raise RuntimeError(f"the daemon of node(s) {dead} exited (logs below)")
    ring = cluster.ring_of(ids)
    return list(ring) if ring else None


def _run(args: argparse.Namespace) -> int:
    if args.ipc:
        from pycorosync.demo_ipc import run_ipc

        return run_ipc(args)
    if args.seconds is None:
        args.seconds = 10.0
    if not 2 <= args.nodes <= 16:
        print("demo: --nodes must be between 2 and 16", file=sys.stderr)
        return 1
    if not 2 <= args.seconds <= 3600:
        print("demo: --seconds must be between 2 and 3600", file=sys.stderr)
        return 1
    from pathlib import Path

    from pycorosync import jitcache
    from pycorosync.localcluster import SHM_DIR, Cluster

    jitcache.configure()
    jitcache.check_warm("demo")
    from pycorosync.ipc import fastpath, ring_kernels, wakeup

    ring_kernels.warm()  # once here, so that every forked worker starts with the kernels loaded
    wakeup.warm()
    fastpath.warm()

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    show = _Show()
    base = Path(tempfile.mkdtemp(prefix="pycorosync-demo-"))
    if len(str(base)) > MAX_BASE_CHARS:  # the nodes' unix sockets live below it (108 bytes at most)
        base.rmdir()
        base = Path(tempfile.mkdtemp(prefix="pycorosync-demo-", dir="/tmp"))
    cluster = Cluster(base, args.nodes, totem=DEMO_TOTEM, test_services=(), name_prefix="demo")
    workers: list[Worker] = []
    victim_id = args.nodes
    result: dict[str, Any] = {"nodes": args.nodes}
    ok = False
    try:
        show.say(f"starting {args.nodes} nodes on 127.0.0.1-{args.nodes}, UDP port {cluster.port}, "
                 f"token {DEMO_TOTEM['token']} ms (run dirs under {base})")
        t0 = time.monotonic()
        cluster.start()
        ring = _wait(lambda: _ring_or_dead(cluster, cluster.nodes), 90, "the ring to form")
        show.say(f"ring formed in {time.monotonic() - t0:.1f} s: members {sorted(cluster.nodes)}, "
                 f"ring id {ring[0]}.{ring[1]}")

        def spawn(nodeid: int, gen: int) -> Worker:
            w = Worker(nodeid, gen, str(cluster.nodes[nodeid].run_dir), str(base / f"ids-{nodeid}-{gen}.bin"))
            workers.append(w)
            return w

        for i in cluster.nodes:
            spawn(i, 0)
        live = {w.nodeid: w for w in workers}
        survivors = [i for i in cluster.nodes if i != victim_id]
        events: list[tuple[int, dict[str, Any]]] = []

        def pump() -> None:
            for w in workers:
                events.extend((w.nodeid, e) for e in w.read())

        def joined_all() -> bool:
            pump()
            bad = [w for w in workers if w.reap() and not w.joined]
            if bad:
                raise RuntimeError(f"the cpg process of node {bad[0].nodeid} failed: {bad[0].events[-1:]}")
            return all(w.joined for w in workers)

        _wait(joined_all, 30, "every node's cpg process to join")
        _wait(lambda: (pump(), all(w.members == args.nodes for w in workers))[1], 30,
              "every cpg process to see the whole group")
        for w in workers:
            w.signal(signal.SIGUSR2)
        show.say(f"one cpg process per node joined group {GROUP.decode()!r}; sending {MSG_BYTES}-byte messages "
                 f"from every node")
        t_traffic = time.monotonic()
        last = {"t": t_traffic, "n": 0}

        def chain_state() -> str:
            marks: dict[int, set[str]] = {}
            for w in live.values():
                m = w.stats.get("marker")
                if m:
                    marks.setdefault(m[0], set()).add(m[1])
            shared = [s for s in sorted(marks) if len(marks[s]) > 0]
            if not shared:
                return "chain -"
            s = shared[-1]
            return f"chain@{s} {'ok' if len(marks[s]) == 1 else 'DIFFERS'}"

        def tick() -> None:
            pump()
            now = time.monotonic()
            if now - last["t"] < (0.5 if show.live else 1.0):
                return
            n = live[1].stats["delivered"]
            rate = (n - last["n"]) / (now - last["t"])
            last.update(t=now, n=n)
            per_node = " ".join(f"n{i}:{live[i].stats['delivered']}" for i in sorted(live))
            show.progress(f"  {now - t_traffic:5.1f}s  {rate:8.0f} msg/s  delivered {per_node}  {chain_state()}")

        # -- crash one node -------------------------------------------------------------------------------
        end_first = t_traffic + args.seconds * 0.3
        while time.monotonic() < end_first:
            tick()
            time.sleep(0.05)
        node = cluster.nodes[victim_id]
        pids = node.pids()
        t_kill = time.monotonic()
        node.kill()
        show.say(f"SIGKILL to node {victim_id} (pids {sorted(pids.values())})")

        def nodedown_seen() -> float | None:
            for nid, e in events:
                if nid == 1 and e["ev"] == "confchg" and e["t"] >= t_kill and any(
                        a[0] == victim_id and a[2] == 3 for a in e["left"]):  # CPG_REASON_NODEDOWN
                    return float(e["t"])
            return None

        t_down = _wait(nodedown_seen, 60, f"NODEDOWN of node {victim_id}", tick)
        result["nodedown_detected_s"] = round(t_down - t_kill, 2)
        ring = _wait(lambda: _ring_or_dead(cluster, survivors), 30, "the survivors' ring", tick)
        show.say(f"NODEDOWN node {victim_id} seen after {t_down - t_kill:.2f} s; new membership {survivors}, "
                 f"ring id {ring[0]}.{ring[1]}")
        live[victim_id].reap(block=False)

        # -- restart it -----------------------------------------------------------------------------------
        t_restart = time.monotonic()
        node.start()
        show.say(f"restarting node {victim_id}")

        def node_up() -> float | None:
            for nid, e in events:
                if nid == 1 and e["ev"] == "totem" and e["t"] >= t_restart and victim_id in e["members"]:
                    return float(e["t"])
            return None

        t_up = _wait(node_up, 90, f"node {victim_id} back in the ring", tick)
        _wait(lambda: _ring_or_dead(cluster, cluster.nodes), 30, "the full ring", tick)
        show.say(f"NODEUP node {victim_id}: back in the ring after {t_up - t_restart:.2f} s; members "
                 f"{sorted(cluster.nodes)}")
        live[victim_id] = spawn(victim_id, 1)

        def rejoined() -> float | None:
            for nid, e in events:
                if nid == 1 and e["ev"] == "confchg" and e["t"] >= t_restart and any(
                        a[0] == victim_id for a in e["joined"]):
                    return float(e["t"])
            return None

        t_join = _wait(rejoined, 30, f"node {victim_id}'s cpg process to rejoin the group", tick)
        _wait(lambda: live[victim_id].members == args.nodes, 30, f"node {victim_id}'s process to see the group", tick)
        live[victim_id].signal(signal.SIGUSR2)
        result["rejoin_s"] = round(t_join - t_restart, 2)
        show.say(f"node {victim_id}'s cpg process rejoined the group {t_join - t_restart:.2f} s after the restart")

        # -- run on, then stop the traffic and compare ----------------------------------------------------
        end = max(t_traffic + args.seconds, time.monotonic() + 1.5)
        while time.monotonic() < end:
            tick()
            time.sleep(0.05)
        t_stop = time.monotonic()
        for w in workers:
            w.signal(signal.SIGUSR1)
        _wait(lambda: (pump(), all(w.reap() for w in workers))[1], DRAIN_TIMEOUT_S + 10, "the cpg processes to drain", None)
        pump()
        show.say(f"traffic stopped after {t_stop - t_traffic:.1f} s")
        seqs: dict[str, list[int]] = {}
        for w in workers:
            with contextlib.suppress(OSError):
                import array

                a = array.array("Q")
                a.frombytes(Path(w.ids_path).read_bytes())
                seqs[f"node {w.nodeid}" + (" (restarted)" if w.gen else " (killed)" if w.nodeid == victim_id else "")] \
                    = a.tolist()
        order_ok, why = check_order(seqs)
        undrained = [f"node {w.nodeid}: {w.done and w.done['status']}" for w in workers
                     if w.nodeid != victim_id or w.gen == 1 if not (w.done and w.done["status"] == "done")]
        # a message a survivor's process sent was delivered to every survivor, exactly once
        full = {w.nodeid: w for w in workers if w.gen == 0 and w.nodeid != victim_id}
        lost = []
        for i in full:
            got = seqs.get(f"node {i}", [])
            if len(set(got)) != len(got):
                lost.append(f"node {i} delivered a message twice")
            for j, s in full.items():
                sent_j = s.done["sent"] if s.done else -1
                mine = {m & 0xFFFFFFFF for m in got if m >> 56 == j and (m >> 32) & 0xFFFFFF == (s.pid & 0xFFFFFF)}
                if len(mine) != sent_j:
                    missing = sorted(set(range(max(sent_j, 0))) - mine)
                    lost.append(f"node {i} delivered {len(mine)} of node {j}'s {sent_j} messages "
                                f"(missing seq {missing[:5]})")
        delivered = len(seqs.get("node 1", []))
        result.update(delivered=delivered, order_ok=order_ok and not lost,
                      msgs_per_s=round(delivered / max(1e-9, t_stop - t_traffic)))
        lost += undrained
        show.say(f"order check: {why}" + (f"; PROBLEMS: {lost}" if lost else "; nothing lost"))
        ok = bool(result["order_ok"]) and delivered > 0
    except KeyboardInterrupt:
        show.say("interrupted, stopping")
        return 130
    except (TimeoutError, RuntimeError) as exc:
        show.say(f"FAILED: {exc}")
        with contextlib.suppress(Exception):
            sys.stderr.write(cluster.logs(tail=15) + "\n")
    finally:
        for w in workers:
            w.stop()
        cluster.stop()
        leftovers = sorted(p.name for p in SHM_DIR.glob(f"pcs-{cluster.name}-*"))
        shutil.rmtree(base, ignore_errors=True)
        if leftovers:
            show.say(f"left behind: {leftovers}")
    show.say(f"summary: {args.nodes} nodes, {result.get('delivered', 0):,} messages delivered in one order "
             f"({result.get('msgs_per_s', 0):,} msg/s), NODEDOWN detected in {result.get('nodedown_detected_s')} s, "
             f"rejoin in {result.get('rejoin_s')} s; cluster stopped and cleaned up")
    if args.json:
        print(json.dumps({"nodes": args.nodes, "delivered": result.get("delivered", 0),
                          "order_ok": bool(result.get("order_ok")), "msgs_per_s": result.get("msgs_per_s", 0),
                          "nodedown_detected_s": result.get("nodedown_detected_s"),
                          "rejoin_s": result.get("rejoin_s")}))
    return 0 if ok else 1
