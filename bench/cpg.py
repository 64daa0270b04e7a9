"""CPG on a 3-node cluster on loopback: throughput and delivery latency by message size and sender count.

Prints one JSON object per line:
    {"bench": "cpg", "impl": "pycorosync", "senders": 1|3, "size_bytes": ..., "msgs_per_s": ... (per receiver),
     "mb_per_s": ..., "p50_us": ..., "p99_us": ..., "idle_cpu_per_node": ..., "netmtu": ...,
     "p50_us_by_sender": [...] (the latency p50 of each sender: node 1's, node 2's, ...),
     "paced_cpu_per_node": ... (CPU share of one node's processes while the latency senders pace their messages),
     "sched": "SCHED_RR"|"SCHED_BATCH"|"SCHED_OTHER" (what the nodes' processes got),
     "load_avg_1m": ... (the machine's load when the case ended: other work on a shared machine skews it),
     "cpu_us_per_msg": {"sum": ..., "totem": ..., "transport": ..., "cpg": ..., "clients": ...}}
cpu_us_per_msg: CPU microseconds per multicast message during the throughput case, of each kind of
process summed over the 3 nodes (and of the 3 bench clients): what the design costs per message, which
varies far less between runs on a noisy machine than the rates do.
Throughput: each sender multicasts (CPG_TYPE_AGREED) as fast as flow control lets it for a few seconds,
then a FIN; every receiver counts the messages it got until the FIN of every sender (msgs_per_s is the
mean over the 3 receivers). Latency: each sender paces a few messages a second and times the round
trip from cpg_mcast_joined to its own delivery. idle_cpu_per_node: CPU share (1.0 = one core) of one
node's processes while the ring is idle.
The baseline is real corosync on the same machine in the same run (``impl: corosync``, after pycorosync's
cases): 3 daemons, transport udpu, each in a network namespace of its own (bench/_corosync_nodes.py: corosync
finds its node by the machine's addresses, so three can't share loopback), driven by the same worker code
through corosync's own libcpg (bench/_libcpg.py, ctypes), so the two engines serve the same Python
application. Its lines add "version", "transport", "network" and "client"; its cpu_us_per_msg splits into
"corosync" (the 3 daemons) and "clients". It needs root, ``ip``, ``nft``, ``corosync`` and libcpg (Debian:
``apt-get install corosync libcpg4``; ``make sysdeps`` does it); otherwise a line {"bench": "cpg", "impl":
"corosync", "skipped": ...} says why. It runs with corosync's own default of realtime scheduling
(``--corosync-sched-rr no`` for SCHED_OTHER). A second baseline, {"bench": "cpg", "impl": "handoff-floor", "hops": 4, "p50_us": ..., "p99_us": ...},
times 4 bare process wake-ups (eventfd, no work) at the latency pacing: the least an own delivery can take
when it passes client -> cpg -> totem -> cpg -> client on this machine.

    python bench/cpg.py [--quick] [--seconds 3] [--netmtu 1500|65535] [--sizes 64,1024] [--senders 1,3]
                        [--impl pycorosync,corosync] [--sched-rr yes|no] [--sched-batch yes|no]
                        [--corosync-sched-rr yes|no] [--totem KEY=VALUE ...]

The full matrix is 64 B, 1 KiB, 64 KiB and 1 MiB, each with 1 and 3 senders; ``--quick`` runs 1 KiB and
64 KiB with 1 sender (under 2 minutes). ``--netmtu 1500`` is corosync udpu's frame size (the baseline's);
on loopback ``65535`` (knet's size) packs a 64 KiB message in two frames instead of 47. The machine's
1-minute load is printed with every case: on a shared machine, compare only figures of similar load.
The nodes run with ``system.sched_rr: no``; ``--sched-rr yes`` gives them corosync's default, round-robin
realtime scheduling (as root), which on a machine where the 3 nodes and their clients share 2 cores costs
most of the throughput: every wake-up of a realtime process runs at once, so nothing batches.
Without realtime the nodes run ``SCHED_BATCH`` (``system.sched_batch: yes``, the default); ``--sched-batch no``
gives them plain ``SCHED_OTHER``, whose wake-up preemption costs 2 to 4 times the CPU per small message here.
``--totem max_messages=50`` (repeatable) sets another totem key of the cluster, for experiments; the
figures to compare with corosync are those with its defaults.
PYCOROSYNC_PROFILE_DIR=<dir> in the environment makes the totem and service processes write cProfile data;
PYCOROSYNC_RX_COMPILED=0 turns off totem's compiled receive path (engine/runtime/rxfast.py), for A/B runs.
On a 2-vCPU VM the 3-sender cases vary by a factor of two between consecutive runs of one build: compare
builds with interleaved runs, several each.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

GROUP = b"bench-cpg"
SIZES = (64, 1024, 65536, 1 << 20)
QUICK_SIZES = (1024, 65536)
TOTEM = {"token": 1000, "token_coefficient": 0, "join": 50}
_HDR = struct.Struct("<BIIIQ")  # kind, case, pid, seq, t_ns
DATA, FIN = 0, 1
LATENCY_RATE = 20  # messages/s per sender while timing round trips
#: processes whose CPU per message the throughput cases report (the three nodes' summed, and the clients)
CPU_SPLIT = ("totem", "transport", "cpg", "corosync", "clients")
CASE_TIMEOUT_S = 120.0


# -- worker: one cpg process per node, driven by JSON lines on a pipe ----------------------------------
def _pycorosync_client(run_dir: str) -> Callable[[], Any]:
    """How a worker opens its cpg handle on a pycorosync node."""
    def connect() -> Any:
        from pycorosync.cpg import CpgClient

        return CpgClient(run_dir, timeout=30.0)
    return connect


def _libcpg_client(netns: str) -> Callable[[], Any]:
    """How a worker opens its cpg handle on a real corosync node: enter the node's network namespace, then
    corosync's own libcpg (bench/_libcpg.py)."""
    def connect() -> Any:
        from _libcpg import LibCpgClient, enter_netns

        enter_netns(netns)
        return LibCpgClient(timeout=30.0)
    return connect


