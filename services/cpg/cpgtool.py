"""``pycorosync cpgtool``: corosync-cpgtool's options and output.

    pycorosync cpgtool            Group Name<TAB>       PID<TAB>   Node ID, then per group its name and
                                  <TAB><TAB>%10u<TAB>%10u (<addresses of the node's links>) per member
    pycorosync cpgtool -d C       GRP_NAME<C>PID<C>NODEID, then <group><C><pid><C><nodeid> per member
    pycorosync cpgtool -n         the group names only, one a line
    -e                            print group names raw (default: unprintable bytes as \\xNN)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:  # the clients pull numpy/numba: imported inside the handler only
    from pycorosync.services.cpg.client import CpgIterationDescription


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds ``cpgtool`` to the ``pycorosync`` command line."""
    p = sub.add_parser(
        "cpgtool",
        help="display the closed process groups and their members (corosync-cpgtool)",
        description="Display current cpg group membership, as corosync-cpgtool does.",
    )
    p.add_argument("-d", dest="delimiter", metavar="DELIMITER", help="delimiter between fields (default: tab layout)")
    p.add_argument("-e", dest="raw", action="store_true", help="don't escape unprintable characters in group names")
    p.add_argument("-n", dest="names_only", action="store_true", help="display only all existing group names")
    p.set_defaults(func=run)


def escape_name(name: bytes, escape: bool = True) -> bytes:
    """A group name for display: bytes outside printable ASCII (and the backslash) as ``\\xNN``."""
    if not escape:
        return name
    out = bytearray()
    for b in name:
        if b == 0x5C:
            out += b"\\\\"
        elif b < 0x20 or b > 0x7E:
            out += b"\\x%02X" % b
        else:
            out.append(b)
    return bytes(out)


def format_groups(
    items: list[CpgIterationDescription], addresses: Mapping[int, list[str]], delimiter: str | None = None,
    escape: bool = True,
) -> bytes:
    """The full listing (CPG_ITERATION_ALL items, grouped by group as the service returns them)."""
    lines: list[bytes] = []
    if delimiter is None:
        lines.append(b"Group Name\t%10s\t%10s" % (b"PID", b"Node ID"))
        last: bytes | None = None
        for item in items:
            if item.group != last:
                lines.append(escape_name(item.group, escape))
                last = item.group
            addrs = addresses.get(item.nodeid)
            suffix = b" (" + ", ".join(addrs).encode() + b")" if addrs else b""
            lines.append(b"\t\t%10u\t%10u" % (item.pid, item.nodeid) + suffix)
    else:
        d = delimiter.encode("utf-8", "surrogateescape")
        lines.append(b"GRP_NAME" + d + b"PID" + d + b"NODEID")
        for item in items:
            lines.append(escape_name(item.group, escape) + d + b"%u" % item.pid + d + b"%u" % item.nodeid)
    return b"".join(line + b"\n" for line in lines)


def node_addresses(run_dir: str) -> dict[int, list[str]]:
    """node id -> its link addresses (``ring0_addr`` ...), from cmap's nodelist; empty if cmap is not there."""
    from pycorosync.ipc.errors import CsError
    from pycorosync.services.cmap.client import CmapClient

    out: dict[int, list[str]] = {}
    try:
        with CmapClient(run_dir, timeout=5.0) as cmap:
            by_index: dict[str, dict[str, object]] = {}
            for key, _vtype, value in cmap.iter("nodelist.node."):
                parts = key.split(".")
                if len(parts) == 4:
                    by_index.setdefault(parts[2], {})[parts[3]] = value
    except CsError:
        return out
    for fields in by_index.values():
        nodeid = fields.get("nodeid")
        if not isinstance(nodeid, int):
            continue
        out[nodeid] = [str(fields[f"ring{i}_addr"]) for i in range(8) if f"ring{i}_addr" in fields]
    return out


def run(args: argparse.Namespace, out: BinaryIO | None = None) -> int:
    """The handler: one cpg iteration, printed as corosync-cpgtool prints it."""
    from pycorosync.ipc.errors import CsError
    from pycorosync.paths import resolve_run_dir
    from pycorosync.services.cpg.client import CPG_ITERATION_ALL, CPG_ITERATION_NAME_ONLY, CpgClient

    stream = out if out is not None else sys.stdout.buffer
    run_dir = str(resolve_run_dir(args.run_dir))
    try:
        client = CpgClient(run_dir, timeout=5.0)
    except CsError as exc:
        print(f"Could not initialize corosync cpg API error {exc.code}", file=sys.stderr)
        return 1
    with client:
        try:
            if args.names_only:
                names = [d.group for d in client.iteration(CPG_ITERATION_NAME_ONLY)]
                stream.write(b"".join(escape_name(n, not args.raw) + b"\n" for n in names))
            else:
                items = list(client.iteration(CPG_ITERATION_ALL))
                addresses = {} if args.delimiter is not None else node_addresses(run_dir)
                stream.write(format_groups(items, addresses, args.delimiter, not args.raw))
        except CsError as exc:
            print(f"cpg_iteration failed: {exc.name}", file=sys.stderr)
            return 1
    stream.flush()
    return 0
