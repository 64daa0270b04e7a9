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


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds ``cmapctl`` to the ``pycorosync`` command line."""
    p = sub.add_parser(
        "cmapctl",
        help="read and write the configuration and statistics database (corosync-cmapctl)",
        description="Access the cmap database, as corosync-cmapctl does.",
    )
    p.add_argument("-b", dest="show_binary", action="store_true", help="show binary values")
    p.add_argument("-m", dest="map", choices=sorted(MAPS), default="default", help="map to use")
    p.add_argument("-p", dest="load_file", metavar="FILE", help="load operations from FILE: [^[^]]key [type value]")
    p.add_argument("-C", dest="clear", choices=CLEAR_TARGETS, help="clear statistics")
    p.add_argument("-q", dest="quiet", action="store_true", help="with -g: print only the value")
    ops = p.add_mutually_exclusive_group()
    for flag, op, text in (("-g", "get", "get keys"), ("-s", "set", f"set key: key type value, type {USAGE_TYPES}"),
                           ("-d", "delete", "delete keys"), ("-D", "delete_prefix", "delete every key under prefixes"),
                           ("-t", "track", "track keys"), ("-T", "track_prefix", "track prefixes")):
        ops.add_argument(flag, dest="op", action="store_const", const=op, help=text)
    p.add_argument("params", nargs="*", help="keys or prefixes (dump: prefixes)")
    p.set_defaults(func=run, op="dump")


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """The handler: connects (CMAP_MAP_STATS for -m stats and -C) and runs one operation."""
    from pycorosync.ipc.errors import CsError
    from pycorosync.paths import resolve_run_dir
    from pycorosync.services.cmap.client import CmapClient

    cmap_map = 1 if args.clear else MAPS[args.map]
    try:
        client = CmapClient(str(resolve_run_dir(args.run_dir)), cmap_map)
    except CsError as exc:
        _err(f"Failed to initialize the cmap API. Error {exc.name}")
        return 1
    with client:
        try:
            return _dispatch(client, args)
        except CsError as exc:  # lost service mid-way
            _err(f"Error {exc.name}")
            return 1


def _dispatch(client: CmapClient, args: argparse.Namespace) -> int:
    if args.clear:
        return clear_stats(client, args.clear)
    if args.load_file:
        return load_file(client, args.load_file)
    op = args.op
    if op == "dump":
        return dump(client, args.params or [""], args.show_binary)
    if not args.params:
        _err("Expected key name(s) or prefix(es) after the operation")
        return 1
    if op == "get":
        return get_keys(client, args.params, args.quiet, args.show_binary)
    if op == "set":
        if len(args.params) != 3:
            _err(f"Set key needs: key_name type value, where type is one of {USAGE_TYPES}")
            return 1
        return set_key(client, *args.params)
    if op == "delete":
        return delete_keys(client, args.params)
    if op == "delete_prefix":
        return sum(delete_prefix(client, prefix) for prefix in args.params) and 1
    return track(client, args.params, prefix=op == "track_prefix", show_binary=args.show_binary)


def key_line(key: str, vtype: Any, value: Any, show_binary: bool, quiet: bool = False) -> str:
    """One output line: ``key (type) = value``; with quiet only the value (a bin value needs -b)."""
    from pycorosync.engine.config.types import ValueType, format_entry, format_value

    if not quiet:
        return format_entry(key, vtype, value, show_binary)
    if vtype == ValueType.BINARY and not show_binary:
        return ""
    return format_value(vtype, value)


def dump(client: CmapClient, prefixes: list[str], show_binary: bool) -> int:
    """Every key under each prefix, sorted."""
    out = sys.stdout
    for prefix in prefixes:
        for key, vtype, value in client.iter(prefix):
            out.write(key_line(key, vtype, value, show_binary) + "\n")
    return 0


def get_keys(client: CmapClient, keys: list[str], quiet: bool, show_binary: bool) -> int:
    """``-g``: one line per key; a missing key is an error line and exit status 1."""
    from pycorosync.ipc.errors import CsError

    status = 0
    for key in keys:
        try:
            value, vtype = client.get(key)
        except CsError as exc:
            _err(f"Can't get key {key}. Error {exc.name}")
            status = 1
            continue
        print(key_line(key, vtype, value, show_binary, quiet))
    return status


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
            value: Any = sys.stdin.buffer.read() if text == "-" else open(text, "rb").read()  # noqa: SIM115
        except OSError as exc:
            _err(f"Can't open file {text}: {exc.strerror}")
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
    """``-d``: deletes each key."""
    from pycorosync.ipc.errors import CsError

    status = 0
    for key in keys:
        try:
            client.delete(key)
        except CsError as exc:
            _err(f"Can't delete key {key}. Error {exc.name}")
            status = 1
    return status


def delete_prefix(client: CmapClient, prefix: str) -> int:
    """``-D``: deletes every key under ``prefix`` (listed first, as corosync-cmapctl does)."""
    from pycorosync.ipc.errors import CsError

    status = 0
    for key in client.keys(prefix):
        try:
            client.delete(key)
        except CsError as exc:
            _err(f"Can't delete key {key}. Error {exc.name}")
            status = 1
    return status


def clear_stats(client: CmapClient, target: str) -> int:
    """``-C``: writes ``stats.clear.<target>`` in the stats map."""
    from pycorosync.engine.config.types import ValueType
    from pycorosync.ipc.errors import CsError

    try:
        client.set(f"stats.clear.{target}", 1, ValueType.UINT8)
    except CsError as exc:
        _err(f"Failed to clear stats. Error {exc.name}")
        return 1
    return 0


def load_file(client: CmapClient, path: str) -> int:
    """``-p``: each line ``key type value`` sets, ``^key`` deletes, ``^^prefix`` deletes a prefix."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        _err(f"Can't open file {path}: {exc.strerror}")
        return 1
    status = 0
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("^^"):
            status |= delete_prefix(client, line[2:].strip())
        elif line.startswith("^"):
            status |= delete_keys(client, [line[1:].strip()])
        else:
            parts = line.split(None, 2)
            if len(parts) != 3:
                _err(f"Can't parse line '{line}': expected key type value")
                status = 1
                continue
            status |= set_key(client, *parts)
    return status


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