def _worker(connect: Callable[[], Any], cmd_fd: int, out_fd: int) -> int:
    from pycorosync.cpg import CPG_TYPE_AGREED, ConfChg, CsError, CsErrorCode, Deliver

    pid = os.getpid()
    reader = os.fdopen(cmd_fd, "r")

    def reply(obj: dict[str, Any]) -> None:
        os.write(out_fd, (json.dumps(obj) + "\n").encode())

    with connect() as cpg:
        deadline = time.monotonic() + 30
        while True:
            try:
                cpg.join(GROUP)
                break
            except CsError as exc:
                if exc.code != CsErrorCode.CS_ERR_TRY_AGAIN or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        members = 0
        while members < 3:
            event = cpg.next_event(30.0)
            if event is None:
                raise RuntimeError("the group never reached 3 members")
            if isinstance(event, ConfChg):
                members = len(event.members)
        reply({"ready": pid})

        def send(case: int, kind: int, seq: int, pad: bytes) -> None:
            header = _HDR.pack(kind, case, pid, seq, time.perf_counter_ns())
            while True:
                try:
                    cpg.mcast_joined([header, pad], CPG_TYPE_AGREED)
                    return
                except CsError as exc:
                    if exc.code != CsErrorCode.CS_ERR_TRY_AGAIN:
                        raise
                    take(cpg.next_event(0.002))

        state: dict[str, Any] = {}

        def take(event: Any) -> None:
            if not isinstance(event, Deliver):
                return
            kind, case, sender, seq, t_ns = _HDR.unpack_from(event.msg)
            if case != state.get("case"):
                return
            if kind == FIN:
                state["fins"].add(sender)
                return
            state["delivered"] += 1
            state["t_last"] = time.monotonic()
            if sender == pid and seq == state.get("waiting"):
                state["rtts"].append(time.perf_counter_ns() - t_ns)
                state["waiting"] = None

        for line in reader:
            cmd = json.loads(line)
            if cmd["cmd"] == "quit":
                break
            case, nsend, size = cmd["case"], cmd["senders"], cmd["size"]
            sending = cmd["send"]
            pad = bytes(max(0, size - _HDR.size))
            state.update(case=case, fins=set(), delivered=0, t_last=None, rtts=[], waiting=None)
            t0 = time.monotonic()
            end = t0 + CASE_TIMEOUT_S
            sent = 0
            if sending and cmd["mode"] == "throughput":
                stop_at = t0 + cmd["seconds"]
                while time.monotonic() < stop_at:
                    while (event := cpg.next_event(0.0)) is not None:
                        take(event)
                    send(case, DATA, sent, pad)
                    sent += 1
            elif sending:  # latency: one message at a time, paced
                for seq in range(cmd["count"]):
                    slot = t0 + seq / cmd["rate"]
                    while (left := slot - time.monotonic()) > 0:
                        take(cpg.next_event(left))
                    state["waiting"] = seq
                    send(case, DATA, seq, pad)
                    sent += 1
                    while state["waiting"] is not None and time.monotonic() < end:
                        take(cpg.next_event(0.5))
            if sending:
                send(case, FIN, sent, b"")
            while len(state["fins"]) < nsend and time.monotonic() < end:
                take(cpg.next_event(0.1))
            reply({"delivered": state["delivered"], "sent": sent, "seconds": (state["t_last"] or t0) - t0,
                   "rtts": state["rtts"], "complete": len(state["fins"]) >= nsend})
    return 0


