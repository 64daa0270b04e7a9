"""``pycorosync cmapctl``: corosync-cmapctl's options, outputs and error lines.

    pycorosync cmapctl [-b] [-m icmap|stats|default] [prefix...]    dump keys (all, or under prefixes)
    pycorosync cmapctl -g key... [-q]                                one key per line (-q: value only)
    pycorosync cmapctl -s key type value                             set (bin: value is a file, - = stdin)
    pycorosync cmapctl -d key... | -D prefix...                      delete keys / every key under prefixes
    pycorosync cmapctl -t key... | -T prefix...                      track until "q"
    pycorosync cmapctl -p file                                       lines: [^[^]]key [type value]
    pycorosync cmapctl -C ipc|totem|knet|schedmiss|all               clear statistics
"""

from __future__ import annotations

import argparse
import os
import select
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the client pulls numpy/numba: imported inside the handler only
    from pycorosync.services.cmap.client import CmapClient, CmapTrackEvent

MAPS = {"icmap": 0, "default": 0, "stats": 1}
CLEAR_TARGETS = ("ipc", "totem", "knet", "schedmiss", "all")
USAGE_TYPES = "([i|u][8|16|32|64] | flt | dbl | str | bin)"


class _Usage(Exception):
    """A command-line mistake: corosync-cmapctl's message, exit status 1, before connecting."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds ``cmapctl`` to the ``pycorosync`` command line."""
    p = sub.add_parser(
        "cmapctl",
        help="read and write the configuration and statistics database (corosync-cmapctl)",
        description="Access the cmap database, as corosync-cmapctl does. The last operation given wins.",
    )
    p.add_argument("-b", dest="show_binary", action="store_true", help="show binary values")
    p.add_argument("-m", dest="map", default="default", metavar="MAP", help="map: default, icmap or stats")
    p.add_argument("-q", dest="quiet", action="store_true", help="with -g: print only the value")
    # like getopt in corosync-cmapctl: every operation flag sets the action, the last one wins
    for flag, op, text in (("-g", "get", "get keys"), ("-s", "set", f"set key: key type value, type {USAGE_TYPES}"),
                           ("-d", "delete", "delete keys"), ("-D", "delete_prefix", "delete every key under prefixes"),
                           ("-t", "track", "track keys"), ("-T", "track_prefix", "track prefixes")):
        p.add_argument(flag, dest="op", action="store_const", const=op, help=text)
    p.add_argument("-p", dest="load_file", metavar="FILE", action=_OpWithArg, op="load",
                   help="load operations from FILE: [^[^]]key [type value]")
    p.add_argument("-C", dest="clear", metavar="WHAT", action=_OpWithArg, op="clear",
                   help="clear statistics: knet, totem, ipc, schedmiss or all (implies -m stats)")
    p.add_argument("params", nargs="*", help="keys or prefixes (dump: prefixes)")
    p.set_defaults(func=run, op="dump")


class _OpWithArg(argparse.Action):
    """An option with an argument that is also the operation (``-p FILE``, ``-C WHAT``)."""

    def __init__(self, *args: Any, op: str, **kwargs: Any) -> None:
        self.op = op
        super().__init__(*args, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any, opt: Any = None) -> None:
        setattr(ns, self.dest, values)
        ns.op = self.op


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """The handler: checks the arguments, connects (the stats map for ``-m stats`` and ``-C``), runs one operation."""
    from pycorosync.ipc.errors import CsError
    from pycorosync.paths import resolve_run_dir
    from pycorosync.services.cmap.client import CmapClient

    if args.op == "clear" and args.clear not in CLEAR_TARGETS:
        _err("argument to -C should be 'knet', 'totem', 'ipc', 'schedmiss' or 'all'")
        return 1
    if args.map not in MAPS:
        _err("invalid map name, must be 'default', 'icmap' or 'stats'")
        return 1
    if not args.params and args.op not in ("load", "clear", "dump"):
        _err("Expected key after options")
        return 1
    cmap_map = 1 if args.op == "clear" else MAPS[args.map]
    try:
        client = CmapClient(str(resolve_run_dir(args.run_dir)), cmap_map)
    except CsError as exc:
        _err(f"Failed to initialize the cmap API. Error {exc.name}")
        return 1
    with client:
        try:
            return _dispatch(client, args)
        except CsError as exc:  # the service went away mid-way
            _err(f"Error {exc.name}")
            return 1


def _dispatch(client: CmapClient, args: argparse.Namespace) -> int:
    op = args.op
    if op == "clear":
        return clear_stats(client, args.clear)
    if op == "load":
        return load_file(client, args.load_file, args.show_binary)
    if op == "dump":
        return dump(client, args.params, args.show_binary)
    if op == "get":
        return get_keys(client, args.params, args.quiet, args.show_binary)
    if op == "set":
        if len(args.params) < 3:
            _err("At least 3 parameters are expected for set")
            return 1
        return set_key(client, *args.params[:3])
    if op == "delete":
        return delete_keys(client, args.params)
    if op == "delete_prefix":
        for prefix in args.params:
            delete_prefix(client, prefix)
        return 0
    return track(client, args.params, prefix=op == "track_prefix", show_binary=args.show_binary)


def key_line(key: str, vtype: Any, value: Any, show_binary: bool, quiet: bool = False) -> str:
    """One output line: ``key (type) = value``; quiet drops ``key (`` and the type (corosync keeps
    ``bin)`` for a binary value even then)."""
    from pycorosync.engine.config.types import ValueType, format_entry, format_value

    if not quiet:
        return format_entry(key, vtype, value, show_binary)
    if vtype == ValueType.BINARY:
        return "bin) = " + format_value(vtype, value) if show_binary else "bin)"
    return format_value(vtype, value)


