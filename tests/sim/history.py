"""Hand-written run histories for testing the checker: a correct one, and a builder to break it."""

from __future__ import annotations

from pycorosync.engine.totem.api import ConfigChange, ConfigType, RingId
from tests.sim.cluster import Accepted, DeliverRecord, Instance, InstanceLog, RunRecord, SimStats
from tests.sim.network import NetworkStats
from tests.sim.workload import HEADER_BYTES

MS = 1_000_000
R1 = RingId(1, 4)
R2 = RingId(1, 8)


class History:
    """Builds a RunRecord event by event (times in ms)."""

    def __init__(self, nodes: list[int]) -> None:
        self.nodelist = nodes
        self.logs: dict[Instance, InstanceLog] = {}
        self.accepted: dict[tuple[int, int, int], Accepted] = {}
        self.crashes: list[tuple[Instance, int]] = []
        self.ended: set[Instance] = set()

    def _log(self, inst: Instance) -> InstanceLog:
        if inst not in self.logs:
            self.logs[inst] = InstanceLog(inst[0], inst[1])
        return self.logs[inst]

    def start(self, inst: Instance, t: float) -> None:
        self._log(inst).events.append((int(t * MS), "S", None))

    def config(self, inst: Instance, t: float, regular: bool, ring: RingId, members: tuple[int, ...],
               left: tuple[int, ...] = (), joined: tuple[int, ...] = ()) -> None:
        tp = ConfigType.REGULAR if regular else ConfigType.TRANSITIONAL
        self._log(inst).events.append((int(t * MS), "C", ConfigChange(tp, ring, members, left, joined)))

    def move(self, insts: list[Instance], t: float, ring: RingId, trans: tuple[int, ...], members: tuple[int, ...],
             old: tuple[int, ...] = ()) -> None:
        """Transitional then regular configuration change at each of ``insts``."""
        for inst in insts:
            self.config(inst, t, False, ring, trans, tuple(sorted(set(old) - set(trans))))
            self.config(inst, t, True, ring, members, (), tuple(sorted(set(members) - set(trans))))

    def accept(self, inst: Instance, t: float, counter: int, guarantee: int = 2, size: int = 40) -> tuple[int, int, int]:
        key = (inst[0], inst[1], counter)
        self.accepted[key] = Accepted(inst[0], inst[1], int(t * MS), size, guarantee)
        log = self._log(inst)
        log.events.append((int(t * MS), "A", key))
        log.received_at[key] = int(t * MS)
        return key

    def deliver(self, inst: Instance, t: float, key: tuple[int, int, int], ring: RingId, *, sender: int | None = None,
                size: int | None = None, guarantee: int | None = None, error: str | None = None,
                msg_id: int | None = None) -> None:
        acc = self.accepted.get(key)
        g = guarantee if guarantee is not None else (acc.guarantee if acc else 2)
        rec = DeliverRecord(ring, key, g, sender if sender is not None else key[0], msg_id if msg_id is not None
                            else key[2], size if size is not None else (acc.size if acc else HEADER_BYTES), g, error)
        self._log(inst).events.append((int(t * MS), "D", rec))

    def receive(self, inst: Instance, key: tuple[int, int, int], t: float) -> None:
        self._log(inst).received_at.setdefault(key, int(t * MS))

    def crash(self, inst: Instance, t: float) -> None:
        self._log(inst).events.append((int(t * MS), "X", None))
        self.crashes.append((inst, int(t * MS)))
        self.ended.add(inst)

    def record(self, end: float = 10_000, heal: float | None = None, deadline: float | None = None) -> RunRecord:
        alive = set(self.logs) - self.ended
        return RunRecord(
            nodelist=self.nodelist, logs=self.logs, accepted=self.accepted, alive_at_end=alive,
            crashes=self.crashes, end_ns=int(end * MS), heal_ns=None if heal is None else int(heal * MS),
            liveness_deadline_ns=None if deadline is None else int(deadline * MS), frames_tracked=True, errors=[],
            stats=SimStats(), net_stats=NetworkStats(),
        )


def good_history() -> History:
    """3 nodes form R1, exchange 3 messages, node 3 crashes, nodes 1 and 2 move to R2 and exchange one more."""
    h = History([1, 2, 3])
    n1, n2, n3 = (1, 0), (2, 0), (3, 0)
    for inst in (n1, n2, n3):
        h.start(inst, 0)
    for inst in (n1, n2, n3):  # the first transitional set is the node itself
        h.config(inst, 10, False, R1, (inst[0],))
        h.config(inst, 10, True, R1, (1, 2, 3), (), tuple(n for n in (1, 2, 3) if n != inst[0]))
    m1 = h.accept(n1, 20, 0)
    m2 = h.accept(n2, 21, 0, guarantee=3)
    m3 = h.accept(n3, 22, 0)
    for inst in (n1, n2, n3):
        for key in (m1, m2, m3):
            h.receive(inst, key, 23)
    for i, key in enumerate((m1, m2, m3)):
        for inst in (n1, n2, n3):
            h.deliver(inst, 30 + i, key, R1)
    h.crash(n3, 100)
    h.move([n1, n2], 500, R2, (1, 2), (1, 2), old=(1, 2, 3))
    m4 = h.accept(n1, 600, 1)
    h.receive(n2, m4, 601)
    h.deliver(n1, 602, m4, R2)
    h.deliver(n2, 602, m4, R2)
    return h
