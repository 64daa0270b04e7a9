"""``pycorosync status [--watch]``: the local node and its cluster at a glance, refreshed in place.

Reads what the exporter reads (monitoring.sources): totem's block and status file, the stats table, the
link table, the quorum service, the node's processes; the cluster name comes from cmap
(``totem.cluster_name``), which names the node's segments. Rates are taken over ``--interval``.

    pycorosync status               # one view (waits one interval for the rates)
    pycorosync status --watch       # refreshed every interval until Ctrl-C
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CLEAR = "\x1b[H\x1b[2J"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
BOLD, RED, GREEN, RESET = "\x1b[1m", "\x1b[31m", "\x1b[32m", "\x1b[0m"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("status", help="live view of the local node and cluster (members, quorum, rates, links)",
                              description="The local node and its cluster at a glance: ring, members, quorum, "
                                          "rates over the interval, links, processes.")
    p.add_argument("--watch", "-w", action="store_true", help="refresh in place until interrupted")
    p.add_argument("--interval", "-i", type=float, default=1.0, metavar="S", help="seconds between refreshes (1)")
    p.add_argument("--count", "-n", type=int, default=None, metavar="N", help="with --watch: stop after N views")
    p.add_argument("--no-color", action="store_true", help="plain text (also when stdout is not a terminal)")
    p.set_defaults(func=run)


def _fmt_rate(value: float, unit: str = "/s") -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{prefix}{unit}"
    return f"{value:.1f}{unit}"


def _fmt_bytes(n: float) -> str:
    for scale, prefix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= scale:
            return f"{n / scale:.1f} {prefix}"
    return f"{int(n)} B"


class _Paint:
    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, code: str) -> str:
        return f"{code}{text}{RESET}" if self.color else text


def _table_total(reading: Any, name: str) -> float | None:
    snap = reading.table
    if snap is None or name not in {m.name for m in snap.metrics}:
        return None
    return float(snap.total(name))


def render(cur: Any, prev: Any | None, dt_s: float, *, cluster: str, run_dir: str, color: bool = False,
           now: float | None = None) -> str:
    """The view of one reading (``monitoring.reading.NodeReading``); rates from ``prev`` taken ``dt_s`` earlier."""
    paint = _Paint(color)
    st, srp, rt = cur.status, cur.srp, cur.runtime

    def rate(block: str, key: str) -> str:
        if prev is None or dt_s <= 0:
            return "-"
        a, b = getattr(prev, block).get(key), getattr(cur, block).get(key)
        return "-" if a is None or b is None or b < a else _fmt_rate((b - a) / dt_s)

    stamp = time.strftime("%H:%M:%S", time.localtime(now))
    lines = [paint(f"pycorosync node {cur.nodeid} of cluster {cluster!r}", BOLD) + f"   {run_dir}   {stamp}"]
    # ring and membership
    members = rt.get("members")
    configured = st.get("configured_nodes")
    state = str(st.get("state") or "unknown")
    ring = f"{st['ring_rep']}.{rt['ring_seq']}" if "ring_rep" in st and "ring_seq" in rt else "-"
    sync = "sync completed" if st.get("sync_completed") else "sync in progress"
    member_text = "-" if members is None else f"{members}" + (f"/{configured}" if configured else "")
    state_text = paint(state, GREEN if state.upper() == "OPERATIONAL" else RED)
    lines.append(f"Ring       {ring:<10} {state_text}   {sync}   members {member_text}")
    # quorum
    q = cur.quorum
    if q is None:
        lines.append("Quorum     unknown (quorum service not reachable)")
    else:
        text = paint("quorate", GREEN) if q.quorate else paint("NOT QUORATE", RED)
        votes = "" if q.total_votes is None else (
            f"   votes {q.total_votes}  expected {q.expected_votes}  needed {q.quorum}  this node {q.node_votes}")
        lines.append(f"Quorum     {text}{votes}")
    # totem
    if srp:
        mtt = srp.get("mtt_rx_token")
        lines.append(
            f"Totem      tokens {rate('srp', 'orf_token_rx')}  mcast tx {rate('srp', 'mcast_tx')}"
            f"  rx {rate('srp', 'mcast_rx')}  retx {rate('srp', 'mcast_retx')}"
            f"  delivered {rate('srp', 'messages_delivered')}"
            + ("" if mtt is None else f"  mean token interval {mtt} ms")
        )
        lines.append(f"           flow-control waits {rt.get('submit_queue_full', 0)}  tx backlog {rt.get('tx_backlog', 0)}"
                     f"  deliver backlog {rt.get('deliver_backlog', 0)}  gathers {srp.get('gather_entered', 0)}"
                     f"  token lost {srp.get('operational_token_lost', 0)}")
    else:
        lines.append("Totem      no counters (node segment not found)")
    # transport
    tx = _table_total(cur, "transport.tx_bytes")
    if tx is None or cur.table is None:
        lines.append("Transport  no stats table")
    else:
        def trate(name: str, unit: str) -> str:
            if prev is None or prev.table is None or dt_s <= 0:
                return "-"
            a, b = _table_total(prev, name), _table_total(cur, name)
            return "-" if a is None or b is None or b < a else _fmt_rate((b - a) / dt_s, unit)

        drops = sum(v for m in cur.table.metrics if m.name.startswith("transport.rx_drop_")
                    for v in [_table_total(cur, m.name) or 0])
        lines.append(f"Transport  tx {trate('transport.tx_bytes', 'B/s')} {trate('transport.tx_packets', ' pkt/s')}"
                     f"   rx {trate('transport.rx_bytes', 'B/s')} {trate('transport.rx_packets', ' pkt/s')}"
                     f"   drops {int(drops)}")
    # links
    if cur.links:
        parts = []
        for link in cur.links:
            heard = "never" if link.last_heard_s is None else f"{link.last_heard_s:.1f}s ago"
            state = paint("up", GREEN) if link.connected else paint("DOWN", RED)
            parts.append(f"{link.peer}:{state} ({heard})")
        lines.append("Links      " + "  ".join(parts))
    else:
        lines.append("Links      no link table")
    # ipc
    conns = _table_total(cur, "ipcs.active")
    if conns is not None:
        lines.append(f"IPC        {int(conns)} client connections")
    # SAM supervisors (cmap resources.process.*)
    sam = cur.sam
    if sam is not None and any(sam.instances.values()):
        states = ", ".join(f"{n} {state}" for state, n in sam.instances.items() if n)
        lines.append(f"SAM        {states}; restarts {sam.restarts}")
    # processes
    if cur.processes:
        lines.append("")
        lines.append(paint(f"{'process':<12}{'pid':>8}{'cpu':>8}{'rss':>12}{'restarts':>10}  sched", BOLD))
        before = {p.process: p for p in (prev.processes if prev is not None else ())}
        for p in cur.processes:
            old = before.get(p.process)
            cpu = "-" if old is None or old.pid != p.pid or dt_s <= 0 else f"{100 * (p.cpu_seconds - old.cpu_seconds) / dt_s:.1f}%"
            lines.append(f"{p.process:<12}{p.pid:>8}{cpu:>8}{_fmt_bytes(p.rss_bytes):>12}{p.restarts:>10}  {p.sched}")
    return "\n".join(lines) + "\n"


def _cluster_facts(run_dir: Path) -> tuple[str, int | None]:
    """``totem.cluster_name`` and the nodelist size, from the node's cmap."""
    from pycorosync.cmap import CmapClient

    with CmapClient(str(run_dir), timeout=2.0) as cmap:
        value, _ = cmap.get("totem.cluster_name")
        configured = len([k for k in cmap.keys("nodelist.node.") if k.endswith(".nodeid")])
    return str(value), configured or None


