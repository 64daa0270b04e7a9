"""SAM restart latency: a killed child is ready again how long after the kill, against a bare start of the same child.

    .venv/bin/python bench/sam.py [--rounds 20] [--quick]

Cases (one JSON object per line; medians, p90 and min in ms, measured interleaved in the same run):

- ``baseline_fork_exec``: this process starts the child program (``subprocess.Popen``) and waits for its ready line.
- ``sam_run_restart``: ``pycorosync sam run -- <same child>``; SIGKILL to the child -> its successor's ready line.
- ``baseline_fork``: this process forks; the forked child writes the ready line at once.
- ``library_restart``: an application under ``pycorosync.sam`` (``register()`` forks); SIGKILL to the child -> the
  next instance's ready line, written right after ``register()`` returns in it.

``overhead_ms`` = restart median - its baseline median: what SAM adds (death detection by pidfd, the
decision, the new fork). Target: under 50 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = """\
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY)
os.write(fd, b"ready %d %d\\n" % (os.getpid(), time.monotonic_ns()))
time.sleep(600)
"""

LIBRARY_APP = """\
import os, sys, time
from pycorosync import sam
from pycorosync.engine.supervisor.policy import RestartPolicy
sam.initialize(0, sam.SAM_RECOVERY_POLICY_RESTART,
               restart_policy=RestartPolicy(max_restarts=100000, window_s=60, backoff_initial_s=0))
sam.register()
fd = os.open(sys.argv[1], os.O_WRONLY)
os.write(fd, b"ready %d %d\\n" % (os.getpid(), time.monotonic_ns()))
sam.start()
time.sleep(600)
"""


class ReadyPipe:
    """A fifo the children write ``ready <pid> <monotonic_ns>`` lines to."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self._buf = b""

    def next_ready(self, timeout_s: float = 30.0) -> tuple[int, int]:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no ready line from the child")
            if select.select([self.fd], [], [], left)[0]:
                self._buf += os.read(self.fd, 4096)
        line, self._buf = self._buf.split(b"\n", 1)
        _, pid, stamp = line.split()
        return int(pid), int(stamp)

    def close(self) -> None:
        os.close(self.fd)


def summary(case: str, samples_ns: list[int], **extra: object) -> dict[str, object]:
    ms = sorted(s / 1e6 for s in samples_ns)
    return {
        "bench": "sam",
        "case": case,
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 3),
        "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 3),
        "min_ms": round(ms[0], 3),
        **extra,
    }


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    try:
        import psutil

        kids = psutil.Process(proc.pid).children(recursive=True)
    except Exception:
        kids = []
    for p in [proc, *kids]:
        with contextlib.suppress(OSError):
            os.kill(p.pid, signal.SIGKILL)
    proc.wait(10)


def baseline_fork_exec(pipe: ReadyPipe, child: Path) -> int:
    t0 = time.monotonic_ns()
    proc = subprocess.Popen([sys.executable, str(child), str(pipe.path)])
    _, ready = pipe.next_ready()
    proc.kill()
    proc.wait()
    return ready - t0


def baseline_fork(pipe: ReadyPipe) -> int:
    t0 = time.monotonic_ns()
    pid = os.fork()
    if pid == 0:
        try:
            fd = os.open(pipe.path, os.O_WRONLY)
            os.write(fd, b"ready %d %d\n" % (os.getpid(), time.monotonic_ns()))
        finally:
            os._exit(0)
    _, ready = pipe.next_ready()
    os.waitpid(pid, 0)
    return ready - t0


def restart_once(pipe: ReadyPipe, pid: int) -> tuple[int, int]:
    t0 = time.monotonic_ns()
    os.kill(pid, signal.SIGKILL)
    new_pid, ready = pipe.next_ready()
    return new_pid, ready - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="5 rounds")
    args = parser.parse_args()
    rounds = 5 if args.quick else args.rounds
    with tempfile.TemporaryDirectory(prefix="pycorosync-bench-sam-") as tmp:
        d = Path(tmp)
        child, app = d / "child.py", d / "app.py"
        child.write_text(CHILD)
        app.write_text(LIBRARY_APP)
        base_pipe, run_pipe, lib_pipe = ReadyPipe(d / "base"), ReadyPipe(d / "run"), ReadyPipe(d / "lib")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        sam_run = subprocess.Popen(
            [sys.executable, "-m", "pycorosync", "sam", "run", "--interval", "0", "--max-restarts", "100000/60",
             "--", sys.executable, str(child), str(run_pipe.path)],
            env=env, stderr=subprocess.DEVNULL, start_new_session=True)
        library = subprocess.Popen([sys.executable, str(app), str(lib_pipe.path)], env=env,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            run_pid, _ = run_pipe.next_ready(60)
            lib_pid, _ = lib_pipe.next_ready(60)
            samples: dict[str, list[int]] = {k: [] for k in ("baseline_fork_exec", "sam_run_restart", "baseline_fork",
                                                             "library_restart")}
            for _ in range(rounds):  # interleaved, so that load changes hit every case alike
                samples["baseline_fork_exec"].append(baseline_fork_exec(base_pipe, child))
                run_pid, ns = restart_once(run_pipe, run_pid)
                samples["sam_run_restart"].append(ns)
                samples["baseline_fork"].append(baseline_fork(base_pipe))
                lib_pid, ns = restart_once(lib_pipe, lib_pid)
                samples["library_restart"].append(ns)
        finally:
            kill_tree(sam_run)
            kill_tree(library)
            for pipe in (base_pipe, run_pipe, lib_pipe):
                pipe.close()
    med = {k: statistics.median(v) / 1e6 for k, v in samples.items()}
    print(json.dumps(summary("baseline_fork_exec", samples["baseline_fork_exec"])))
    print(json.dumps(summary("sam_run_restart", samples["sam_run_restart"],
                             overhead_ms=round(med["sam_run_restart"] - med["baseline_fork_exec"], 3),
                             ratio=round(med["sam_run_restart"] / med["baseline_fork_exec"], 3))))
    print(json.dumps(summary("baseline_fork", samples["baseline_fork"])))
    print(json.dumps(summary("library_restart", samples["library_restart"],
                             overhead_ms=round(med["library_restart"] - med["baseline_fork"], 3),
                             ratio=round(med["library_restart"] / med["baseline_fork"], 3))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
