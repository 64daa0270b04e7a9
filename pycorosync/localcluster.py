"""Real clusters on loopback: N ``pycorosync daemon -f`` processes, each with its own config, run dir and
address (127.0.0.<nodeid>), one free UDP port per cluster. Works as a non-root user (loopback addresses
need no setup on Linux). Used by ``pycorosync demo`` and bench/cpg.py.

    cluster = Cluster(base_dir, 3, totem={"token": 1000})
    cluster.start(); cluster.wait_ring()       # every node in one synchronized ring
    cluster.nodes[3].kill()                    # SIGKILL of every process of node 3 (a crash)
    cluster.nodes[3].start(); cluster.wait_ring()
    cluster.stop()                             # SIGTERM, SIGKILL after a deadline, /dev/shm/pcs-<name>-* removed

``Node``: ``start()``, ``stop(timeout)``, ``kill()``, ``kill_child(name)``, ``child_pid(name)``, ``pids()``,
``status()`` (totem.status.json), ``connect(service)``, ``alive``, ``run_dir``, ``log_path``.

``system={"sched_rr": "yes"}`` writes keys into the ``system`` section (default ``sched_rr: no``, so the
nodes run ``SCHED_BATCH``).

Other networks (tests/netns): ``Cluster(..., addresses={1: "10.99.0.1", ...}, launcher=lambda nodeid: [...],
port=5405)`` gives each node its own ring0 address and runs its daemon under a command prefix such as
``ip netns exec <ns>`` (which execs, so the daemon keeps the pid the launcher started).

A cmap service alone, without a node (tests, bench/cmap.py, bench/tools.py)::

    with cmap_service(workdir, conf_text) as (run_dir, config_path): ...
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from pycorosync.engine.supervisor.node import REGISTRY_NAME, read_registry

if TYPE_CHECKING:
    from pycorosync.ipc.client import Connection

SHM_DIR = Path("/dev/shm")
DEFAULT_TOTEM = {"token": 400, "token_coefficient": 0, "join": 50}
#: corosync's default is ``sched_rr: yes``; a local cluster shares its cores with the programs that drive it
#: (tests, the demo's clients, bench/cpg.py), which realtime nodes could starve, so it asks for ordinary
#: scheduling unless told otherwise (``SCHED_BATCH``: ``system.sched_batch`` keeps its default, yes)
DEFAULT_SYSTEM: dict[str, object] = {"sched_rr": "no"}
START_TIMEOUT_S = 60.0
_counter = itertools.count(1)

CONFIG_TEMPLATE = """totem {{
    version: 2
    cluster_name: {cluster}
    transport: udpu
    crypto_cipher: none
    crypto_hash: none
{totem}
    interface {{
        mcastport: {port}
    }}
}}
nodelist {{
{nodes}
}}
logging {{
    to_stderr: yes
    to_syslog: no
    timestamp: hires
}}
system {{
{system}
}}
{extra}
"""



def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it does not go; always reaps."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


@contextlib.contextmanager
def cmap_service(workdir: Path, conf_text: str, nodeid: int = 1,
                 env: Mapping[str, str] | None = None) -> Iterator[tuple[Path, Path]]:
    """Runs ``python -m pycorosync.services.cmap.server`` alone on ``workdir/corosync.conf``; yields (run_dir,
    config path) once it serves, and stops it at the end. Its log goes to ``workdir/cmap.log`` (quoted in
    the RuntimeError when it does not start within ``START_TIMEOUT_S``)."""
    conf = workdir / "corosync.conf"
    conf.write_text(conf_text)
    run_dir = workdir / "run"
    log_path = workdir / "cmap.log"
    ready_r, ready_w = os.pipe()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pycorosync.services.cmap.server", "-c", str(conf), "--run-dir", str(run_dir),
             "--nodeid", str(nodeid), "--ready-fd", str(ready_w)],
            pass_fds=[ready_w], stderr=log, env=None if env is None else {**os.environ, **env},
        )
    os.close(ready_w)
    try:
        ready, _, _ = select.select([ready_r], [], [], START_TIMEOUT_S)
        if not ready or os.read(ready_r, 1) != b"R":
            stop_process(proc)
            raise RuntimeError(f"cmap service did not start within {START_TIMEOUT_S}s: "
                               f"{log_path.read_text(errors='replace')[-2000:]}")
        yield run_dir, conf
    finally:
        os.close(ready_r)
        stop_process(proc)

def _free_port(addresses: Iterable[str]) -> int:
    """A UDP port free on every address (random, so that concurrent test runs do not collide)."""
    import random

    rng = random.Random(os.getpid() * 7919 + time.monotonic_ns())
    for _ in range(200):
        port = rng.randrange(20000, 60000)
        socks = []
        try:
            for addr in addresses:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((addr, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free UDP port found for the cluster")


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of ``pid`` in ns (schedstat: exact, where /proc/<pid>/stat counts 10 ms ticks);
    0 for a process that is gone."""
    total = 0
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError), open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    return total


