"""``pycorosync quorumtool``: corosync-quorumtool's options, outputs, messages and exit codes.

    pycorosync quorumtool [-s]          status (exit 0 quorate, 2 not quorate, 1 error)
    pycorosync quorumtool -m            status again on every change (until interrupted)
    pycorosync quorumtool -l            membership only
    pycorosync quorumtool -v N [-n ID]  set the votes of a node (this one by default)
    pycorosync quorumtool -e N          set expected votes
    -H hex node ids, -i addresses instead of names, -a all addresses, -p machine parsable, -o a|n|i order

The status is read through the clients: quorum (quorate, ring id, members), votequorum (each member's info)
and cmap (``quorum.provider``, the nodelist's names and addresses).
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the clients pull numpy: imported inside the handler only
    from pycorosync.services.cmap.client import CmapClient
    from pycorosync.services.quorum.client import QuorumClient, QuorumEvent, VotequorumClient
    from pycorosync.services.quorum.display import MemberEntry, QuorumStatus

EXIT_NOT_QUORATE = 2
CLIENT_TIMEOUT_S = 10.0


class _Exit(Exception):
    """An error with corosync-quorumtool's message on stderr and its exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds ``quorumtool`` to the ``pycorosync`` command line."""
    p = sub.add_parser(
        "quorumtool",
        help="show and change quorum state (corosync-quorumtool)",
        description="Display the quorum state of the local node, or change votes, as corosync-quorumtool does.",
    )
    p.add_argument("-s", dest="op", action="store_const", const="status", help="show quorum status")
    p.add_argument("-m", dest="op", action="store_const", const="monitor", help="monitor quorum status")
    p.add_argument("-l", dest="op", action="store_const", const="nodes", help="list nodes")
    p.add_argument("-p", dest="machine", action="store_true", help="when used with -s or -l, machine parsable")
    p.add_argument("-v", dest="votes", metavar="VOTES", help="change the number of votes for a node")
    p.add_argument("-n", dest="nodeid", metavar="NODEID", help="optional nodeid of node for -v")
    p.add_argument("-e", dest="expected", metavar="EXPECTED", help="change expected votes for the cluster")
    p.add_argument("-H", dest="hex_ids", action="store_true", help="show nodeids in hexadecimal rather than decimal")
    p.add_argument("-i", dest="numeric", action="store_true", help="show node IP addresses instead of names")
    p.add_argument("-a", dest="all_addresses", action="store_true", help="show all names or addresses for each node")
    p.add_argument("-o", dest="order", default="a", metavar="ORDER", choices=("a", "n", "i"),
                   help="order by a: IP address (default), n: name, i: nodeid")
    p.add_argument("-f", dest="force", action="store_true", help="forcefully unregister a quorum device")
    p.set_defaults(func=run, op=None)


def run(args: argparse.Namespace) -> int:
    """The tool's main: the exit code."""
    from pycorosync.ipc.errors import CsError
    from pycorosync.paths import resolve_run_dir

    run_dir = str(resolve_run_dir(args.run_dir))
    try:
        return _run(args, run_dir)
    except _Exit as exc:
        print(exc, file=sys.stderr)
        return exc.code
    except CsError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1


def _parse_number(text: str | None, what: str, allow_zero: bool) -> int | None:
    if text is None:
        return None
    try:
        value = int(text, 0)
    except ValueError:
        value = -1
    if value < 0 or (value == 0 and not allow_zero):
        raise _Exit(what)
    return value


