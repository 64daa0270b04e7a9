"""Supervisor: how fast a child's death is seen and the child is back, and what an idle supervisor costs.

Prints one JSON object per line:
  detect_pidfd   kill -9 -> ChildWatch on_exit (pidfd + epoll), ms
  detect_waitpid kill -9 -> blocking os.waitpid returns (the in-run baseline), ms
  restart_ready  kill -9 -> the restarted child's ready byte (bare python child), ms
  idle_cpu       supervisor CPU % over a window with 3 idle children
"""

from __future__ import annotations

import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import time

from pycorosync.engine.supervisor.loop import EventLoop
from pycorosync.engine.supervisor.node import NodePlan, NodeSupervisor
from pycorosync.engine.supervisor.policy import RestartPolicy
from pycorosync.engine.supervisor.process import ChildSpec
from pycorosync.engine.supervisor.watch import ChildWatch

ROUNDS = 15
READY_SCRIPT = "import os, signal; os.write(int(os.environ['PYCOROSYNC_READY_FD']), b'R'); signal.pause()"


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def summary(name: str, samples_ms: list[float]) -> None:
    emit(
        metric=name,
        unit="ms",
        n=len(samples_ms),
        median=round(statistics.median(samples_ms), 3),
        min=round(min(samples_ms), 3),
        max=round(max(samples_ms), 3),
    )


def detect_pidfd() -> list[float]:
    loop = EventLoop()
    seen: dict[str, float] = {}
    watch = ChildWatch(loop, on_exit=lambda c, s: seen.__setitem__("t", time.perf_counter()), forward_stderr_fd=None)
    out = []
    try:
        for _ in range(ROUNDS):
            child = watch.spawn(ChildSpec("sleeper", ("sleep", "60"), wait_ready=False))
            seen.clear()
            t0 = time.perf_counter()
            os.kill(child.pid, signal.SIGKILL)
            loop.run_until(lambda: "t" in seen, 5.0)
            out.append((seen["t"] - t0) * 1000)
    finally:
        watch.kill_all()
        loop.close()
    return out


def detect_waitpid() -> list[float]:
    out = []
    for _ in range(ROUNDS):
        proc = subprocess.Popen(["sleep", "60"])
        t0 = time.perf_counter()
        os.kill(proc.pid, signal.SIGKILL)
        os.waitpid(proc.pid, 0)
        out.append((time.perf_counter() - t0) * 1000)
        proc.returncode = -9
    return out


def restart_ready() -> list[float]:
    policy = RestartPolicy(max_restarts=ROUNDS + 1, window_s=3600, backoff_initial_s=0.0, backoff_max_s=0.0)
    sup = NodeSupervisor(
        NodePlan((ChildSpec("svc", (sys.executable, "-c", READY_SCRIPT)),), restart_policy=policy, sample_interval_s=0),
        forward_stderr_fd=None,
    )
    out = []
    try:
        sup.start()
        for i in range(ROUNDS):
            t0 = time.perf_counter()
            os.kill(sup.pids()["svc"], signal.SIGKILL)
            sup.run(until=lambda i=i: sup.restarts("svc") == i + 1 and sup.child("svc").ready, timeout_s=10.0)  # type: ignore[misc]
            out.append((time.perf_counter() - t0) * 1000)
    finally:
        sup.stop()
        sup.close()
    return out


def idle_cpu(window_s: float = 3.0) -> float:
    specs = tuple(ChildSpec(f"c{i}", (sys.executable, "-c", READY_SCRIPT)) for i in range(3))
    sup = NodeSupervisor(NodePlan(specs, sample_interval_s=1.0), forward_stderr_fd=None)
    try:
        sup.start()
        c0, t0 = time.process_time(), time.monotonic()
        sup.run(timeout_s=window_s)
        return 100.0 * (time.process_time() - c0) / (time.monotonic() - t0)
    finally:
        sup.stop()
        sup.close()


def main() -> None:
    logging.getLogger("MAIN").setLevel(logging.CRITICAL + 1)  # the restarts are the point, not news
    base = detect_waitpid()
    summary("detect_waitpid", base)
    pidfd = detect_pidfd()
    summary("detect_pidfd", pidfd)
    emit(metric="detect_pidfd_vs_waitpid", ratio=round(statistics.median(pidfd) / statistics.median(base), 2))
    summary("restart_ready", restart_ready())
    emit(metric="idle_cpu", unit="percent", value=round(idle_cpu(), 3), children=3, sample_hz=1)


if __name__ == "__main__":
    main()
