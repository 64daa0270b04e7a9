"""The ``pycorosync`` command line: one subcommand per tool.

Each tool lives in its own module with ``register(subparsers)``; the module must import
nothing heavy (numba, numpy) at top level so that ``pycorosync --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from pycorosync import __version__

# subcommand modules, in the order --help lists them
# (a module not present yet is skipped, so the list can name tools still being built)
COMMAND_MODULES: list[str] = [
    "pycorosync.engine.supervisor.cli",  # daemon
    "pycorosync.demo",  # demo
    "pycorosync.engine.config.cli",  # config
    "pycorosync.services.cfg.cfgtool",  # cfgtool
    "pycorosync.services.cmap.cmapctl",  # cmapctl
    "pycorosync.services.quorum.quorumtool",  # quorumtool
    "pycorosync.services.quorum.vqsim",  # vqsim
    "pycorosync.services.cpg.cpgtool",  # cpgtool
    "pycorosync.transports.keygen",  # keygen
    "pycorosync.services.sam.cli",  # sam
    "pycorosync.monitoring.status",  # status
    "pycorosync.warm",  # warm-cache
]

#: commands that send a few requests and exit (or refresh a view now and then): their connections use plain
#: Python rings, so they never import numba nor load its kernels (about half a second per run)
PLAIN_RING_COMMANDS = frozenset({"cfgtool", "cmapctl", "quorumtool", "cpgtool", "status", "sam"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pycorosync", description="Corosync-compatible cluster engine in Python")
    parser.add_argument("--version", action="version", version=f"pycorosync {__version__}")
    parser.add_argument(
        "--run-dir",
        metavar="DIR",
        default=None,
        help="node run directory (sockets, pid file); default: $PYCOROSYNC_RUN_DIR, system.run_dir, /run/pycorosync",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # tool not built yet in this tree
            raise
        mod.register(sub)
    for name, command in sub.choices.items():
        command.set_defaults(plain_rings_=name in PLAIN_RING_COMMANDS)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(name)s] %(message)s", stream=sys.stderr)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    plain = bool(getattr(args, "plain_rings_", False))
    compiled_before = None
    if plain:
        from pycorosync.ipc.client import use_compiled_rings

        compiled_before = use_compiled_rings(False)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    finally:
        if plain:  # main() called in-process (tests, embedding): leave it as found
            use_compiled_rings(compiled_before)


if __name__ == "__main__":
    sys.exit(main())