def _run(args: argparse.Namespace, run_dir: str) -> int:
    from pycorosync.ipc.errors import CsError
    from pycorosync.services.cmap.client import CmapClient
    from pycorosync.services.quorum.client import QuorumClient, VotequorumClient
    from pycorosync.services.quorum.protocol import PROVIDER_VOTEQUORUM

    nodeid = _parse_number(args.nodeid, "The nodeid was not valid, try a positive number", allow_zero=True)
    try:
        cmap = CmapClient(run_dir, timeout=CLIENT_TIMEOUT_S)
    except CsError:
        raise _Exit("Cannot initialize CMAP service") from None
    with cmap:
        provider = _get_str(cmap, "quorum.provider")
        votequorum = provider == PROVIDER_VOTEQUORUM
        votes = expected = None
        if args.votes is not None:
            if not votequorum:
                raise _Exit("You cannot change node votes, corosync is not using votequorum")
            votes = _parse_number(args.votes, "New votes value was not valid, try a positive number or zero",
                                  allow_zero=True)
        if args.expected is not None:
            if not votequorum:
                raise _Exit("You cannot change expected votes, corosync is not using votequorum")
            expected = _parse_number(args.expected, "New expected votes value was not valid, try a positive number",
                                     allow_zero=False)
        try:
            quorum = QuorumClient(run_dir, timeout=CLIENT_TIMEOUT_S)
        except CsError:
            raise _Exit("Cannot initialize QUORUM service") from None
        with quorum:
            vq = None
            if votequorum:
                try:
                    vq = VotequorumClient(run_dir, timeout=CLIENT_TIMEOUT_S)
                except CsError:
                    raise _Exit("Cannot initialise VOTEQUORUM service") from None
            try:
                return _command(args, cmap, quorum, vq, provider, votes, expected, nodeid)
            finally:
                if vq is not None:
                    vq.close()


def _command(
    args: argparse.Namespace, cmap: CmapClient, quorum: QuorumClient, vq: VotequorumClient | None,
    provider: str | None, votes: int | None, expected: int | None, nodeid: int | None,
) -> int:
    from pycorosync.ipc.errors import CsError, cs_strerror

    if vq is not None and votes is not None:
        target = nodeid if nodeid is not None else vq.getinfo(0).node_id
        try:
            vq.setvotes(target, votes)
        except CsError as exc:
            raise _Exit(f"Unable to set votes {votes} for nodeid: {target}: {cs_strerror(exc.code)}") from None
        return 0
    if vq is not None and expected is not None:
        try:
            vq.setexpected(expected)
        except CsError as exc:
            raise _Exit(f"Unable to set expected votes: {cs_strerror(exc.code)}") from None
        return 0
    if args.op == "monitor":
        return _monitor(args, cmap, quorum, vq, provider)
    status = gather_status(cmap, quorum, vq, provider, numeric=args.numeric, all_addresses=args.all_addresses)
    return _print_status(args, status)


def _print_status(args: argparse.Namespace, status: QuorumStatus) -> int:
    from pycorosync.services.quorum.display import format_members, format_status

    fmt = {"hex_ids": args.hex_ids, "machine_parsable": args.machine, "order": args.order}
    if args.op == "nodes":
        sys.stdout.write(format_members(status, **fmt))
        sys.stdout.flush()
        return 0
    sys.stdout.write(format_status(status, **fmt))
    sys.stdout.flush()
    return 0 if status.quorate else EXIT_NOT_QUORATE


def _monitor(
    args: argparse.Namespace, cmap: CmapClient, quorum: QuorumClient, vq: VotequorumClient | None,
    provider: str | None,
) -> int:
    """-m: the status now and after every quorum notification, until interrupted."""
    from pycorosync.services.quorum.client import QuorumEvent
    from pycorosync.services.quorum.protocol import CS_TRACK_CHANGES, CS_TRACK_CURRENT

    quorum.trackstart(CS_TRACK_CURRENT | CS_TRACK_CHANGES)
    args.op = "status"
    while True:
        event = quorum.next_event(timeout=None)
        if isinstance(event, QuorumEvent):
            _print_status(args, gather_status(cmap, quorum, vq, provider, numeric=args.numeric,
                                              all_addresses=args.all_addresses, event=event))
            print()
            sys.stdout.flush()