def _reader(run_dir: Path) -> tuple[Any, str]:
    """The node's reader and cluster name; ValueError saying what is missing."""
    import json

    from pycorosync.ipc.errors import CsError
    from pycorosync.ipc.segment import segment_name
    from pycorosync.monitoring.sources import NodeReader, NodeSpec

    try:
        status = json.loads((run_dir / "totem.status.json").read_text())
        nodeid = int(status["nodeid"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"no running node in {run_dir} (no totem.status.json); is 'pycorosync daemon' up?") from None
    try:
        cluster, configured = _cluster_facts(run_dir)
    except CsError as exc:
        raise ValueError(f"cannot ask cmap in {run_dir} for totem.cluster_name: {exc}") from None
    try:
        supervisor = int((run_dir / "pycorosync.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        supervisor = None
    spec = NodeSpec(
        nodeid=nodeid, cluster=cluster, run_dir=run_dir, segment=segment_name(cluster, nodeid, "rings"),
        stats=segment_name(cluster, nodeid, "stats"), links=segment_name(cluster, nodeid, "links"), services=None,
        supervisor_pid=supervisor, configured_nodes=configured,
    )
    return NodeReader(spec), cluster


def run(args: argparse.Namespace) -> int:
    """The ``status`` handler: exit 0, or 1 with a message when no node runs in the run dir."""
    from pycorosync.paths import resolve_run_dir

    run_dir = resolve_run_dir(args.run_dir)
    try:
        reader, cluster = _reader(run_dir)
    except ValueError as exc:
        print(f"pycorosync status: {exc}", file=sys.stderr)
        return 1
    color = sys.stdout.isatty() and not args.no_color
    interval = max(0.1, float(args.interval))
    out = sys.stdout
    try:
        reader.refresh_slow()
        prev, prev_t = reader.read(), time.monotonic()
        shown = 0
        if args.watch and color:
            out.write(HIDE_CURSOR)
        while True:
            time.sleep(interval)  # the rates' window; a CLI has nothing else to wait for
            reader.refresh_slow()
            cur, now = reader.read(), time.monotonic()
            view = render(cur, prev, now - prev_t, cluster=cluster, run_dir=str(run_dir), color=color)
            out.write((CLEAR if args.watch and color else "") + view)
            if args.watch and not color:
                out.write("\n")
            out.flush()
            shown += 1
            prev, prev_t = cur, now
            if not args.watch or (args.count is not None and shown >= args.count):
                return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if args.watch and color:
            out.write(SHOW_CURSOR)
            out.flush()
        reader.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pycorosync")
    parser.add_argument("--run-dir", default=None)
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
