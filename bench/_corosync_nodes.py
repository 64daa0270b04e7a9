"""Real corosync daemons for the baselines of the benchmarks: N nodes of corosync (udpu) on one machine.

Each node runs in a network namespace of its own (``pycorosync.netlab``, addresses 10.99.0.<id>), because
corosync finds its node in the nodelist by the addresses of the machine, and every 127.x address is local,
and because its clients reach it through abstract unix sockets, which are per network namespace. Each daemon
also gets a private /run (its lock file is /var/run/corosync.pid) and a state_dir of its own.

    nodes = CorosyncNodes(base_dir, 3, totem={"token": 1000, "netmtu": 1500}, sched_rr=True)
    nodes.start()                  # raises CorosyncUnavailable with the reason when it can't run here
    nodes.netns(2)                 # the namespace a client of node 2 must enter (_libcpg.enter_netns)
    nodes.pids()                   # {nodeid: pid of the corosync process}
    nodes.stop()                   # SIGTERM, SIGKILL after a grace period, then the namespaces go

Needs root (namespaces, mounts, corosync's realtime scheduling), ``ip``, ``nft`` and ``corosync``.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

from pycorosync.netlab import LabUnavailable, NetnsLab, check_available


class CorosyncUnavailable(RuntimeError):
    """corosync can't be run here; the text says why."""


def unavailable_reason() -> str | None:
    """Why real corosync nodes can't be started on this machine, or None when they can."""
    if shutil.which("corosync") is None:
        return "no corosync binary installed (Debian: apt-get install corosync)"
    try:
        check_available()
    except LabUnavailable as exc:
        return f"corosync nodes run in network namespaces: {exc}"
    return None


def corosync_conf(n: int, lab: NetnsLab, nodeid: int, state_dir: Path, totem: dict[str, object],
                  sched_rr: bool) -> str:
    """corosync.conf of node ``nodeid``: transport udpu, no crypto, votequorum, log to stderr."""
    totem_lines = "".join(f"    {key}: {value}\n" for key, value in totem.items())
    nodes = "".join(f"    node {{\n        nodeid: {i}\n        name: node{i}\n        ring0_addr: {lab.address(i)}\n    }}\n"
                    for i in range(1, n + 1))
    return (f"totem {{\n    version: 2\n    cluster_name: pcsbench\n    transport: udpu\n    crypto_cipher: none\n"
            f"    crypto_hash: none\n{totem_lines}}}\n"
            f"nodelist {{\n{nodes}}}\n"
            f"quorum {{\n    provider: corosync_votequorum\n}}\n"
            f"logging {{\n    to_stderr: yes\n    to_syslog: no\n    to_logfile: no\n    timestamp: on\n}}\n"
            f"system {{\n    state_dir: {state_dir}\n    sched_rr: {'yes' if sched_rr else 'no'}\n}}\n")


class CorosyncNodes:
    """``n`` real corosync daemons in network namespaces (see the module docstring)."""

    def __init__(self, base_dir: Path, n: int = 3, totem: dict[str, object] | None = None,
                 sched_rr: bool = True) -> None:
        self.base_dir = Path(base_dir)
        self.n = n
        self.totem = dict(totem or {})
        self.sched_rr = sched_rr
        self.lab = NetnsLab(n)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def netns(self, nodeid: int) -> str:
        return self.lab.ns(nodeid)

    def log_path(self, nodeid: int) -> Path:
        return self.base_dir / f"corosync-{nodeid}.log"

    def pids(self) -> dict[int, int]:
        return {nodeid: proc.pid for nodeid, proc in self.procs.items()}

    def start(self) -> None:
        """Builds the namespaces and starts every daemon; on any error stops what it started and raises."""
        reason = unavailable_reason()
        if reason is not None:
            raise CorosyncUnavailable(reason)
        try:
            self.lab.build()
            for nodeid in range(1, self.n + 1):
                state = self.base_dir / f"corosync-state-{nodeid}"
                state.mkdir(parents=True, exist_ok=True)
                conf = self.base_dir / f"corosync-{nodeid}.conf"
                conf.write_text(corosync_conf(self.n, self.lab, nodeid, state, self.totem, self.sched_rr))
                check = subprocess.run([*self.lab.exec_prefix(nodeid), "corosync", "-t", "-c", str(conf)], capture_output=True, text=True,
                                       timeout=30, check=False)
                if check.returncode != 0:
                    raise CorosyncUnavailable(f"corosync -t refused {conf}: {(check.stdout + check.stderr).strip()}")
                # ip netns exec gives the command a mount namespace of its own: the tmpfs on /run (where
                # corosync's lock file lives) stays private to this daemon; exec keeps the pid
                script = f"mount -t tmpfs pcsbench /run && exec corosync -f -c {conf}"
                with open(self.log_path(nodeid), "wb") as log:
                    self.procs[nodeid] = subprocess.Popen([*self.lab.exec_prefix(nodeid), "sh", "-c", script],
                                                          stdout=log, stderr=subprocess.STDOUT,
                                                          stdin=subprocess.DEVNULL)
            self.wait_members(self.n, timeout=60.0)
        except BaseException:
            self.stop()
            raise

    def wait_members(self, count: int, timeout: float) -> None:
        """Until every daemon's log says a membership of ``count`` nodes completed its sync."""
        deadline = time.monotonic() + timeout
        want = f"Members[{count}]:"
        while True:
            pending = []
            for nodeid, proc in self.procs.items():
                if proc.poll() is not None:
                    raise CorosyncUnavailable(f"corosync of node {nodeid} exited with {proc.returncode}:\n"
                                              f"{self.tail(nodeid)}")
                log = self.log_path(nodeid).read_text(errors="replace")
                if want not in log or "Completed service synchronization" not in log.split(want)[-1]:
                    pending.append(nodeid)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise CorosyncUnavailable(f"corosync nodes {pending} did not see {count} members in {timeout} s:\n"
                                          + "\n".join(self.tail(i) for i in pending))
            time.sleep(0.05)

    def tail(self, nodeid: int, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path(nodeid).read_text(errors="replace").splitlines()[-lines:]
            return "\n".join(f"[corosync {nodeid}] {line}" for line in text)
        return f"[corosync {nodeid}] (no log)"

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to every daemon, SIGKILL to those still there after ``grace_s``; then the namespaces."""
        ours = {str(pid) for pid in self.pids().values()}
        try:
            for proc in self.procs.values():
                with contextlib.suppress(OSError):
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            for proc in self.procs.values():
                try:
                    proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(OSError):
                        proc.kill()
                    proc.wait()
        finally:
            self.procs.clear()
            self.lab.destroy()
            # libqb's segments (blackbox, IPC rings) carry the daemon's pid in their name; a daemon that
            # exits cleanly removes them, a killed one does not
            for path in Path("/dev/shm").glob("qb-*"):
                if ours & set(path.name.split("-")):
                    with contextlib.suppress(OSError):
                        path.unlink()
