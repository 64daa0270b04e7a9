"""``pycorosync config -c FILE``: validate corosync.conf and print its cmap keys as corosync-cmapctl would."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register", "run"]

DEFAULT_CONFIG = "/etc/corosync/corosync.conf"


def register(subparsers: Any) -> None:
    """Add the ``config`` subcommand."""
    parser = subparsers.add_parser(
        "config",
        help="check corosync.conf and print its keys (cmapctl dump format)",
        description="Parse and validate corosync.conf; print every key (file keys, derived runtime.config.totem.*) "
        "sorted, as 'key (type) = value'. Exit status 1 and the error on stderr if the file is refused.",
    )
    parser.add_argument("-c", "--config", metavar="FILE", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    parser.add_argument(
        "--nodeid", type=int, default=None, help="the local node (default: match host name / local addresses)"
    )
    parser.add_argument("-b", dest="show_binary", action="store_true", help="show binary values")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler: 0 with the dump on stdout, 1 with the error on stderr."""
    from .errors import ConfigError
    from .model import load
    from .types import format_entry

    try:
        config = load(args.config)
        local = None
        if args.nodeid is not None:
            local = config.local_node(args.nodeid)
        else:
            try:
                local = config.local_node(resolve=False)
            except ConfigError:
                local = None  # not one of the nodes: the local-only keys are left out
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(f"warning: {config.filename}: {warning}", file=sys.stderr)
    lines = [
        format_entry(key, vtype, value, args.show_binary) for key, (vtype, value) in config.all_keys(local).items()
    ]
    # values keep undecodable bytes of the file as surrogates: write them back as the same bytes
    sys.stdout.flush()
    sys.stdout.buffer.write("".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape"))
    sys.stdout.buffer.flush()
    return 0
