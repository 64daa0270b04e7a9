"""Stand-in node processes and a node launcher for the supervisor tests.

    python -m tests.unit.supervisor_standin child --name A --events FILE [--ready-delay S] [--no-ready]
        [--exit-after S --exit-code N] [--ignore-term] [--stderr TEXT]
    python -m tests.unit.supervisor_standin node --plan JSON --run-dir DIR [--background]

A child appends ``<event> <name> <pid> <restart_count>`` lines (start, ready, term) to the events file,
with one O_APPEND write each, so that the order across processes is the order of the writes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from pycorosync.engine.supervisor import child


def _event(path: str, what: str, name: str) -> None:
    line = f"{what} {name} {os.getpid()} {child.restart_count()}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def run_child(args: argparse.Namespace) -> int:
    child.die_with_supervisor(signal.SIGKILL)  # a test must never leave one behind
    _event(args.events, "start", args.name)

    def on_term(_signum: int, _frame: object) -> None:
        _event(args.events, "term", args.name)
        os._exit(0)

    signal.signal(signal.SIGTERM, signal.SIG_IGN if args.ignore_term else on_term)
    if args.stderr:
        sys.stderr.write(args.stderr + "\n")
        sys.stderr.flush()
    if args.ready_delay:
        time.sleep(args.ready_delay)  # stands for the time a real process takes to get ready
    if args.exit_after is not None and args.exit_before_ready:
        time.sleep(args.exit_after)
        return int(args.exit_code)
    if not args.no_ready:
        _event(args.events, "ready", args.name)
        child.notify_ready()
    if args.exit_after is not None:
        time.sleep(args.exit_after)
        return int(args.exit_code)
    while True:
        signal.pause()


def child_argv(name: str, events: Path, *extra: str) -> tuple[str, ...]:
    """argv of a stand-in child (for ChildSpec)."""
    return (sys.executable, "-m", "tests.unit.supervisor_standin", "child", "--name", name, "--events", str(events), *extra)


def plan_from_json(text: str) -> tuple[object, dict[str, object]]:
    from pycorosync.engine.supervisor.node import NodePlan
    from pycorosync.engine.supervisor.policy import RestartPolicy
    from pycorosync.engine.supervisor.process import ChildSpec, RestartRule

    raw = json.loads(text)
    specs = tuple(
        ChildSpec(
            c["name"],
            tuple(c["argv"]),
            restart=RestartRule(c.get("restart", "in-place")),
            depends_on=tuple(c.get("depends_on", ())),
            ready_timeout_s=float(c.get("ready_timeout_s", 10.0)),
            stop_timeout_s=float(c.get("stop_timeout_s", 5.0)),
            cwd=c.get("cwd"),
        )
        for c in raw["children"]
    )
    plan = NodePlan(
        specs,
        shm_prefix=raw.get("shm_prefix"),
        restart_policy=RestartPolicy(**raw.get("policy", {})),
        sample_interval_s=float(raw.get("sample_interval_s", 1.0)),
    )
    return plan, dict(raw.get("log_keys", {"logging.to_syslog": "no"}))


def run_node_cmd(args: argparse.Namespace) -> int:
    from pycorosync.engine.supervisor.daemon import daemonize, run_node
    from pycorosync.engine.supervisor.node import NodePlan

    plan, keys = plan_from_json(Path(args.plan).read_text())
    assert isinstance(plan, NodePlan)
    run_dir = Path(args.run_dir)

    def body(report: object) -> int:
        return run_node(plan, run_dir=run_dir, log_keys=keys, report=report)  # type: ignore[arg-type]

    if args.background:
        return daemonize(body)

    def report(error: str | None) -> None:
        if error is not None:
            print(f"pycorosync daemon: {error}", file=sys.stderr, flush=True)

    return body(report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("child")
    c.add_argument("--name", required=True)
    c.add_argument("--events", required=True)
    c.add_argument("--ready-delay", type=float, default=0.0)
    c.add_argument("--no-ready", action="store_true")
    c.add_argument("--exit-after", type=float, default=None)
    c.add_argument("--exit-before-ready", action="store_true")
    c.add_argument("--exit-code", type=int, default=0)
    c.add_argument("--ignore-term", action="store_true")
    c.add_argument("--stderr", default="")
    n = sub.add_parser("node")
    n.add_argument("--plan", required=True)
    n.add_argument("--run-dir", required=True)
    n.add_argument("--background", action="store_true")
    args = parser.parse_args(argv)
    return run_child(args) if args.mode == "child" else run_node_cmd(args)


if __name__ == "__main__":
    sys.exit(main())
