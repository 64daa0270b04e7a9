"""EVS checker: reads the per-instance logs of a run and reports every broken guarantee.

An *instance* is one process life of a node, (node id, incarnation): a restart is a new
instance, as it is a new process to its peers. Each instance's log is cut into segments by its
configuration changes: a regular segment holds what it delivered in regular configuration R,
the transitional segment that follows holds what it delivered between the transitional and
the next regular configuration change.

Properties (the ``prop`` name of a Violation):

- ``integrity``: every delivered payload is a workload message, whole (length and CRC32), was
  accepted by a submit of its origin instance before being delivered, carries the origin node
  as ``sender`` and the submitted guarantee, the same ``msg_id`` everywhere, and is delivered at
  most once per instance. Nothing is delivered before the instance's first configuration.
- ``config``: members sorted, unique, the instance itself included; a transitional change before
  every regular one and never two in a row, with the same (new) ring id; the transitional set is
  inside both the previous regular membership (the node alone before its first ring) and the
  next; transitional ``left`` = previous members not carried over, ``joined`` = (); regular
  ``joined`` = members not in the transitional set, ``left`` = () (api.py); every delivery in a
  segment carries that segment's ring id; one ring id always means the same members (at every
  instance); a node's regular ring seqs strictly increase, across restarts too.
- ``agreement``: in each regular configuration R the instances' regular-segment deliveries are
  prefixes of one sequence; with the transitional segments appended, any two instances order
  the messages they both delivered in R the same way.
- ``virtual_synchrony``: two instances that move together from R to R' (each in the other's
  transitional set) have the same transitional set, delivered the same set in R before the
  transitional change and the same set between the transitional and the regular change; every
  instance listed in a transitional set that installed R' came from R.
- ``reliability``: (the run must end quiescent) an instance alive at the end delivered every message it had accepted; a
  message it delivered in R was delivered by every instance alive at the end that was in R and
  left R the same way (same next regular ring, or none).
- ``safe``: (when frames are tracked) a SAFE message delivered in a regular segment of R was, at
  that moment, already received (its header seen in a frame, or submitted locally) by an
  instance of every member of R; any message delivered in a transitional segment was already
  received by every transitional member. This is a necessary condition observed on the
  network: a fragmented message counts as received when its first fragment arrived.
- ``liveness``: (when the run has a heal phase) every instance alive at the end ends in the same
  regular ring whose members are exactly the live nodes, installed before the liveness deadline,
  and they all delivered the same sequence in it.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pycorosync.engine.totem.api import ConfigChange, ConfigType
from tests.sim.cluster import Accepted, DeliverRecord, Instance, RunRecord

MS = 1_000_000
Key = tuple[int, int, int]


@dataclass(frozen=True)
class Violation:
    """One broken guarantee: which property, what exactly, who and when."""

    prop: str
    text: str
    instances: tuple[Instance, ...] = ()
    t_ns: int | None = None

    def __str__(self) -> str:
        where = f" at {self.t_ns / MS:.3f} ms" if self.t_ns is not None else ""
        return f"{self.prop}{where}: {self.text}"


@dataclass
class Segment:
    """Deliveries of one instance between two configuration changes."""

    kind: str  # 'R' regular, 'T' transitional
    cc: ConfigChange
    t_ns: int
    keys: list[Key] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    ring_ids: list[Any] = field(default_factory=list)  # the ring id each delivery carried


@dataclass
class View:
    """One instance's configuration history."""

    inst: Instance
    segments: list[Segment]
    delivered: dict[Key, int]  # key -> first delivery time
    end_t: int  # crash/leave time, or the run's end


def fmt_inst(inst: Instance) -> str:
    return f"{inst[0]}#{inst[1]}"


def fmt_key(key: Key | None) -> str:
    return "?" if key is None else f"{key[0]}#{key[1]}:{key[2]}"