def wait_for(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Polls ``cond()`` until truthy (returns its value) or raises AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class Node:
    """One daemon of a local cluster (see the module docstring)."""

    def __init__(self, cluster: Cluster, nodeid: int, base: Path, env: Mapping[str, str]) -> None:
        self.cluster = cluster
        self.nodeid = nodeid
        self.dir = base / f"n{nodeid}"
        self.run_dir = self.dir / "run"
        self.config_path = self.dir / "corosync.conf"
        self.log_path = self.dir / "daemon.log"
        self.env = dict(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self._known_pids: set[int] = set()
        self._term_sent = False
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def address(self) -> str:
        return self.cluster.address_of(self.nodeid)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Starts the daemon in the foreground (returns at once; wait with ``Cluster.wait_ring``)."""
        assert not self.alive, f"node {self.nodeid} is already running"
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir / "totem.status.json").unlink()
        env = {**os.environ, **self.env}
        if self.cluster.test_services:
            env["PYCOROSYNC_TEST_SERVICES"] = ",".join(self.cluster.test_services)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                [*self.cluster.launcher(self.nodeid), sys.executable, "-m", "pycorosync", "--run-dir",
                 str(self.run_dir), "daemon", "-c", str(self.config_path), "-f", "--nodeid", str(self.nodeid)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True)
        finally:
            log.close()
        self._known_pids.add(self.proc.pid)
        self._term_sent = False

    def pids(self) -> dict[str, int]:
        """Pids of the node's processes now: ``supervisor`` and each child by its plan name."""
        out: dict[str, int] = {}
        if not self.alive or self.proc is None:
            return out
        out["supervisor"] = self.proc.pid
        registry = read_registry(self.run_dir / REGISTRY_NAME)
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self._known_pids.add(child.pid)  # any descendant (e.g. a cache warm-up) is reaped at stop
                if child.pid in registry:  # a forked child: its environment is the supervisor's
                    out[registry[child.pid][0]] = child.pid
                    continue
                with contextlib.suppress(psutil.Error):
                    name = child.environ().get("PYCOROSYNC_CHILD_NAME")
                    if name:
                        out[name] = child.pid
        return out

    def child_pid(self, name: str) -> int | None:
        return self.pids().get(name)

    def kill_child(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Sends ``sig`` to one child process (default SIGKILL); returns its pid."""
        pid = self.child_pid(name)
        assert pid is not None, f"node {self.nodeid} has no '{name}' process"
        os.kill(pid, sig)
        return pid

    def status(self) -> dict[str, Any] | None:
        """The totem process's ``totem.status.json`` (None while there is none)."""
        try:
            value = json.loads((self.run_dir / "totem.status.json").read_text())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def connect(self, service: str, timeout: float = 5.0) -> Connection:
        """An IPC connection to one of the node's services."""
        from pycorosync.ipc.client import connect

        return connect(self.run_dir, service, timeout=timeout)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM to the daemon (it stops its children in reverse order); SIGKILL after ``timeout``."""
        if self.proc is None:
            return None
        self.pids()
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap_strays()
        return self.proc.returncode

    def terminate(self) -> None:
        """Sends SIGTERM once per start (a second one could reach the daemon after it restored the default
        action while shutting down)."""
        if self.proc is not None and self.proc.poll() is None and not self._term_sent:
            self._term_sent = True
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL of every process of the node, children first (a crash of the whole node)."""
        pids = self.pids()
        for name, pid in pids.items():
            if name != "supervisor":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self._reap_strays()

    def _reap_strays(self) -> None:
        """Kills any process this node ever had that is still alive (children outlive a killed supervisor)."""
        for pid in list(self._known_pids):
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    p.kill()
                    p.wait(10)
        self._known_pids = {self.proc.pid} if self.proc is not None and self.proc.poll() is None else set()


class Cluster:
    """N nodes on loopback with a shared config shape (see the module docstring)."""

    def __init__(self, base: Path, n: int, *, totem: Mapping[str, object] | None = None,
                 env: Mapping[int, Mapping[str, str]] | None = None, test_services: Iterable[str] = ("testecho",),
                 extra_config: str = "", name_prefix: str = "t", addresses: Mapping[int, str] | None = None,
                 launcher: Callable[[int], Sequence[str]] | None = None, port: int | None = None,
                 system: Mapping[str, object] | None = None) -> None:
        self.name = f"{name_prefix}{os.getpid()}x{next(_counter)}"
        self.base = base / self.name
        self.test_services = tuple(test_services)
        self.totem = {**DEFAULT_TOTEM, **(totem or {})}
        self.system = {**DEFAULT_SYSTEM, **(system or {})}
        ids = list(range(1, n + 1))
        self.addresses = {i: (addresses or {}).get(i, f"127.0.0.{i}") for i in ids}
        self.launcher: Callable[[int], Sequence[str]] = launcher or (lambda _nodeid: ())
        self.port = port if port is not None else _free_port(self.addresses.values())
        self.nodes = {i: Node(self, i, self.base, (env or {}).get(i, {})) for i in ids}
        text = CONFIG_TEMPLATE.format(
            cluster=self.name, port=self.port, extra=extra_config,
            totem="\n".join(f"    {k}: {v}" for k, v in self.totem.items()),
            system="\n".join(f"    {k}: {v}" for k, v in self.system.items()),
            nodes="\n".join(f"    node {{\n        ring0_addr: {self.addresses[i]}\n        nodeid: {i}\n    }}" for i in ids),
        )
        for node in self.nodes.values():
            node.config_path.write_text(text)

    def address_of(self, nodeid: int) -> str:
        return self.addresses[nodeid]

    @property
    def token_ms(self) -> int:
        return int(str(self.totem["token"]))

    @property
    def consensus_ms(self) -> int:
        return int(str(self.totem.get("consensus", int(1.2 * self.token_ms))))

    def start(self, ids: Iterable[int] | None = None) -> None:
        for i in ids or self.nodes:
            self.nodes[i].start()

    def ring_of(self, ids: Iterable[int]) -> list[int] | None:
        """The ring id shared, synchronized, by exactly ``ids`` (each of them in it), else None."""
        want = sorted(ids)
        rings = set()
        for i in want:
            st = self.nodes[i].status()
            if not st or st.get("members") != want or st.get("sync_completed") != st.get("ring_id"):
                return None
            rings.add(tuple(st["ring_id"]))
        return list(rings.pop()) if len(rings) == 1 else None

    def wait_ring(self, ids: Iterable[int] | None = None, timeout: float = START_TIMEOUT_S) -> list[int]:
        """Waits until the given nodes (default: all) form one synchronized ring of exactly them."""
        want = sorted(ids or self.nodes)
        dead = [i for i in want if not self.nodes[i].alive]
        assert not dead, f"nodes {dead} are not running\n{self.logs(dead)}"
        try:
            return list(wait_for(lambda: self.ring_of(want), timeout, f"one ring of nodes {want}"))
        except AssertionError as exc:
            statuses = {i: self.nodes[i].status() for i in want}
            raise AssertionError(f"{exc}; statuses {statuses}\n{self.logs(want)}") from None

    def logs(self, ids: Iterable[int] | None = None, tail: int = 40) -> str:
        parts = []
        for i in ids or self.nodes:
            with contextlib.suppress(OSError):
                lines = self.nodes[i].log_path.read_text(errors="replace").splitlines()[-tail:]
                parts.append(f"--- node {i} ---\n" + "\n".join(lines))
        return "\n".join(parts)

    def _sweep_strays(self) -> None:
        """Kills any process still running for this cluster that no node knew of: e.g. a child a
        supervisor restarted in the instant between a test's SIGKILL of its children and of itself,
        which would otherwise live on and create its segments again after they were removed."""
        marker = f"pcs-{self.name}-"
        base = f"{self.base}{os.sep}"  # in a supervisor's command line, which its forked children share
        strays = []
        for proc in psutil.process_iter(["pid"]):
            if proc.pid == os.getpid():
                continue
            with contextlib.suppress(psutil.Error):
                if marker in proc.environ().get("PYCOROSYNC_NODE", "") or any(base in a for a in proc.cmdline()):
                    proc.kill()
                    strays.append(proc)
        psutil.wait_procs(strays, timeout=10)

    def stop(self) -> None:
        """Stops every node (SIGTERM all at once, then wait) and removes the cluster's segments."""
        for node in self.nodes.values():
            node.pids()
            node.terminate()
        for node in self.nodes.values():
            node.stop()
        self._sweep_strays()
        for path in SHM_DIR.glob(f"pcs-{self.name}-*"):
            with contextlib.suppress(OSError):
                path.unlink()
