"""What corosync-quorumtool prints (-s, -m, -l, -p, -H, -o), as pure functions of the data it reads.

The tool gathers a ``QuorumStatus`` (through the quorum, votequorum, cmap and cfg clients) and prints
``format_status`` or ``format_members``. Layouts are corosync-quorumtool 3.1's byte for byte (COROSYNC.md §10.1):
cells of the membership table are right-aligned in 10 columns and followed by a space.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .votequorum import FLAG_NAMES, InfoFlag, VoteInfo

__all__ = [
    "NOT_CONFIGURED",
    "QDEVICE_NODEID",
    "SORT_ADDRESS",
    "SORT_NAME",
    "SORT_NODEID",
    "MemberEntry",
    "QuorumStatus",
    "ctime",
    "format_flags",
    "format_members",
    "format_status",
    "node_display_name",
    "sort_members",
]

NOT_CONFIGURED = "Not configured"
QDEVICE_NODEID = 0
SORT_ADDRESS = "a"
SORT_NAME = "n"
SORT_NODEID = "i"


@dataclass(frozen=True)
class MemberEntry:
    """One member of the current ring: node id, the name to print, its votequorum info (None without votequorum)."""

    nodeid: int
    name: str
    info: VoteInfo | None = None


@dataclass(frozen=True)
class QuorumStatus:
    """Everything ``corosync-quorumtool -s`` shows.

    ``provider`` is ``quorum.provider`` (None: not configured); ``local`` is this node's votequorum info (None when
    votequorum is not the provider); ``members`` are in the order corosync sends them (by address).
    """

    date: str
    provider: str | None
    our_nodeid: int
    ring_id: tuple[int, int]
    quorate: bool
    members: tuple[MemberEntry, ...]
    local: VoteInfo | None = None


def ctime(seconds: float | None = None) -> str:
    """``ctime(3)`` without the newline: ``Wed Jan 10 10:00:00 2024``."""
    return time.ctime(seconds)


def format_flags(flags: InfoFlag) -> str:
    """The ``Flags:`` words, each followed by a space (``Quorate `` for a plain quorate cluster)."""
    return "".join(f"{name} " for flag, name in FLAG_NAMES if flags & flag)


def _cell(text: str) -> str:
    return f"{text:>10} "


def _nodeid(nodeid: int, hex_ids: bool) -> str:
    return f"0x{nodeid:08x} " if hex_ids else _cell(str(nodeid))


def _qdevice_cell(flags: InfoFlag) -> str:
    if not flags & InfoFlag.QDEVICE_REGISTERED:
        return _cell("NR")
    alive = "A" if flags & InfoFlag.QDEVICE_ALIVE else "NA"
    vote = "V" if flags & InfoFlag.QDEVICE_CAST_VOTE else "NV"
    master = "MW" if flags & InfoFlag.QDEVICE_MASTER_WINS else "NMW"
    return _cell(f"{alive},{vote},{master}")


def sort_members(members: Sequence[MemberEntry], order: str) -> list[MemberEntry]:
    """``-o a`` keeps corosync's order (by address), ``-o i`` sorts by node id, ``-o n`` by name."""
    if order == SORT_NODEID:
        return sorted(members, key=lambda member: member.nodeid)
    if order == SORT_NAME:
        return sorted(members, key=lambda member: member.name.encode("utf-8", "surrogateescape"))
    return list(members)


def format_members(
    status: QuorumStatus, *, hex_ids: bool = False, machine_parsable: bool = False, order: str = SORT_ADDRESS
) -> str:
    """The membership block (all ``-l`` prints), starting with its empty line."""
    votequorum = status.local is not None
    qdevice = votequorum and any(
        m.info is not None and m.info.flags & InfoFlag.QDEVICE_REGISTERED for m in status.members
    )
    qdevice_column = votequorum and (qdevice or machine_parsable)
    header = _cell("Nodeid")
    if votequorum:
        header += _cell("Votes")
        if qdevice_column:
            header += _cell("Qdevice")
    lines = ["", "Membership information", "----------------------", header + "Name"]
    our_flags = InfoFlag(0)
    for member in sort_members(status.members, order):
        row = _nodeid(member.nodeid, hex_ids)
        if votequorum:
            info = member.info
            row += _cell(str(info.node_votes if info is not None else 0))
            if qdevice_column:
                row += _qdevice_cell(info.flags if info is not None else InfoFlag(0))
        row += member.name
        if member.nodeid == status.our_nodeid:
            row += " (local)"
            our_flags = member.info.flags if member.info is not None else InfoFlag(0)
        lines.append(row)
    if qdevice and status.local is not None:
        local = status.local
        casting = bool(our_flags & InfoFlag.QDEVICE_CAST_VOTE)
        # an inactive device shows 0 votes so that the table still adds up
        row = _nodeid(QDEVICE_NODEID, hex_ids) + _cell(str(local.qdevice_votes if casting else 0))
        row += "           " + local.qdevice_name
        if not casting:
            row += f" (votes {local.qdevice_votes})"
        lines.append(row)
    return "\n".join(lines) + "\n"


def format_status(
    status: QuorumStatus, *, hex_ids: bool = False, machine_parsable: bool = False, order: str = SORT_ADDRESS
) -> str:
    """What ``-s`` prints: quorum, votequorum (when it is the provider) and membership information."""
    node_id = f"0x{status.our_nodeid:08x}" if hex_ids else str(status.our_nodeid)
    rep, seq = status.ring_id
    ring = f"{rep:x}.{seq:x}" if status.local is not None else f"{seq:x}"
    lines = [
        "Quorum information",
        "------------------",
        f"Date:             {status.date}",
        f"Quorum provider:  {status.provider or NOT_CONFIGURED}",
        f"Nodes:            {len(status.members)}",
        f"Node ID:          {node_id}",
        f"Ring ID:          {ring}",
        f"Quorate:          {'Yes' if status.quorate else 'No'}",
    ]
    text = "\n".join(lines) + "\n"
    local = status.local
    if local is None:
        return text
    quorate = bool(local.flags & InfoFlag.QUORATE)
    text += "\n".join(
        [
            "",
            "Votequorum information",
            "----------------------",
            f"Expected votes:   {local.node_expected_votes}",
            f"Highest expected: {local.highest_expected}",
            f"Total votes:      {local.total_votes}",
            f"Quorum:           {local.quorum} {' ' if quorate else 'Activity blocked'}",
            f"Flags:            {format_flags(local.flags)}",
        ]
    )
    return text + "\n" + format_members(status, hex_ids=hex_ids, machine_parsable=machine_parsable, order=order)


def node_display_name(
    name: str | None,
    addresses: Sequence[str],
    *,
    numeric: bool = False,
    all_addresses: bool = False,
    reverse_dns: Callable[[str], str | None] | None = None,
) -> str:
    """The Name cell: the nodelist ``name`` unless ``-i``/``-a``; else the address(es), reverse-resolved
    unless ``numeric``. ``-a`` joins every link's address with commas."""
    if name and not numeric and not all_addresses:
        return name
    shown = list(addresses) if all_addresses else list(addresses[:1])
    words = []
    for address in shown:
        resolved = None if numeric or reverse_dns is None else reverse_dns(address)
        words.append(resolved or address)
    return ",".join(words)