class Checker:
    """Runs every property over a RunRecord; ``violations`` lists what broke, in property order."""

    def __init__(self, record: RunRecord) -> None:
        self.rec = record
        self.violations: list[Violation] = []
        self.views: dict[Instance, View] = {}
        self.msg_ids: dict[Key, int] = {}
        for inst, log in record.logs.items():
            self.views[inst] = self._build_view(inst, log.events)
        # ring id -> [(instance, index of its regular segment)]
        self.installs: dict[Any, list[tuple[Instance, int]]] = defaultdict(list)
        for inst, view in self.views.items():
            for i, seg in enumerate(view.segments):
                if seg.kind == "R":
                    self.installs[seg.cc.ring_id].append((inst, i))

    def add(self, prop: str, text: str, instances: tuple[Instance, ...] = (), t_ns: int | None = None) -> None:
        self.violations.append(Violation(prop, text, instances, t_ns))

    # parsing + integrity --------------------------------------------------------------------
    def _build_view(self, inst: Instance, events: list[tuple[int, str, Any]]) -> View:
        segments: list[Segment] = []
        delivered: dict[Key, int] = {}
        last_from: dict[tuple[int, int], int] = {}  # origin instance -> last counter delivered
        accepted = self.rec.accepted
        end_t = self.rec.end_ns
        cur: Segment | None = None
        for t, kind, data in events:
            if kind == "C":
                cur = Segment("R" if data.type == ConfigType.REGULAR else "T", data, t)
                segments.append(cur)
            elif kind == "D":
                self._check_delivery(inst, t, data, cur, delivered, accepted)
                if data.key is not None and data.error is None and data.key in accepted:
                    origin, counter = data.key[:2], data.key[2]
                    prev = last_from.get(origin, -1)
                    if counter < prev:
                        self.add("integrity", f"{fmt_inst(inst)} delivered {fmt_key(data.key)} after "
                                 f"{fmt_key((*origin, prev))}: not in its origin's submit order", (inst,), t)
                    last_from[origin] = max(prev, counter)
                    delivered.setdefault(data.key, t)
                    if cur is not None:
                        cur.keys.append(data.key)
                        cur.times.append(t)
                        cur.ring_ids.append(data.ring_id)
            elif kind in "XL":
                end_t = t
        return View(inst, segments, delivered, end_t)

    def _check_delivery(self, inst: Instance, t: int, d: DeliverRecord, cur: Segment | None,
                        delivered: dict[Key, int], accepted: dict[Key, Accepted]) -> None:
        k = fmt_key(d.key)
        if d.error is not None:
            self.add("integrity", f"{fmt_inst(inst)} delivered a broken payload {k} from node {d.sender}: {d.error}",
                     (inst,), t)
            return
        if cur is None:
            self.add("integrity", f"{fmt_inst(inst)} delivered {k} before its first configuration change", (inst,), t)
        if d.key in delivered:
            self.add("integrity", f"{fmt_inst(inst)} delivered {k} twice (first at {delivered[d.key] / MS:.3f} ms)",
                     (inst,), t)
        acc = accepted.get(d.key)
        if acc is None:
            self.add("integrity", f"{fmt_inst(inst)} delivered {k}, which no submit accepted", (inst,), t)
            return
        if acc.t_ns > t:
            self.add("integrity", f"{fmt_inst(inst)} delivered {k} before it was submitted", (inst,), t)
        if acc.size != d.size:
            self.add("integrity", f"{fmt_inst(inst)} delivered {k} of {d.size} B, {acc.size} B were submitted",
                     (inst,), t)
        if d.sender != acc.node:
            self.add("integrity", f"{fmt_inst(inst)} delivered {k} with sender {d.sender}, origin is {acc.node}",
                     (inst,), t)
        if d.guarantee != acc.guarantee:
            self.add("integrity", f"{fmt_inst(inst)} delivered {k} as guarantee {d.guarantee}, submitted as "
                     f"{acc.guarantee}", (inst,), t)
        seen = self.msg_ids.setdefault(d.key, d.msg_id)
        if seen != d.msg_id:
            self.add("integrity", f"{fmt_inst(inst)} delivered {k} with msg_id {d.msg_id}, elsewhere {seen}", (inst,), t)

    # configurations ---------------------------------------------------------------------------
    def check_configs(self) -> None:
        ring_members: dict[Any, tuple[tuple[int, ...], Instance]] = {}
        node_last_seq: dict[int, tuple[int, Instance]] = {}
        for inst in sorted(self.views):
            view = self.views[inst]
            node = inst[0]
            prev_kind = None
            prev_reg: Segment | None = None
            for i, seg in enumerate(view.segments):
                cc = seg.cc
                who = fmt_inst(inst)
                if list(cc.members) != sorted(set(cc.members)):
                    self.add("config", f"{who} got members {cc.members}, not sorted and unique", (inst,), seg.t_ns)
                if node not in cc.members:
                    self.add("config", f"{who} got a {_kind(seg)} configuration {cc.members} without itself",
                             (inst,), seg.t_ns)
                if set(cc.left) & set(cc.members) or not set(cc.joined) <= set(cc.members):
                    self.add("config", f"{who}: {_kind(seg)} change members={cc.members} left={cc.left} "
                             f"joined={cc.joined} is inconsistent", (inst,), seg.t_ns)
                if seg.kind == "T":
                    if prev_kind == "T":
                        self.add("config", f"{who} got two transitional changes in a row", (inst,), seg.t_ns)
                    prev_members = prev_reg.cc.members if prev_reg is not None else (node,)
                    if not set(cc.members) <= set(prev_members):
                        self.add("config", f"{who}: transitional {cc.members} is not inside the previous regular "
                                 f"{prev_members}", (inst,), seg.t_ns)
                    want_left = tuple(sorted(set(prev_members) - set(cc.members)))
                    if tuple(sorted(cc.left)) != want_left or cc.joined:
                        self.add("config", f"{who}: transitional {cc.ring_id} {cc.members} says left={cc.left} "
                                 f"joined={cc.joined}; from {prev_members} expected left={want_left} joined=()",
                                 (inst,), seg.t_ns)
                    self._check_ring_ids(inst, seg, {cc.ring_id})
                else:
                    if prev_kind != "T":
                        self.add("config", f"{who} installed regular {cc.ring_id} {cc.members} without a "
                                 "transitional change before it", (inst,), seg.t_ns)
                    else:
                        trans = view.segments[i - 1].cc
                        if not set(trans.members) <= set(cc.members):
                            self.add("config", f"{who}: transitional {trans.members} is not inside the new regular "
                                     f"{cc.members} ({cc.ring_id})", (inst,), seg.t_ns)
                        if trans.ring_id != cc.ring_id:
                            self.add("config", f"{who}: transitional ring id {trans.ring_id} differs from the "
                                     f"regular one {cc.ring_id} that follows it", (inst,), seg.t_ns)
                        want_joined = tuple(sorted(set(cc.members) - set(trans.members)))
                        if tuple(sorted(cc.joined)) != want_joined or cc.left:
                            self.add("config", f"{who}: regular {cc.ring_id} {cc.members} says joined={cc.joined} "
                                     f"left={cc.left}; after transitional {trans.members} expected "
                                     f"joined={want_joined} left=()", (inst,), seg.t_ns)
                    self._check_ring_ids(inst, seg, {cc.ring_id})
                    known = ring_members.setdefault(cc.ring_id, (tuple(cc.members), inst))
                    if known[0] != tuple(cc.members):
                        self.add("config", f"ring {cc.ring_id} installed with members {cc.members} at {who} but "
                                 f"{known[0]} at {fmt_inst(known[1])}", (inst, known[1]), seg.t_ns)
                    last = node_last_seq.get(node)
                    if last is not None and cc.ring_id.seq <= last[0]:
                        self.add("config", f"{who} installed ring {cc.ring_id} after ring seq {last[0]:x} at "
                                 f"{fmt_inst(last[1])}: ring seqs must grow", (inst,), seg.t_ns)
                    node_last_seq[node] = (cc.ring_id.seq, inst)
                    prev_reg = seg
                prev_kind = seg.kind

    def _check_ring_ids(self, inst: Instance, seg: Segment, allowed: set[Any]) -> None:
        for key, t, ring_id in zip(seg.keys, seg.times, seg.ring_ids):
            if ring_id not in allowed:
                self.add("config", f"{fmt_inst(inst)} delivered {fmt_key(key)} with ring id {ring_id} in the "
                         f"{_kind(seg)} configuration {seg.cc.ring_id}", (inst,), t)
                return

    # ordering and virtual synchrony -----------------------------------------------------------
    def _extended(self, inst: Instance, idx: int) -> tuple[list[Key], Segment | None, Segment | None]:
        """(deliveries in R then in the following transitional, that transitional, the next regular)."""
        segs = self.views[inst].segments
        keys = list(segs[idx].keys)
        trans = segs[idx + 1] if idx + 1 < len(segs) and segs[idx + 1].kind == "T" else None
        nxt = segs[idx + 2] if trans is not None and idx + 2 < len(segs) and segs[idx + 2].kind == "R" else None
        if trans is not None:
            keys += trans.keys
        return keys, trans, nxt

    def check_agreement(self) -> None:
        for ring_id, insts in self.installs.items():
            regs = [(self.views[i].segments[k], i) for i, k in insts]
            longest, li = max(regs, key=lambda r: len(r[0].keys))
            for seg, inst in regs:
                keys = seg.keys
                if longest.keys[: len(keys)] != keys:
                    pos = _first_diff(keys, longest.keys)
                    self.add("agreement", f"in ring {ring_id} {fmt_inst(inst)} delivered {fmt_key(keys[pos])} as "
                             f"message #{pos}, {fmt_inst(li)} delivered {fmt_key(longest.keys[pos])}", (inst, li),
                             seg.times[pos])
                    break
            self._check_extended_order(ring_id, [(self._extended(i, k)[0], i) for i, k in insts])

    def _check_extended_order(self, ring_id: Any, ext: list[tuple[list[Key], Instance]]) -> None:
        """Any two instances order the messages of ring R they both delivered alike (first violation only)."""
        for a in range(len(ext)):
            ka, ia = ext[a]
            sa = set(ka)
            for b in range(a + 1, len(ext)):
                kb, ib = ext[b]
                sb = set(kb)
                ca = [k for k in ka if k in sb]
                cb = [k for k in kb if k in sa]
                pos = _first_diff(ca, cb)
                if pos < min(len(ca), len(cb)):
                    self.add("agreement", f"in ring {ring_id} (with its transitional deliveries) {fmt_inst(ia)} "
                             f"and {fmt_inst(ib)} order {fmt_key(ca[pos])} and {fmt_key(cb[pos])} differently",
                             (ia, ib))
                    return

    def check_virtual_synchrony(self) -> None:
        groups: dict[tuple[Any, Any], list[tuple[Instance, Segment, Segment, Segment]]] = defaultdict(list)
        for inst, view in self.views.items():
            for k, seg in enumerate(view.segments):
                if seg.kind != "R":
                    continue
                _keys, trans, nxt = self._extended(inst, k)
                if trans is not None and nxt is not None:
                    groups[(seg.cc.ring_id, nxt.cc.ring_id)].append((inst, seg, trans, nxt))
        for (r_old, r_new), moves in groups.items():
            for a in range(len(moves)):
                ia, ra, ta, _na = moves[a]
                for b in range(a + 1, len(moves)):
                    ib, rb, tb, _nb = moves[b]
                    if ia[0] not in tb.cc.members or ib[0] not in ta.cc.members:
                        self.add("virtual_synchrony", f"{fmt_inst(ia)} and {fmt_inst(ib)} both moved from "
                                 f"{r_old} to {r_new} but transitional sets are {ta.cc.members} and "
                                 f"{tb.cc.members}", (ia, ib), ta.t_ns)
                        continue
                    if ta.cc.members != tb.cc.members:
                        self.add("virtual_synchrony", f"{fmt_inst(ia)} and {fmt_inst(ib)} moved together from "
                                 f"{r_old} to {r_new} with different transitional sets {ta.cc.members} and "
                                 f"{tb.cc.members}", (ia, ib), ta.t_ns)
                    for label, xa, xb in (("regular", ra, rb), ("transitional", ta, tb)):
                        sa, sb = set(xa.keys), set(xb.keys)
                        if sa != sb:
                            only_a = sorted(sa - sb)[:3]
                            only_b = sorted(sb - sa)[:3]
                            self.add("virtual_synchrony", f"{fmt_inst(ia)} and {fmt_inst(ib)} moved together from "
                                     f"{r_old} to {r_new} but delivered different sets in the {label} "
                                     f"configuration: only {fmt_inst(ia)}: {[fmt_key(x) for x in only_a]}, "
                                     f"only {fmt_inst(ib)}: {[fmt_key(x) for x in only_b]}", (ia, ib), ta.t_ns)
            installed_new = {i[0]: (i, k) for i, k in self.installs.get(r_new, [])}
            for inst, _r, trans, _n in moves:
                for member in trans.cc.members:
                    other = installed_new.get(member)
                    if other is None:
                        continue
                    oi, ok = other
                    segs = self.views[oi].segments
                    prev_reg = segs[ok - 2].cc.ring_id if ok >= 2 else None
                    if prev_reg != r_old:
                        self.add("virtual_synchrony", f"{fmt_inst(inst)}'s transitional set {trans.cc.members} into "
                                 f"{r_new} lists node {member}, but {fmt_inst(oi)} came from {prev_reg}, not "
                                 f"{r_old}", (inst, oi), trans.t_ns)

    # reliability, safe, liveness --------------------------------------------------------------
    def _where_delivered(self, inst: Instance) -> dict[Key, tuple[int, Any]]:
        out: dict[Key, tuple[int, Any]] = {}
        segs = self.views[inst].segments
        reg_idx = -1
        for i, seg in enumerate(segs):
            if seg.kind == "R":
                reg_idx = i
            for k in seg.keys:
                out[k] = (reg_idx, segs[reg_idx].cc.ring_id if reg_idx >= 0 else None)
        return out

    def _next_regular(self, inst: Instance, idx: int) -> Any:
        nxt = self._extended(inst, idx)[2]
        return None if nxt is None else nxt.cc.ring_id

    def check_reliability(self) -> None:
        alive = self.rec.alive_at_end
        by_sender: dict[Instance, list[Key]] = defaultdict(list)
        for key, acc in self.rec.accepted.items():
            by_sender[(acc.node, acc.incarnation)].append(key)
        for inst in sorted(alive):
            delivered = self.views[inst].delivered
            missing = [k for k in by_sender.get(inst, []) if k not in delivered]
            if missing:
                acc = self.rec.accepted[missing[0]]
                self.add("reliability", f"{fmt_inst(inst)} is alive but never delivered {len(missing)} of its own "
                         f"accepted messages, first {fmt_key(missing[0])} submitted at {acc.t_ns / MS:.3f} ms",
                         (inst,), acc.t_ns)
        where = {inst: self._where_delivered(inst) for inst in alive}
        for s in sorted(alive):
            for key in by_sender.get(s, []):
                loc = where[s].get(key)
                if loc is None or loc[1] is None:
                    continue
                s_idx, ring = loc
                s_next = self._next_regular(s, s_idx)
                for j, j_idx in self.installs.get(ring, []):
                    if j == s or j not in alive or self._next_regular(j, j_idx) != s_next:
                        continue
                    if key not in self.views[j].delivered:
                        self.add("reliability", f"{fmt_inst(s)} delivered its {fmt_key(key)} in ring {ring}, "
                                 f"{fmt_inst(j)} was in that ring, left it the same way (to {s_next}) and is alive, "
                                 "but never delivered it", (s, j))
                        return

    def check_safe(self) -> None:
        if not self.rec.frames_tracked:
            return
        logs = self.rec.logs
        accepted = self.rec.accepted
        for inst, view in self.views.items():
            segs = view.segments
            for i, seg in enumerate(segs):
                if seg.kind == "R":
                    installers = {j[0]: j for j, _k in self.installs.get(seg.cc.ring_id, [])}
                else:
                    installers = self._transitional_peers(inst, i)
                for key, t in zip(seg.keys, seg.times):
                    if seg.kind == "R" and accepted[key].guarantee != 3:
                        continue
                    for member in seg.cc.members:
                        j = installers.get(member)
                        if j is None:
                            continue  # that member never installed it: nothing observable
                        got = logs[j].received_at.get(key)
                        if got is None or got > t:
                            what = "SAFE message" if seg.kind == "R" else "message"
                            self.add("safe", f"{fmt_inst(inst)} delivered {what} {fmt_key(key)} in the "
                                     f"{_kind(seg)} configuration {seg.cc.ring_id} {seg.cc.members} before member "
                                     f"{fmt_inst(j)} had received it", (inst, j), t)
                            return

    def _transitional_peers(self, inst: Instance, t_idx: int) -> dict[int, Instance]:
        """Instances that went through the same transitional change (same old and new ring)."""
        segs = self.views[inst].segments
        if t_idx < 1 or t_idx + 1 >= len(segs):
            return {}
        old, new = segs[t_idx - 1].cc.ring_id, segs[t_idx + 1].cc.ring_id
        peers: dict[int, Instance] = {}
        for j, k in self.installs.get(new, []):
            if k >= 2 and self.views[j].segments[k - 2].cc.ring_id == old:
                peers[j[0]] = j
        return peers

    def check_liveness(self) -> None:
        deadline = self.rec.liveness_deadline_ns
        if deadline is None:
            return
        alive = sorted(self.rec.alive_at_end)
        if not alive:
            return
        live_nodes = tuple(sorted(i[0] for i in alive))
        finals: dict[Instance, Segment] = {}
        for inst in alive:
            segs = self.views[inst].segments
            last = segs[-1] if segs else None
            if last is None or last.kind != "R" or tuple(last.cc.members) != live_nodes:
                got = "no configuration" if last is None else f"{_kind(last)} {last.cc.ring_id} {last.cc.members}"
                self.add("liveness", f"faults stopped at {self.rec.heal_ns / MS:.0f} ms but {fmt_inst(inst)} ends in "
                         f"{got}, not one ring of the live nodes {live_nodes}", (inst,), self.rec.end_ns)
                return
            if last.t_ns > deadline:
                self.add("liveness", f"{fmt_inst(inst)} installed the final ring {last.cc.ring_id} at "
                         f"{last.t_ns / MS:.0f} ms, after the liveness deadline {deadline / MS:.0f} ms", (inst,),
                         last.t_ns)
            finals[inst] = last
        rings = {seg.cc.ring_id for seg in finals.values()}
        if len(rings) > 1:
            self.add("liveness", f"live instances end in different rings {sorted(rings)}", tuple(alive))
            return
        ref_inst = alive[0]
        for inst in alive[1:]:
            if finals[inst].keys != finals[ref_inst].keys:
                a, b = finals[ref_inst].keys, finals[inst].keys
                self.add("liveness", f"in the final ring {fmt_inst(ref_inst)} delivered {len(a)} messages and "
                         f"{fmt_inst(inst)} {len(b)}, not the same sequence", (ref_inst, inst))
                return

    # driver -----------------------------------------------------------------------------------
    def run(self) -> list[Violation]:
        for err in self.rec.errors:
            self.add("simulator", err)
        self.check_configs()
        self.check_agreement()
        self.check_virtual_synchrony()
        self.check_safe()
        if not self.rec.errors:  # a run cut short by a simulator error cannot be judged on progress
            self.check_liveness()  # first: a ring that never settles explains undelivered messages
            self.check_reliability()
        return self.violations

    def context(self, v: Violation, last: int = 8) -> str:
        """The last events of the instances a violation names (up to its time), for the failure message."""
        lines = []
        for inst in v.instances:
            log = self.rec.logs.get(inst)
            if log is None:
                continue
            evs = [e for e in log.events if v.t_ns is None or e[0] <= v.t_ns]
            lines.append(f"  last events of {fmt_inst(inst)}:")
            lines.extend(f"    {describe_event(e)}" for e in evs[-last:])
            lines.extend(f"    {t / MS:10.3f} ms  core {lvl}: {text}" for t, lvl, text in list(log.core_log)[-4:])
        return "\n".join(lines)