class _Handle:
    def __init__(self, connect: Callable[[], Any]) -> None:
        from pycorosync.demo import fork_child

        cmd_r, self.cmd_w = os.pipe()
        self.out_r, out_w = os.pipe()
        self.pid = fork_child(lambda: _worker(connect, cmd_r, out_w))
        os.close(cmd_r)
        os.close(out_w)
        self.reader = os.fdopen(self.out_r, "r")

    def send(self, obj: dict[str, Any]) -> None:
        os.write(self.cmd_w, (json.dumps(obj) + "\n").encode())

    def recv(self) -> dict[str, Any]:
        line = self.reader.readline()
        if not line:
            raise RuntimeError(f"bench worker {self.pid} died")
        return dict(json.loads(line))

    def stop(self) -> None:
        from pycorosync.demo import stop_child

        with contextlib.suppress(OSError):
            self.send({"cmd": "quit"})
        stop_child(self.pid, grace_s=5.0)
        with contextlib.suppress(OSError):
            os.close(self.cmd_w)
        self.reader.close()


def _idle_cpu(pids: list[int], nodes: int, settle_s: float = 2.0, seconds: float = 5.0) -> float:
    """Mean CPU share of one node's processes (``pids``: those of all ``nodes``) while nothing is sent,
    from the threads' schedstat (exact; /proc/<pid>/stat counts 10 ms ticks, too coarse for a 1 % figure)."""
    from pycorosync.localcluster import cpu_ns

    time.sleep(settle_s)  # the workers' joins and the sync they cause are over
    a, t0 = sum(cpu_ns(pid) for pid in pids), time.monotonic()
    time.sleep(seconds)
    return (sum(cpu_ns(pid) for pid in pids) - a) / 1e9 / (time.monotonic() - t0) / nodes


def _cpu_by_process(cluster: Any, workers: list[_Handle]) -> dict[str, int]:
    """CPU ns used so far, summed over the 3 nodes by process name (totem, transport, cpg, ...) and over the
    bench's cpg clients ("clients")."""
    from pycorosync.localcluster import cpu_ns

    out: dict[str, int] = {}
    for node in cluster.nodes.values():
        for name, pid in node.pids().items():
            out[name] = out.get(name, 0) + cpu_ns(pid)
    out["clients"] = sum(cpu_ns(w.pid) for w in workers)
    return out


def _handoff_floor(hops: int, count: int, rate: float, realtime: bool) -> list[int]:
    """Round trips (ns) through a chain of ``hops`` bare process wake-ups (eventfd write, the next process
    blocked in read), paced like the latency cases: what a message's own delivery costs at least in a design
    where it passes that many processes (client -> cpg -> totem -> cpg -> client is 4), with no work at all.
    With ``realtime`` the processes in the middle ask for SCHED_RR, as the nodes' processes do."""
    fds = [os.eventfd(0, os.EFD_CLOEXEC) for _ in range(hops)]
    pids = []
    try:
        for i in range(1, hops):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - a child of the bench
                try:
                    if realtime:
                        with contextlib.suppress(OSError):
                            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(os.sched_get_priority_max(os.SCHED_RR)))
                    while True:
                        os.eventfd_read(fds[i - 1])
                        os.eventfd_write(fds[i], 1)
                finally:
                    os._exit(0)
            pids.append(pid)
        rtts = []
        t0 = time.monotonic()
        for k in range(count):
            while (left := t0 + k / rate - time.monotonic()) > 0:
                time.sleep(left)
            t = time.perf_counter_ns()
            os.eventfd_write(fds[0], 1)
            os.eventfd_read(fds[-1])
            rtts.append(time.perf_counter_ns() - t)
        return rtts
    finally:
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.waitpid(pid, 0)
        for fd in fds:
            os.close(fd)


