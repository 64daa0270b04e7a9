"""``pycorosync vqsim``: corosync-vqsim's command language over the votequorum state machine, on virtual time.

Commands (one per line on stdin, as corosync-vqsim reads them):

    up [P:]ID[,ID...] ...       start fresh nodes (in partition P, default 0)
    down ID[,ID...] ...         stop nodes
    split|move [P:]ID[,ID...]   move nodes to partition P, then every partition forms a new ring
    join P Q [R...]             move every node of Q (R...) into P, then every partition forms a new ring
    show                        print every node's state
    autofence on|off            when some node is quorate after an event, stop every inquorate node
    sync on|off, assert on|off, timeout MS
    sleep MS                    (pycorosync) let MS of virtual time pass: last_man_standing windows expire
    exit

Lines starting with ``#`` are comments; a comment ``#sleep SECONDS`` also lets that much virtual time pass (the
reference scripts were fed to the real tool by a driver that paused on such lines). Virtual time does not move
otherwise, so every event settles at once and the status printed after it is never stale.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .simcluster import SimCluster

__all__ = ["VqsimSession", "format_status", "register", "run_script"]

DEFAULT_CONFIG = "/etc/corosync/corosync.conf"
PROMPT = "#vqsim> "


def format_status(
    partition: int, nodeid: int, quorate: bool, ring_id: tuple[int, int], members: tuple[int, ...]
) -> str:
    """One status line as corosync-vqsim 3.1 prints it: ``P:NODE: q=Q ring=[REP.SEQ] nodes=[...]`` (hex ring)."""
    nodes = " ".join(str(member) for member in members)
    return f"{partition}:{nodeid}: q={int(quorate)} ring=[{ring_id[0]:x}.{ring_id[1]:x}] nodes=[{nodes}]"


class VqsimSession:
    """One vqsim run: a SimCluster, the tool's switches, and where its output and errors go."""

    def __init__(self, cluster: SimCluster, out: TextIO, err: TextIO) -> None:
        self.cluster = cluster
        self.out = out
        self.err = err
        self.autofence = False
        self.timeout_ms = 250
        self.finished = False

    def show(self) -> None:
        """Print every node's state, then the autofence switch."""
        for status in self.cluster.status():
            self.out.write(
                format_status(status.partition, status.nodeid, status.quorate, status.ring_id, status.members) + "\n"
            )
        self.out.write(f"#autofence: {'on' if self.autofence else 'off'}\n")

    def error(self, text: str) -> None:
        """An error the real tool prints on stderr."""
        self.err.write(f"ERR: {text}\n")

    def sleep_directive(self, line: str) -> bool:
        """A ``#sleep SECONDS`` line: let that much virtual time pass; True if the line was one."""
        words = line.strip()[1:].split() if line.startswith("#") else []
        seconds = _seconds(words[1]) if len(words) == 2 and words[0] == "sleep" else None
        if seconds is None or seconds < 0:
            return False
        self.cluster.advance(int(seconds * 1000))
        return True

    def run_line(self, line: str) -> bool:
        """Run one input line; True when it was a command (the prompt follows it)."""
        text = line.strip()
        if not text or text.startswith("#"):
            return False
        command, *args = text.split()
        handler = getattr(self, f"cmd_{command}", None)
        if command == "move":
            handler = self.cmd_split
        if handler is None:
            self.error(f"unknown command '{command}' (try 'help')")
            return True
        handler(args)
        return True

    # ---- commands

    def cmd_up(self, args: list[str]) -> None:
        """Start nodes: ``[P:]ID[,ID...]`` groups."""
        for partition, nodeids in self._node_groups(args):
            for nodeid in nodeids:
                try:
                    self.cluster.up(nodeid, partition)
                except ValueError as exc:
                    self.error(str(exc))
        self._settled()

    def cmd_down(self, args: list[str]) -> None:
        """Stop nodes (every one listed: the real tool stops only the first of ``2,3``)."""
        for _, nodeids in self._node_groups(args):
            for nodeid in nodeids:
                self._stop(nodeid, "(on request)")
        self._settled()

    def cmd_split(self, args: list[str]) -> None:
        """Move nodes to partitions, then every partition forms a new ring."""
        for partition, nodeids in self._node_groups(args):
            present = []
            for nodeid in nodeids:
                if nodeid in self.cluster.nodes:
                    present.append(nodeid)
                else:
                    self.out.write(f"ERR: node {nodeid} does not exist\n")
            try:
                self.cluster.move(partition, present)
            except ValueError as exc:
                self.error(str(exc))
        self.cluster.update_all()
        self._settled()

    def cmd_join(self, args: list[str]) -> None:
        """Merge the listed partitions into the first one."""
        numbers = [_number(arg, int) for arg in args]
        if len(numbers) < 2 or any(number is None for number in numbers):
            self.error("join needs at least two partition numbers")
            return
        into, *others = [int(number) for number in numbers if number is not None]
        try:
            for other in others:
                self.cluster.join(into, other)
        except ValueError as exc:
            self.error(str(exc))
        self.cluster.update_all()
        self._settled()

    def cmd_show(self, args: list[str]) -> None:
        """Print every node's state."""
        self.show()

    def cmd_autofence(self, args: list[str]) -> None:
        """``autofence on|off``."""
        if self._switch(args) is not None:
            self.autofence = bool(self._switch(args))
            self.out.write(f"#autofence: {'on' if self.autofence else 'off'}\n")

    def cmd_sync(self, args: list[str]) -> None:
        """``sync on|off``: accepted; events always settle at once on virtual time."""
        value = self._switch(args)
        if value is not None:
            self.out.write(f"#sync: {'on' if value else 'off'}\n")

    def cmd_assert(self, args: list[str]) -> None:
        """``assert on|off``: accepted; a partition always settles here."""
        self._switch(args)

    def cmd_timeout(self, args: list[str]) -> None:
        """``timeout MS``: how long the real tool waits for partitions to settle; kept, not needed."""
        value = _number(args[0], int) if args else None
        if value is None:
            self.error("timeout needs a number of milliseconds")
            return
        self.timeout_ms = value

    def cmd_sleep(self, args: list[str]) -> None:
        """``sleep MS``: let virtual time pass."""
        value = _number(args[0], int) if args else None
        if value is None or value < 0:
            self.error("sleep needs a number of milliseconds")
            return
        self.cluster.advance(value)

    def cmd_qdevice(self, args: list[str]) -> None:
        """Quorum devices are not simulated."""
        self.error("qdevice is not supported by this simulator")

    def cmd_exit(self, args: list[str]) -> None:
        """Stop reading commands."""
        self.finished = True

    def cmd_help(self, args: list[str]) -> None:
        """List the commands."""
        self.out.write(__doc__.split("Commands", 1)[1].split("\n\n", 1)[1].split("\n\n", 1)[0] + "\n")

    # ---- helpers

    def _stop(self, nodeid: int, reason: str) -> None:
        try:
            partition = self.cluster.partition_of(nodeid)
        except KeyError:
            self.error(f"nodeid {nodeid} is not up")
            return
        self.out.write(f"{partition}:{nodeid}: Quit {reason}\n")
        self.cluster.down(nodeid)

    def _settled(self) -> None:
        if self.autofence and any(status.quorate for status in self.cluster.status()):
            for status in self.cluster.status():
                if not status.quorate:
                    self._stop(status.nodeid, "(autofenced)")
        self.show()

    def _switch(self, args: list[str]) -> bool | None:
        if len(args) != 1 or args[0] not in ("on", "off"):
            self.error("expected 'on' or 'off'")
            return None
        return args[0] == "on"

    def _node_groups(self, args: list[str]) -> list[tuple[int, list[int]]]:
        groups: list[tuple[int, list[int]]] = []
        for arg in args:
            partition_text, _, ids_text = arg.rpartition(":")
            partition = _number(partition_text, int) if partition_text else 0
            ids = [_number(word, int) for word in ids_text.split(",") if word]
            if partition is None or not ids or any(nodeid is None or nodeid <= 0 for nodeid in ids):
                self.error(f"cannot read '{arg}' as [partition:]nodeid[,nodeid...]")
                continue
            groups.append((partition, [int(nodeid) for nodeid in ids if nodeid is not None]))
        return groups


