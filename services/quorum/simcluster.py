"""A simulated cluster of votequorum nodes in partitions, on virtual time (the engine of ``pycorosync vqsim``).

Each node is a ``Votequorum`` object: the one the service process runs. A membership change of a partition runs
corosync's sync on every node of it (``sync_init``, every NodeInfo delivered to every member in the same order,
``sync_activate``). Ring ids follow corosync-vqsim: every partition starts at ``(1000 + number, 0)``, its sequence
grows by 4 on each change and its representative is its first node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .settings import QuorumSettings
from .votequorum import Action, Multicast, NodeInfo, Reconfigure, Votequorum

__all__ = ["MAX_PARTITIONS", "NodeStatus", "SimCluster"]

MAX_PARTITIONS = 16


@dataclass(frozen=True)
class NodeStatus:
    """What vqsim prints for one node: partition, node id, quorate, ring id, member list."""

    partition: int
    nodeid: int
    quorate: bool
    ring_id: tuple[int, int]
    members: tuple[int, ...]


@dataclass
class _Partition:
    number: int
    nodes: list[int] = field(default_factory=list)
    ring_id: tuple[int, int] = (0, 0)


class SimCluster:
    """Nodes in partitions. ``settings_for(nodeid)`` gives a node's settings when it starts."""

    def __init__(self, settings_for: Callable[[int], QuorumSettings]) -> None:
        self.settings_for = settings_for
        self.now_ms = 0
        self.partitions = [_Partition(i, ring_id=(1000 + i, 0)) for i in range(MAX_PARTITIONS)]
        self.nodes: dict[int, Votequorum] = {}
        self.actions: dict[int, list[Action]] = {}

    # ---- commands

    def up(self, nodeid: int, partition: int = 0) -> None:
        """Start a fresh node (state as after a restart) in ``partition``."""
        if nodeid in self.nodes:
            raise ValueError(f"nodeid {nodeid} already exists in partition {self.partition_of(nodeid)}")
        self._check_partition(partition)
        self.nodes[nodeid] = Votequorum(nodeid, self.settings_for(nodeid))
        self.actions[nodeid] = []
        self.partitions[partition].nodes.append(nodeid)
        self._new_ring(self.partitions[partition])

    def down(self, nodeid: int) -> None:
        """Stop a node; its partition forms a new ring without it."""
        part = self.partitions[self.partition_of(nodeid)]
        part.nodes.remove(nodeid)
        del self.nodes[nodeid]
        del self.actions[nodeid]
        self._new_ring(part)

    def move(self, partition: int, nodeids: list[int]) -> None:
        """Move nodes into ``partition`` (vqsim's split/move); call ``update_all`` afterwards."""
        self._check_partition(partition)
        for nodeid in nodeids:
            self.partitions[self.partition_of(nodeid)].nodes.remove(nodeid)
            self.partitions[partition].nodes.append(nodeid)

    def join(self, into: int, other: int) -> None:
        """Move every node of ``other`` to the end of ``into``; call ``update_all`` afterwards."""
        self._check_partition(into)
        self._check_partition(other)
        if into == other:
            return
        self.partitions[into].nodes.extend(self.partitions[other].nodes)
        self.partitions[other].nodes.clear()

    def update_all(self) -> None:
        """Every partition forms a new ring (vqsim bumps the sequence of empty ones too)."""
        for part in self.partitions:
            self._new_ring(part)

    def advance(self, ms: int) -> None:
        """Let ``ms`` of virtual time pass, firing every timer due on the way in time order."""
        end = self.now_ms + ms
        while True:
            due = [(d, n) for n, vq in self.nodes.items() if (d := vq.next_deadline_ms()) is not None and d <= end]
            if not due:
                break
            deadline, _ = min(due)
            self.now_ms = max(self.now_ms, deadline)
            for nodeid in sorted(self.nodes, key=self._order_key):
                self._handle(nodeid, self.nodes[nodeid].tick(self.now_ms))
        self.now_ms = end

    def setexpected(self, nodeid: int, expected_votes: int) -> object:
        """votequorum_setexpected issued on ``nodeid``; the result or the VoteError."""
        result = self.nodes[nodeid].setexpected(expected_votes)
        if isinstance(result, Multicast):
            self._handle(nodeid, [result])
        return result

    def setvotes(self, nodeid: int, target: int, votes: int) -> object:
        """votequorum_setvotes issued on ``nodeid`` for ``target``; the result or the VoteError."""
        result = self.nodes[nodeid].setvotes(target, votes)
        if isinstance(result, Multicast):
            self._handle(nodeid, [result])
        return result

    # ---- views

    def partition_of(self, nodeid: int) -> int:
        """The partition number holding ``nodeid``; KeyError when the node is not up."""
        for part in self.partitions:
            if nodeid in part.nodes:
                return part.number
        raise KeyError(nodeid)

    def status(self) -> list[NodeStatus]:
        """Every node, partition by partition in vqsim's order."""
        result: list[NodeStatus] = []
        for part in self.partitions:
            for nodeid in part.nodes:
                vq = self.nodes[nodeid]
                result.append(NodeStatus(part.number, nodeid, vq.quorate, vq.ring_id, vq.members))
        return result

    # ---- internals

    def _order_key(self, nodeid: int) -> tuple[int, int]:
        part = self.partitions[self.partition_of(nodeid)]
        return part.number, part.nodes.index(nodeid)

    def _check_partition(self, partition: int) -> None:
        if not 0 <= partition < MAX_PARTITIONS:
            raise ValueError(f"partition {partition} out of range 0..{MAX_PARTITIONS - 1}")

    def _new_ring(self, part: _Partition) -> None:
        rep = part.nodes[0] if part.nodes else part.ring_id[0]
        part.ring_id = (rep, part.ring_id[1] + 4)
        members = tuple(part.nodes)
        if not members:
            return
        infos: list[tuple[int, NodeInfo | Reconfigure]] = []
        for nodeid in members:
            for action in self.nodes[nodeid].sync_init(part.ring_id, members, self.now_ms):
                if isinstance(action, Multicast):
                    infos.append((nodeid, action.message))
        for sender, message in infos:
            for nodeid in members:
                self.actions[nodeid] += self.nodes[nodeid].deliver(sender, message)
        for nodeid in members:
            self._handle(nodeid, self.nodes[nodeid].sync_activate(self.now_ms))

    def _handle(self, nodeid: int, actions: list[Action]) -> None:
        """Record a node's actions; a multicast is delivered to every member of its partition at once."""
        for action in actions:
            if isinstance(action, Multicast):
                for member in self.partitions[self.partition_of(nodeid)].nodes:
                    self._handle(member, self.nodes[member].deliver(nodeid, action.message))
            else:
                self.actions[nodeid].append(action)