def _node_sched(cluster: Any) -> str:
    """The scheduling node 1's totem process runs with (``SCHED_RR``/``SCHED_BATCH``/``SCHED_OTHER``):
    ``--sched-rr yes`` gets realtime only with the rights for it (root)."""
    pid = cluster.nodes[1].child_pid("totem")
    if pid is None:
        return "unknown"
    names = {os.SCHED_RR: "SCHED_RR", os.SCHED_BATCH: "SCHED_BATCH"}
    return names.get(os.sched_getscheduler(pid), "SCHED_OTHER")


def _percentile(values: list[int], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] / 1000 if values else 0.0


def _matrix(args: argparse.Namespace) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(sizes, sender counts) of the run."""
    sizes: tuple[int, ...] = QUICK_SIZES if args.quick else SIZES
    sender_counts: tuple[int, ...] = (1,) if args.quick else (1, 3)
    if args.sizes:
        sizes = tuple(int(x) for x in args.sizes.split(","))
    if args.senders:
        sender_counts = tuple(int(x) for x in args.senders.split(","))
    return sizes, sender_counts


def _run_cases(args: argparse.Namespace, workers: Sequence[_Handle | _ProcHandle], cpu_sample: Callable[[], dict[str, int]],
               fields: dict[str, Any]) -> None:
    """Runs the matrix on ready workers (one per node) and prints a JSON line per case, with ``fields``
    (impl, idle CPU, scheduling, ...) in each."""
    sizes, sender_counts = _matrix(args)
    case = 0
    for nsend in sender_counts:
        for size in sizes:
            results = {}
            cpu_used: dict[str, int] = {}
            paced_cpu = 0.0
            for mode in ("throughput", "latency"):
                case += 1
                count = max(10, args.latency_count // (4 if size >= 1 << 20 else 1))
                cpu_before, t_before = cpu_sample(), time.monotonic()
                for i, w in enumerate(workers):
                    w.send({"cmd": "run", "mode": mode, "case": case, "senders": nsend, "size": size,
                            "send": i < nsend, "seconds": args.seconds, "count": count, "rate": LATENCY_RATE})
                results[mode] = [w.recv() for w in workers]
                after = cpu_sample()
                if mode == "throughput":
                    cpu_used = {k: after[k] - cpu_before.get(k, 0) for k in after}
                else:  # the nodes' CPU while the senders pace their messages (the clients' not counted)
                    node_ns = sum(after[k] - cpu_before.get(k, 0) for k in after if k != "clients")
                    paced_cpu = node_ns / 1e9 / (time.monotonic() - t_before) / len(workers)
            tput = results["throughput"]
            rates = [r["delivered"] / r["seconds"] for r in tput if r["seconds"] > 0]
            msgs_per_s = sum(rates) / len(rates) if rates else 0.0
            rtts = [x for r in results["latency"] for x in r["rtts"]]
            complete = all(r["complete"] for r in tput + results["latency"])
            sent = sum(r["sent"] for r in tput)
            # CPU of the whole machine's share of the case per message multicast (delivered to 3 nodes)
            cpu_us = {k: round(v / 1e3 / sent, 2) for k, v in sorted(cpu_used.items())
                      if v > 0 and k in CPU_SPLIT} if sent else {}
            line = {"bench": "cpg", "impl": fields["impl"], "senders": nsend, "size_bytes": size,
                    "msgs_per_s": round(msgs_per_s, 1), "mb_per_s": round(msgs_per_s * size / 1e6, 3),
                    "p50_us": round(_percentile(rtts, 0.5), 1), "p99_us": round(_percentile(rtts, 0.99), 1),
                    "p50_us_by_sender": [round(_percentile(r["rtts"], 0.5), 1) for r in results["latency"][:nsend]],
                    "paced_cpu_per_node": round(paced_cpu, 4),
                    "sent": sent, "cpu_us_per_msg": {"sum": round(sum(cpu_us.values()), 2), **cpu_us},
                    "complete": complete, "netmtu": args.netmtu, **fields,
                    "load_avg_1m": round(os.getloadavg()[0], 2)}
            print(json.dumps(line), flush=True)


def _run_pycorosync(args: argparse.Namespace, extra_totem: dict[str, str]) -> None:
    from pycorosync import jitcache
    from pycorosync.localcluster import SHM_DIR, Cluster

    jitcache.configure()
    from pycorosync.ipc import fastpath, ring_kernels, wakeup

    ring_kernels.warm()
    wakeup.warm()
    fastpath.warm()
    base = Path(tempfile.mkdtemp(prefix="pycorosync-bench-cpg-"))
    cluster = Cluster(base, 3, totem={**TOTEM, "netmtu": args.netmtu, **extra_totem}, test_services=(), name_prefix="bcpg",
                      system={"sched_rr": args.sched_rr, "sched_batch": args.sched_batch})
    workers: list[_Handle] = []
    try:
        cluster.start()
        deadline = time.monotonic() + 120
        while cluster.ring_of(cluster.nodes) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the ring did not form\n{cluster.logs(tail=15)}")
            time.sleep(0.05)
        sched = _node_sched(cluster)
        workers = [_Handle(_pycorosync_client(str(node.run_dir))) for node in cluster.nodes.values()]
        for w in workers:
            w.recv()  # ready: every worker sees the 3 members
        idle = _idle_cpu([pid for node in cluster.nodes.values() for pid in node.pids().values()], len(cluster.nodes))
        _run_cases(args, workers, lambda: _cpu_by_process(cluster, workers),
                   {"impl": "pycorosync", "idle_cpu_per_node": round(idle, 4), "sched": sched,
                    **({"totem": extra_totem} if extra_totem else {})})
    finally:
        for w in workers:
            w.stop()
        cluster.stop()
        for path in SHM_DIR.glob(f"pcs-{cluster.name}-*"):
            with contextlib.suppress(OSError):
                path.unlink()
        shutil.rmtree(base, ignore_errors=True)


class _ProcHandle:
    """A worker that is a program of its own (the C worker), run in a network namespace: the same
    protocol and calls as ``_Handle``, over the program's stdin and stdout."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid  # ip netns exec execs the worker: same pid

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def recv(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench worker {self.pid} died (exit status {self.proc.wait()})")
        return dict(json.loads(line))

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.send({"cmd": "quit"})
        try:
            self.proc.wait(5.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def _build_c_worker(out_dir: Path) -> tuple[Path | None, str]:
    """Compiles bench/cpg_worker.c against libcpg: (the program, "") or (None, why not)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler (cc) installed"
    exe = out_dir / "cpg_worker"
    done = subprocess.run([cc, "-O2", "-o", str(exe), str(Path(__file__).with_name("cpg_worker.c")), "-l:libcpg.so.4"],
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        return None, f"{cc} could not build bench/cpg_worker.c: {done.stderr.strip()[-500:]}"
    return exe, ""


def _run_corosync(args: argparse.Namespace, extra_totem: dict[str, str]) -> None:
    """The same cases on 3 real corosync daemons (bench/_corosync_nodes.py), driven through libcpg: by the
    Python workers (ctypes), then by the C worker (bench/cpg_worker.c), each per ``--corosync-clients``."""
    from _corosync_nodes import CorosyncNodes, unavailable_reason
    from _libcpg import find_libcpg

    reason = unavailable_reason() or (None if find_libcpg() else "libcpg is not installed (Debian: libcpg4)")
    if reason is not None:
        print(json.dumps({"bench": "cpg", "impl": "corosync", "skipped": reason}), flush=True)
        return
    from pycorosync.localcluster import cpu_ns

    base = Path(tempfile.mkdtemp(prefix="pycorosync-bench-corosync-"))
    nodes = CorosyncNodes(base, 3, totem={**TOTEM, "netmtu": args.netmtu, **extra_totem},
                          sched_rr=args.corosync_sched_rr == "yes")
    workers: list[_Handle | _ProcHandle] = []
    try:
        nodes.start()
        pids = list(nodes.pids().values())
        names = {os.SCHED_RR: "SCHED_RR", os.SCHED_BATCH: "SCHED_BATCH"}
        sched = names.get(os.sched_getscheduler(pids[0]), "SCHED_OTHER")
        idle = _idle_cpu(pids, len(pids))
        version = subprocess.run(["corosync", "-v"], capture_output=True, text=True, timeout=30, check=False)
        words = version.stdout.split("'")
        fields = {"impl": "corosync", "version": words[1] if len(words) > 2 else "unknown",
                  "idle_cpu_per_node": round(idle, 4), "sched": sched, "transport": "udpu", "network": "namespaces",
                  **({"totem": extra_totem} if extra_totem else {})}
        for client in args.corosync_clients.split(","):
            if client == "python":
                workers = [_Handle(_libcpg_client(nodes.netns(nodeid))) for nodeid in nodes.pids()]
                label = "python (libcpg through ctypes)"
            else:
                exe, why = _build_c_worker(base)
                if exe is None:
                    print(json.dumps({"bench": "cpg", "impl": "corosync", "client": "c", "skipped": why}), flush=True)
                    continue
                workers = [_ProcHandle([*nodes.lab.exec_prefix(nodeid), str(exe)]) for nodeid in nodes.pids()]
                label = "c (libcpg)"
            for w in workers:
                w.recv()  # ready: every worker sees the 3 members
            clients = [w.pid for w in workers]
            _run_cases(args, workers,
                       lambda clients=clients: {"corosync": sum(cpu_ns(pid) for pid in pids),  # type: ignore[misc]
                                                "clients": sum(cpu_ns(pid) for pid in clients)},
                       {**fields, "client": label})
            for w in workers:
                w.stop()
            workers = []
    finally:
        for w in workers:
            w.stop()
        nodes.stop()
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 KiB and 64 KiB, 1 sender (under 2 minutes)")
    ap.add_argument("--seconds", type=float, default=3.0, help="throughput sending time per case (default 3)")
    ap.add_argument("--latency-count", type=int, default=60, help="timed round trips per sender and case")
    ap.add_argument("--sizes", type=str, default="", help="comma-separated message sizes (overrides the matrix)")
    ap.add_argument("--senders", type=str, default="", help="comma-separated sender counts (1, 3)")
    ap.add_argument("--impl", type=str, default="pycorosync,corosync",
                    help="which engines to run, in this order (default pycorosync,corosync; corosync is "
                         "skipped with the reason when it is not installed)")
    ap.add_argument("--sched-rr", choices=("yes", "no"), default="no",
                    help="system.sched_rr of the nodes (corosync's default is yes: realtime, as root; it costs "
                         "5-10x throughput when nodes and clients share 2 cores)")
    ap.add_argument("--sched-batch", choices=("yes", "no"), default="yes",
                    help="system.sched_batch of the nodes (pycorosync's default yes: SCHED_BATCH when not "
                         "realtime; no = SCHED_OTHER, for A/B runs)")
    ap.add_argument("--corosync-sched-rr", choices=("yes", "no"), default="yes",
                    help="system.sched_rr of the corosync baseline (default yes, corosync's own default)")
    ap.add_argument("--corosync-clients", type=str, default="python,c",
                    help="the workers that drive the corosync baseline, in order: python (the same worker code as "
                         "pycorosync's, on libcpg through ctypes) and c (bench/cpg_worker.c); default python,c")
    ap.add_argument("--netmtu", type=int, default=1500,
                    help="totem.netmtu of the cluster (1500 as corosync udpu; up to 65535 on loopback, as knet)")
    ap.add_argument("--totem", action="append", default=[], metavar="KEY=VALUE",
                    help="another totem key of the cluster (repeatable), e.g. --totem max_messages=50")
    args = ap.parse_args()
    extra_totem = dict(kv.split("=", 1) for kv in args.totem if "=" in kv)
    impls = [x.strip() for x in args.impl.split(",") if x.strip()]
    unknown = sorted(set(impls) - {"pycorosync", "corosync"})
    if unknown:
        ap.error(f"--impl: unknown engine {', '.join(unknown)} (pycorosync, corosync)")
    unknown = sorted(set(args.corosync_clients.split(",")) - {"python", "c"})
    if unknown:
        ap.error(f"--corosync-clients: unknown client {', '.join(unknown)} (python, c)")

    floor = _handoff_floor(4, args.latency_count, LATENCY_RATE, args.sched_rr == "yes")
    print(json.dumps({"bench": "cpg", "impl": "handoff-floor", "hops": 4,
                      "p50_us": round(_percentile(floor, 0.5), 1), "p99_us": round(_percentile(floor, 0.99), 1),
                      "what": "4 bare process wake-ups (client, cpg, totem, cpg, client) at the latency pacing, no "
                              "work: the least an own delivery can take through this process chain here"}),
          flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        for impl in impls:
            if impl == "pycorosync":
                _run_pycorosync(args, extra_totem)
            else:
                _run_corosync(args, extra_totem)
    except KeyboardInterrupt:
        print("bench/cpg.py: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
