"""``pycorosync daemon -c FILE [-f] [--nodeid N]``: run this node's processes, like ``corosync [-f]``."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = "/etc/corosync/corosync.conf"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("daemon", help="run the node (like corosync); background unless -f")
    p.add_argument("-c", "--config", metavar="FILE", default=DEFAULT_CONFIG, help=f"corosync.conf (default {DEFAULT_CONFIG})")
    p.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    p.add_argument("--nodeid", type=int, default=None, help="this node's id (default: found from the nodelist)")
    p.set_defaults(func=_run)


def _fail(text: str) -> int:
    print(f"pycorosync daemon: {text}", file=sys.stderr)
    return 1


def _plain(value: object) -> object:
    return value[1] if isinstance(value, tuple) and len(value) == 2 else value


def _run(args: argparse.Namespace) -> int:
    try:
        config_mod = importlib.import_module("pycorosync.engine.config")
        load = config_mod.load
    except (ImportError, AttributeError):
        return _fail("the corosync.conf parser (pycorosync.engine.config.load) is not part of this build yet")
    config_path = Path(args.config)
    try:
        config = load(config_path)
    except OSError as exc:
        return _fail(f"cannot read {config_path}: {exc.strerror or exc}")
    except Exception as exc:  # the parser's errors say file:line and what is wrong
        return _fail(str(exc))

    from pycorosync.engine.supervisor import logsetup
    from pycorosync.engine.supervisor.daemon import daemonize, run_node
    from pycorosync.paths import resolve_run_dir

    try:
        local = config.local_node(args.nodeid)  # corosync's rules: nodeid, else host name / local addresses
    except Exception as exc:  # ConfigError: "No valid name found for local host", "nodeid N is not in the nodelist"
        return _fail(f"{exc}; pass --nodeid N to say which node this is")
    nodeid = int(local.nodeid)
    keys = {k: _plain(v) for k, v in config.all_keys(local).items()}
    run_dir = resolve_run_dir(args.run_dir, config.run_dir)
    try:
        logsetup.configure(keys)  # before anything logs, so every line has the configured layout
    except ValueError as exc:
        return _fail(f"{config_path}: {exc}")
    from pycorosync.engine.runtime.node import build_node
    from pycorosync.engine.supervisor.sched import Scheduling

    try:
        scheduling = Scheduling.from_keys(keys)
    except ValueError as exc:
        return _fail(f"{config_path}: {exc}")

    try:
        plan, resources = build_node(config_path, nodeid, run_dir, keys)
    except (OSError, ValueError) as exc:
        return _fail(f"{config_path}: {exc}")

    def body(report: Any) -> int:
        try:
            return run_node(plan, run_dir=run_dir, log_keys=keys, report=report, config_path=str(config_path),
                            scheduling=scheduling)
        finally:
            resources.close()

    if args.foreground:
        return body(lambda error: error is not None and _fail(error))
    return daemonize(body)