def _get_str(cmap: CmapClient, key: str) -> str | None:
    from pycorosync.ipc.errors import CsError

    try:
        value, _ = cmap.get(key)
    except CsError:
        return None
    return str(value)


def nodelist(cmap: CmapClient) -> dict[int, tuple[str | None, list[str]]]:
    """node id -> (name, addresses by link) from cmap's ``nodelist.node.<pos>.*``."""
    nodes: dict[int, tuple[str | None, list[str]]] = {}
    by_pos: dict[str, dict[str, str]] = {}
    for key, _, value in cmap.iter("nodelist.node."):
        parts = key.split(".")
        if len(parts) == 4:
            by_pos.setdefault(parts[2], {})[parts[3]] = str(value)
    for fields in by_pos.values():
        try:
            nodeid = int(fields.get("nodeid", ""), 0)
        except ValueError:
            continue
        links = sorted((k for k in fields if k.startswith("ring") and k.endswith("_addr")),
                       key=lambda k: int(k[4:-5]) if k[4:-5].isdigit() else 99)
        nodes[nodeid] = (fields.get("name"), [fields[k] for k in links])
    return nodes


def _reverse_dns(address: str) -> str | None:
    try:
        return socket.gethostbyaddr(address)[0]
    except (OSError, UnicodeError):
        return None


def _address_key(addresses: list[str]) -> tuple[int, int, bytes]:
    if not addresses:
        return (2, 0, b"")
    try:
        ip = ipaddress.ip_address(addresses[0])
    except ValueError:
        return (1, 0, addresses[0].encode())
    return (0, ip.version, ip.packed)


def gather_status(
    cmap: CmapClient, quorum: QuorumClient, vq: VotequorumClient | None, provider: str | None,
    *, numeric: bool = False, all_addresses: bool = False, event: QuorumEvent | None = None,
) -> QuorumStatus:
    """Everything ``-s`` shows, read from the node's services now (``event``: the quorum notification to
    show, else the current state is asked for)."""
    from pycorosync.ipc.errors import CsError
    from pycorosync.services.quorum.client import QuorumEvent
    from pycorosync.services.quorum.display import MemberEntry, QuorumStatus, ctime, node_display_name
    from pycorosync.services.quorum.protocol import CS_TRACK_CURRENT

    if event is None:
        # quorate, ring and members come as one notification (quorum_trackstart with CS_TRACK_CURRENT)
        quorum.trackstart(CS_TRACK_CURRENT)
    while not isinstance(event, QuorumEvent):
        event = quorum.next_event(timeout=CLIENT_TIMEOUT_S)
        if event is None:
            raise _Exit("Unable to get quorum status: no answer from the quorum service")
    members = event.members
    nodes = nodelist(cmap)
    local = None
    if vq is not None:
        local = vq.getinfo(0)
        our_nodeid = local.node_id
    else:
        pos = _get_str(cmap, "nodelist.local_node_pos")
        our_nodeid = next((nid for nid in nodes if pos is not None and _get_str(
            cmap, f"nodelist.node.{pos}.nodeid") == str(nid)), 0)
    entries: list[MemberEntry] = []
    for nodeid in sorted(members, key=lambda n: (_address_key(nodes.get(n, (None, []))[1]), n)):
        name, addresses = nodes.get(nodeid, (None, []))
        info = None
        if vq is not None:
            try:
                info = vq.getinfo(nodeid)
            except CsError:
                info = None
        shown = node_display_name(name, addresses, numeric=numeric, all_addresses=all_addresses,
                                  reverse_dns=_reverse_dns) or str(nodeid)
        entries.append(MemberEntry(nodeid, shown, info))
    return QuorumStatus(
        date=ctime(), provider=provider, our_nodeid=our_nodeid, ring_id=(event.ring_id.nodeid, event.ring_id.seq),
        quorate=event.quorate, members=tuple(entries), local=local,
    )
