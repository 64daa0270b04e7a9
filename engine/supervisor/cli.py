"""``pycorosync daemon -c FILE [-f] [-t] [-v] [--nodeid N]``: run this node's processes, like ``corosync [-f]``;
``-t`` checks the configuration as a start would and exits, ``-v`` shows the version (as corosync's)."""

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
    p.add_argument("-t", "--test", action="store_true",
                   help="test the configuration (as a start would check it, nothing started) and then exit")
    p.add_argument("-v", "--version", action="store_true", help="display the version and features and exit")
    p.add_argument("--nodeid", type=int, default=None, help="this node's id (default: found from the nodelist)")
    p.set_defaults(func=_run)


def _fail(text: str) -> int:
    print(f"pycorosync daemon: {text}", file=sys.stderr)
    return 1


def _plain(value: object) -> object:
    return value[1] if isinstance(value, tuple) and len(value) == 2 else value


def _version() -> int:
    from pycorosync import __version__
    from pycorosync.engine.runtime.node import TRANSPORT_MODULES

    print(f"pycorosync Cluster Engine, version '{__version__}' (the Corosync Cluster Engine's semantics, in Python)")
    print("Built-in features: cpg cmap quorum votequorum cfg sam monitoring vqsim")
    print(f"Available transports: {' '.join(sorted(TRANSPORT_MODULES))}")
    from pycorosync.transports.crypto import CIPHER_KEY_BYTES, HASH_BYTES

    print(f"Available crypto models: {' '.join(c for c in CIPHER_KEY_BYTES if c != 'none')} (AES-GCM, OpenSSL); "
          f"hashes {' '.join(h for h in HASH_BYTES if h != 'none')}")
    return 0


def _test(config: Any, config_path: Path, nodeid: int, keys: dict[str, object]) -> int:
    """``corosync -t``: every check a start makes of the configuration, without starting anything."""
    from pycorosync.engine.runtime.node import TRANSPORT_MODULES
    from pycorosync.engine.supervisor.logsetup import LoggingConfig
    from pycorosync.engine.supervisor.sched import Scheduling
    from pycorosync.engine.totem.config import TotemConfig
    from pycorosync.transports.udp.plan import plan_from_config

    transport = str(keys.get("totem.transport") or "udpu")
    try:
        if transport not in TRANSPORT_MODULES:
            raise ValueError(f"totem.transport '{transport}' is not supported by this build "
                             f"({', '.join(sorted(TRANSPORT_MODULES))})")
        LoggingConfig.from_keys(keys)
        Scheduling.from_keys(keys)
        TotemConfig.from_keys(keys)
        plan_from_config(config, nodeid)  # addresses resolved, the authkey read when crypto is on
    except OSError as exc:
        return _fail(f"{config_path}: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
    except Exception as exc:  # ValueError / ConfigError / AddressError: each says what and where
        return _fail(f"{config_path}: {exc}")
    print(f"{config_path}: configuration is valid (node {nodeid}, cluster "
          f"'{keys.get('totem.cluster_name') or 'cluster'}', transport {transport})")
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.version:
        return _version()
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
    if args.test:
        return _test(config, config_path, nodeid, keys)
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
