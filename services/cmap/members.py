"""``runtime.members.<nodeid>.*``: the members of this node's ring as corosync keeps them in icmap.

corosync writes, for every node that joins a ring this node is in: ``.ip`` (``r(<link>) ip(<addr>) ``
per link), ``.join_count`` (u32, +1 per join), ``.status`` (``joined``); when it leaves, ``.status``
becomes ``left`` (the keys stay). ``.config_version`` (u64) comes from cmap's sync, where every member
sends its ``totem.config_version``.

This cmap service has no rings to totem yet, so it learns the membership from the totem process's
``<run_dir>/totem.status.json`` (rewritten on every regular configuration) and knows only its own
node's config_version (from its own ``totem.config_version``, 0 when unset); other members get no
``.config_version`` key until cmap exchanges it in a sync of its own.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from pycorosync.engine.config.types import ValueType
from pycorosync.services.cmap.engine import Icmap

log = logging.getLogger("CMAP")

STATUS_FILE = "totem.status.json"
MAX_LINKS = 8


def member_ip_string(icmap: Icmap, nodeid: int) -> str:
    """corosync's ``runtime.members.<id>.ip`` text from the nodelist: ``r(0) ip(10.0.0.1) `` per link."""
    for key, (_, value) in icmap.items("nodelist.node."):
        parts = key.split(".")
        if len(parts) == 4 and parts[3] == "nodeid" and value == nodeid:
            base = f"nodelist.node.{parts[2]}."
            out = []
            for link in range(MAX_LINKS):
                addr = f"{base}ring{link}_addr"
                if addr in icmap:
                    out.append(f"r({link}) ip({icmap.get(addr)[1]}) ")
            return "".join(out)
    return ""


class MembershipKeys:
    """Keeps ``runtime.members.*`` in an icmap from successive member lists."""

    def __init__(self, icmap: Icmap, nodeid: int | None) -> None:
        self.icmap = icmap
        self.nodeid = nodeid
        self.members: frozenset[int] = frozenset()
        self._status_mtime_ns: int | None = None
        self.bad_status_files = 0

    def apply(self, members: Iterable[int]) -> None:
        """A regular configuration with these members: joins and leaves become key changes."""
        new = frozenset(int(m) for m in members)
        for nodeid in sorted(new - self.members):
            base = f"runtime.members.{nodeid}."
            count = 0
            if base + "join_count" in self.icmap:
                count = int(self.icmap.get(base + "join_count")[1])
            self.icmap.set(base + "ip", ValueType.STRING, member_ip_string(self.icmap, nodeid), internal=True)
            self.icmap.set(base + "join_count", ValueType.UINT32, (count + 1) % 2**32, internal=True)
            self.icmap.set(base + "status", ValueType.STRING, "joined", internal=True)
            if nodeid == self.nodeid:
                version = 0
                if "totem.config_version" in self.icmap:
                    version = int(self.icmap.get("totem.config_version")[1])
                self.icmap.set(base + "config_version", ValueType.UINT64, version, internal=True)
        for nodeid in sorted(self.members - new):
            self.icmap.set(f"runtime.members.{nodeid}.status", ValueType.STRING, "left", internal=True)
        self.members = new

    def poll_status_file(self, run_dir: str | os.PathLike[str]) -> bool:
        """Reads ``totem.status.json`` if it changed since the last call; True when members were applied.

        A file that cannot be parsed is counted and skipped (the next rewrite is read again).
        """
        path = Path(run_dir) / STATUS_FILE
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return False
        if mtime == self._status_mtime_ns:
            return False
        try:
            body = json.loads(path.read_text())
            members = [int(m) for m in body["members"]]
        except (OSError, ValueError, KeyError, TypeError):
            self.bad_status_files += 1
            return False
        self._status_mtime_ns = mtime
        if body.get("nodeid") is not None and self.nodeid is not None and int(body["nodeid"]) != self.nodeid:
            log.warning("%s belongs to node %s, not %s: ignored", path, body["nodeid"], self.nodeid)
            return False
        if not members:  # totem before its first ring
            return False
        self.apply(members)
        return True
