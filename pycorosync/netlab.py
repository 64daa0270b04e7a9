"""A network of Linux network namespaces for real fault tests: one namespace per node, each with one veth
whose peer sits on a bridge in a "switch" namespace, and nftables rules in the node namespaces that drop
what a test says (partitions, random loss, one-way loss).

    lab = NetnsLab(n=5)            # names unique per process and lab: pcs-<pid>-<k>-sw, pcs-<pid>-<k>-n<id>
                                   # (mtu=400: every link's MTU, for IP fragmentation)
    lab.build()                    # namespaces, veths, bridge, addresses 10.99.0.<id>/24
    lab.exec_prefix(3)             # ["ip", "netns", "exec", "pcs-...-n3"]: run node 3's daemon in it
    lab.partition([1, 2, 3], [4, 5]); lab.heal(); lab.loss(20); lab.one_way(5, 1)
    lab.destroy()                  # deleting a namespace removes its links and nftables tables with it

Nothing is created in the caller's own namespace: the bridge lives in the switch namespace, the veth pairs
are made directly across namespaces. Namespaces left by a killed test process are removed by the next lab
(their names carry the dead creator's pid).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

import psutil

NETNS_DIR = Path("/run/netns")
NAME_PREFIX = "pcs-"
SUBNET = "10.99.0"
TABLE = "pcsfault"
_labs = itertools.count(1)


class LabUnavailable(RuntimeError):
    """This machine cannot run the lab (not root, no iproute2 or nft, no namespaces); the text says why."""


def check_available() -> None:
    """Raises LabUnavailable with the reason when network namespace tests cannot run here."""
    if os.geteuid() != 0:
        raise LabUnavailable("network namespaces and nftables need root")
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            raise LabUnavailable(f"'{tool}' is not installed (make test installs it through tools/sysdeps.sh)")


def _run(argv: Sequence[str], stdin: str | None = None) -> None:
    done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")


def sweep_orphans() -> list[str]:
    """Deletes lab namespaces whose creating process is gone; returns their names."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in NETNS_DIR.iterdir():
            parts = entry.name.split("-")
            if len(parts) < 4 or not entry.name.startswith(NAME_PREFIX) or not parts[1].isdigit():
                continue
            if psutil.pid_exists(int(parts[1])):
                continue
            subprocess.run(["ip", "netns", "del", entry.name], capture_output=True, timeout=30, check=False)
            removed.append(entry.name)
    return removed


class NetnsLab:
    """N node namespaces on one bridge (see the module docstring)."""

    def __init__(self, n: int, mtu: int | None = None) -> None:
        self.n = n
        self.mtu = mtu  # of every link (veths, hence the bridge); None: the kernel's 1500
        self.tag = f"{NAME_PREFIX}{os.getpid()}-{next(_labs)}"
        self.switch = f"{self.tag}-sw"
        self.made: list[str] = []

    def ns(self, nodeid: int) -> str:
        return f"{self.tag}-n{nodeid}"

    def address(self, nodeid: int) -> str:
        return f"{SUBNET}.{nodeid}"

    def addresses(self) -> dict[int, str]:
        return {i: self.address(i) for i in self.ids}

    @property
    def ids(self) -> list[int]:
        return list(range(1, self.n + 1))

    def exec_prefix(self, nodeid: int) -> list[str]:
        return ["ip", "netns", "exec", self.ns(nodeid)]

    def build(self) -> None:
        """Creates the namespaces, links and addresses; on any error removes what it made and raises."""
        sweep_orphans()
        try:
            for name in (self.switch, *(self.ns(i) for i in self.ids)):
                _run(["ip", "netns", "add", name])
                self.made.append(name)
                _run(["ip", "-n", name, "link", "set", "lo", "up"])
            _run(["ip", "-n", self.switch, "link", "add", "br0", "type", "bridge"])
            _run(["ip", "-n", self.switch, "link", "set", "br0", "up"])
            for i in self.ids:
                _run(["ip", "-n", self.switch, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0",
                      "netns", self.ns(i)])
                if self.mtu is not None:
                    _run(["ip", "-n", self.switch, "link", "set", f"v{i}", "mtu", str(self.mtu)])
                    _run(["ip", "-n", self.ns(i), "link", "set", "eth0", "mtu", str(self.mtu)])
                _run(["ip", "-n", self.switch, "link", "set", f"v{i}", "master", "br0", "up"])
                _run(["ip", "-n", self.ns(i), "addr", "add", f"{self.address(i)}/24", "dev", "eth0"])
                _run(["ip", "-n", self.ns(i), "link", "set", "eth0", "up"])
                self._nft(i, f"add table inet {TABLE}\n"
                             f"add chain inet {TABLE} input {{ type filter hook input priority 0; policy accept; }}\n")
        except BaseException:
            self.destroy()
            raise

    def _nft(self, nodeid: int, script: str) -> None:
        _run(["ip", "netns", "exec", self.ns(nodeid), "nft", "-f", "-"], stdin=script)

    def _add_input_rules(self, nodeid: int, rules: Iterable[str]) -> None:
        self._nft(nodeid, "".join(f"add rule inet {TABLE} input {rule}\n" for rule in rules))

    def heal(self) -> None:
        """Removes every fault rule: all traffic flows again."""
        for i in self.ids:
            self._nft(i, f"flush chain inet {TABLE} input\n")

    def partition(self, *groups: Sequence[int]) -> None:
        """Drops all traffic between the groups (each node drops what comes from outside its group)."""
        for group in groups:
            others = [j for j in self.ids if j not in group]
            if not others:
                continue
            for i in group:
                self._add_input_rules(i, [f"ip saddr {{ {', '.join(self.address(j) for j in others)} }} drop"])

    def loss(self, percent: int, nodes: Iterable[int] | None = None) -> None:
        """Each listed node (default: all) drops ``percent`` % of the UDP packets it receives, at random."""
        if not 0 <= percent <= 100:
            raise ValueError(f"loss must be 0..100 %, got {percent}")
        for i in nodes or self.ids:
            self._add_input_rules(i, [f"ip saddr {SUBNET}.0/24 meta l4proto udp numgen random mod 100 < {percent} drop"])

    def one_way(self, src: int, dst: int) -> None:
        """``dst`` no longer receives anything from ``src``; ``src`` still hears ``dst``."""
        self._add_input_rules(dst, [f"ip saddr {self.address(src)} drop"])

    def counters(self, nodeid: int) -> str:
        """The node's fault table with its counters (for a failure message)."""
        done = subprocess.run(["ip", "netns", "exec", self.ns(nodeid), "nft", "list", "table", "inet", TABLE],
                              capture_output=True, text=True, timeout=30, check=False)
        return done.stdout

    def ip_stats(self, nodeid: int) -> dict[str, int]:
        """The node namespace's IPv4 counters from /proc/net/snmp (FragCreates, ReasmOKs, ...)."""
        done = subprocess.run(["ip", "netns", "exec", self.ns(nodeid), "cat", "/proc/net/snmp"],
                              capture_output=True, text=True, timeout=30, check=True)
        rows = [line.split() for line in done.stdout.splitlines() if line.startswith("Ip:")]
        return {name: int(value) for name, value in zip(rows[0][1:], rows[1][1:])}

    def destroy(self) -> None:
        """Deletes every namespace of the lab (their veths, bridge and nftables tables go with them)."""
        for name in reversed(self.made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30, check=False)
        self.made.clear()