def _number(text: str, kind: type[int]) -> int | None:
    try:
        return kind(text)
    except ValueError:
        return None


def _seconds(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def run_script(session: VqsimSession, lines: TextIO, interactive: bool = False) -> None:
    """Run every line like the real tool: fed from a pipe it echoes each line after a ``#vqsim> `` prompt (so
    that a parser can skip input lines); on a terminal the prompt is ``vqsim> `` and nothing is echoed."""
    prompt = "vqsim> " if interactive else PROMPT
    session.show()
    session.out.write(prompt)
    session.out.flush()
    for line in lines:
        if session.sleep_directive(line):
            continue  # a pause of the driver, never seen by the real tool
        if not interactive:
            session.out.write(line if line.endswith("\n") else line + "\n")
        if session.run_line(line):
            if session.finished:
                return
            session.out.write(prompt)
            session.out.flush()


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds ``vqsim`` to the ``pycorosync`` command line."""
    parser = subparsers.add_parser(
        "vqsim",
        help="votequorum simulator reading corosync-vqsim commands on stdin",
        description="Simulate votequorum nodes in partitions, as corosync-vqsim does, on virtual time.",
    )
    parser.add_argument("-c", dest="config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    parser.add_argument("-o", dest="output", default=None, help="output file (default stdout)")
    parser.add_argument("-n", dest="no_sync", action="store_true", help="no synchronization (accepted; no effect)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """The ``vqsim`` command: 0 on a clean exit, 1 for a bad config, 3 for an unwritable output file."""
    from pycorosync.engine.config.errors import ConfigError
    from pycorosync.engine.config.model import load

    from .settings import QuorumSettings
    from .simcluster import SimCluster

    try:
        config = load(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    if not config.nodes:
        sys.stderr.write(f"{args.config}: no nodelist: vqsim starts one node per nodelist entry\n")
        return 1
    cluster = SimCluster(lambda nodeid: QuorumSettings.from_config(config, nodeid))
    for node in config.nodes:
        cluster.up(node.nodeid)
    if args.output is None:
        return _run_session(cluster, sys.stdout)
    try:
        with open(args.output, "w", encoding="utf-8") as out:
            return _run_session(cluster, out)
    except OSError as exc:
        sys.stderr.write(f"Unable to open {args.output} for output: {exc.strerror}\n")
        return 3


def _run_session(cluster: SimCluster, out: TextIO) -> int:
    session = VqsimSession(cluster, out, sys.stderr)
    run_script(session, sys.stdin, interactive=sys.stdin.isatty())
    out.flush()
    return 0
