"""A supervisor stand-in with the state a real one has, and the child it forks, for tests/unit/test_forkstart.py.

    python -m tests.unit.forkstart_probe parent --out DIR [--exec] [--child-exit N|raise|kill]
    python -m tests.unit.forkstart_probe child --out DIR --exit N|raise|kill

The parent holds what a supervisor holds when it forks: an open file, a socket, a signal wakeup fd, a
SIGTERM and a SIGHUP handler, a blocked SIGUSR1, a logging handler on a file. It starts the child
through ``ChildProcess.spawn`` (forked, or exec'd with ``--exec``), waits for its end on the pidfd, and
writes ``parent.json``: the child's pid, exit status and stderr tail, and the fd numbers it had open.
The child writes ``child.json``: what it sees of its process state, then ends as ``--exit`` says.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import socket
import sys
from pathlib import Path


def _fd_targets() -> dict[int, str]:
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
    return out


def run_child(args: argparse.Namespace) -> int:
    out = Path(args.out)
    previous_wakeup = signal.set_wakeup_fd(-1)
    report = {
        "name": __name__,
        "argv": sys.argv,
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "pgid": os.getpgid(0),
        "env": os.environ.get("PROBE_VALUE"),
        "parent_only_env": os.environ.get("PROBE_PARENT_ONLY"),
        "fds": _fd_targets(),
        "sigterm": repr(signal.getsignal(signal.SIGTERM)),
        "sighup": repr(signal.getsignal(signal.SIGHUP)),
        "sigint_default": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
        "blocked": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, ())),
        "wakeup_fd": previous_wakeup,
        "root_handlers": len(logging.getLogger().handlers),
        "comm": Path("/proc/self/comm").read_text().strip(),
        "cwd": os.getcwd(),
    }
    (out / "child.json").write_text(json.dumps(report))
    sys.stderr.write("probe child says goodbye\n")
    sys.stderr.flush()
    if args.exit == "raise":
        raise RuntimeError("probe child failed on purpose")
    if args.exit == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    return int(args.exit)


def run_parent(args: argparse.Namespace) -> int:
    from pycorosync.engine.supervisor import forkstart
    from pycorosync.engine.supervisor.process import ChildProcess, ChildSpec

    out = Path(args.out)
    held_file = open(out / "held-by-parent", "w")  # noqa: SIM115 - held open on purpose
    held_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wake_r, wake_w = socket.socketpair()
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    logging.getLogger().addHandler(logging.FileHandler(out / "parent.log"))
    _passed_r, passed_w = os.pipe2(os.O_CLOEXEC)
    if not args.exec:
        forkstart.preload((), kernels=False)
    argv = (sys.executable, "-m", "tests.unit.forkstart_probe", "child", "--out", str(out), "--exit", args.child_exit)
    spec = ChildSpec("probe", argv, env={"PROBE_VALUE": "from-spec", "PYCOROSYNC_CHILD_NAME": "probe",
                                                 "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
                     wait_ready=False, pass_fds=(passed_w,), cwd=str(out), fork=True)
    os.environ["PROBE_PARENT_ONLY"] = "x"
    child = ChildProcess.spawn(spec)
    os.environ.pop("PROBE_PARENT_ONLY")
    poller = select.poll()
    poller.register(child.pidfd, select.POLLIN)
    if not poller.poll(20_000):
        child.send_signal(signal.SIGKILL)
        poller.poll(5_000)
    while child.read_stderr(None):
        pass
    status = child.reap()
    report = {
        "child_pid": child.pid,
        "returncode": None if status is None else status.returncode,
        "stderr": list(child.stderr_tail),
        "parent_fds": {"file": held_file.fileno(), "socket": held_sock.fileno(), "wakeup": wake_w.fileno(),
                       "wakeup_peer": wake_r.fileno(), "passed": passed_w},
    }
    (out / "parent.json").write_text(json.dumps(report))
    child.close()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(prog="forkstart_probe")
    sub = p.add_subparsers(dest="role", required=True)
    c = sub.add_parser("child")
    c.add_argument("--out", required=True)
    c.add_argument("--exit", default="0")
    q = sub.add_parser("parent")
    q.add_argument("--out", required=True)
    q.add_argument("--exec", action="store_true")
    q.add_argument("--child-exit", default="0")
    args = p.parse_args()
    return run_child(args) if args.role == "child" else run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