def dump(client: CmapClient, prefixes: list[str], show_binary: bool) -> int:
    """Every key under each prefix (all keys without one), sorted; exit 1 when nothing matched."""
    out = sys.stdout
    empty = 0
    for prefix in prefixes or [""]:
        found = False
        for key, vtype, value in client.iter(prefix):
            found = True
            out.write(key_line(key, vtype, value, show_binary) + "\n")
        empty += not found
    return 1 if empty and empty >= len(prefixes) else 0


def get_keys(client: CmapClient, keys: list[str], quiet: bool, show_binary: bool) -> int:
    """``-g``: one line per key; stops at the first missing key (error line, exit status 1)."""
    from pycorosync.ipc.errors import CsError

    for key in keys:
        try:
            value, vtype = client.get(key)
        except CsError as exc:
            _err(f"Can't get key {key}. Error {exc.name}")
            return 1
        print(key_line(key, vtype, value, show_binary, quiet))
    return 0


def set_key(client: CmapClient, key: str, type_name: str, text: str) -> int:
    """``-s key type value``; a bin value is read from the file ``text`` (``-``: stdin)."""
    from pycorosync.engine.config.types import ValueType, parse_value, type_from_short_name
    from pycorosync.ipc.errors import CsError

    try:
        vtype = type_from_short_name(type_name)
    except ValueError as exc:
        _err(str(exc))
        return 1
    if vtype == ValueType.BINARY:
        try:
            if text == "-":
                value: Any = sys.stdin.buffer.read()
            else:
                with open(text, "rb") as f:
                    value = f.read()
        except OSError as exc:
            _err(f"Can't open input file: {exc.strerror}")
            return 1
    else:
        try:
            value = parse_value(vtype, text)
        except ValueError as exc:
            _err(str(exc))
            return 1
    try:
        client.set(key, value, vtype)
    except CsError as exc:
        _err(f"Failed to set key {key}. Error {exc.name}")
        return 1
    return 0


def delete_keys(client: CmapClient, keys: list[str]) -> int:
    """``-d``: deletes each key; stops at the first failure (exit status 1)."""
    from pycorosync.ipc.errors import CsError

    for key in keys:
        try:
            client.delete(key)
        except CsError as exc:
            _err(f"Can't delete key {key}. Error {exc.name}")
            return 1
    return 0


def delete_prefix(client: CmapClient, prefix: str) -> None:
    """``-D``: deletes every key under ``prefix``; failures are reported and skipped."""
    from pycorosync.ipc.errors import CsError

    for key in client.keys(prefix):
        try:
            client.delete(key)
        except CsError as exc:
            _err(f"Can't delete key {key}. Error {exc.name}")


def clear_stats(client: CmapClient, target: str) -> int:
    """``-C``: writes ``stats.clear.<target>`` (u32 1) in the stats map."""
    from pycorosync.engine.config.types import ValueType
    from pycorosync.ipc.errors import CsError

    key = f"stats.clear.{target}"
    try:
        client.set(key, 1, ValueType.UINT32)
    except CsError as exc:
        _err(f"Can't set cmap stats clear key {key}. Error {exc.name}")
        return 1
    return 0


def load_file(client: CmapClient, path: str, show_binary: bool = False) -> int:
    """``-p``: per line ``key type value`` sets (value = one word, as corosync's strtok reads it),
    ``^key`` deletes, ``^^prefix`` deletes a prefix; blank lines and ``#`` comments are skipped."""
    from pycorosync.ipc.errors import CsError

    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        _err(f"Couldn't open file.: {exc.strerror}")
        return 0
    for line in lines:
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        name = words[0]
        if name.startswith("^^"):
            delete_prefix(client, name[2:])
        elif name.startswith("^"):
            try:
                client.delete(name[1:])
            except CsError as exc:
                _err(f"Can't delete key {name[1:]}. Error {exc.name}")
        else:
            if len(words) < 3:
                _err(f"Both type and value for key {name} are required")
                return 1
            if set_key(client, name, words[1], words[2]):
                return 1
    return 0


def track(client: CmapClient, keys: list[str], *, prefix: bool, show_binary: bool) -> int:
    """``-t``/``-T``: prints ``create>``/``delete>``/``modify>`` lines until "q" (or end of input)."""
    from pycorosync.ipc.client import CS_DISPATCH_ALL
    from pycorosync.services.cmap.engine import CMAP_TRACK_ADD, CMAP_TRACK_DELETE, CMAP_TRACK_MODIFY, CMAP_TRACK_PREFIX

    labels = {CMAP_TRACK_ADD: "create> ", CMAP_TRACK_DELETE: "delete> ", CMAP_TRACK_MODIFY: "modify> "}

    def on_event(ev: CmapTrackEvent) -> None:
        if ev.event == CMAP_TRACK_DELETE:
            line = key_line(ev.key, ev.old_type, ev.old_value, show_binary)
        else:
            line = key_line(ev.key, ev.new_type, ev.new_value, show_binary)
        sys.stdout.write(labels.get(ev.event, "") + line + "\n")
        sys.stdout.flush()

    flags = CMAP_TRACK_ADD | CMAP_TRACK_DELETE | CMAP_TRACK_MODIFY | (CMAP_TRACK_PREFIX if prefix else 0)
    for key in keys:
        client.track_add(key, flags, on_event)
    print('Type "q" to finish', flush=True)
    stdin_fd = sys.stdin.fileno()
    pending = b""
    while True:
        ready, _, _ = select.select([client.fileno(), stdin_fd], [], [])
        if client.fileno() in ready:
            client.dispatch(CS_DISPATCH_ALL)
        if stdin_fd in ready:
            chunk = os.read(stdin_fd, 4096)
            if not chunk:
                return 0
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if any(line.strip() == b"q" for line in lines):
                return 0