def _first_diff(a: list[Key], b: list[Key]) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def _kind(seg: Segment) -> str:
    return "regular" if seg.kind == "R" else "transitional"


def describe_event(e: tuple[int, str, Any]) -> str:
    t, kind, d = e
    head = f"{t / MS:10.3f} ms  "
    if kind == "C":
        tp = "REGULAR" if d.type == ConfigType.REGULAR else "TRANSITIONAL"
        return head + f"{tp} {d.ring_id} members={list(d.members)} left={list(d.left)} joined={list(d.joined)}"
    if kind == "D":
        err = f" ERROR {d.error}" if d.error else ""
        return head + f"deliver {fmt_key(d.key)} ring={d.ring_id} g={d.guarantee} {d.size} B{err}"
    if kind == "A":
        return head + f"accepted {fmt_key(d)}"
    return head + {"S": "start", "X": "CRASH", "L": "leave"}.get(kind, kind)


def check(record: RunRecord) -> list[Violation]:
    """All violations of a run (empty = every guarantee held)."""
    return Checker(record).run()


def detection_times_ms(record: RunRecord) -> list[float]:
    """For each crash: ms until the first surviving peer that had the node in its ring installs a config without it."""
    out: list[float] = []
    for (node, _inc), t_crash in record.crashes:
        best: int | None = None
        for inst, log in record.logs.items():
            if inst[0] == node:
                continue
            had_it = False
            for t, kind, d in log.events:
                if kind in "XL":
                    break
                if kind != "C":
                    continue
                if t <= t_crash:
                    if d.type == ConfigType.REGULAR:
                        had_it = node in d.members
                    continue
                if had_it and node not in d.members:
                    best = t if best is None else min(best, t)
                    break
        if best is not None:
            out.append((best - t_crash) / MS)
    return out


def distribution(values: list[float]) -> dict[str, float | None]:
    """min / median / max (None when empty)."""
    if not values:
        return {"min": None, "p50": None, "max": None}
    return {"min": round(min(values), 1), "p50": round(statistics.median(values), 1), "max": round(max(values), 1)}
