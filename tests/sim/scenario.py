"""Scenario scripts: a readable list of events in, expected results out (etcd raft's data-driven style).

One statement per line; ``#`` starts a comment. Times: ``500ms``, ``2s``, ``250us``. Sizes: ``100B``,
``4KiB``, ``2MiB``. Node lists: ``1,2,3`` or ``1-3``. A statement without ``at`` happens at the
current script time; ``run D`` lets D of virtual time pass.

Setup:       ``nodes 1-5`` (nodelist; default: every node a statement names)   ``seed 7``   ``core standin``
             ``token 200ms`` (base token timeout of the sim config)
Events:      ``start 1 2 3``   ``crash 2``   ``crash token_holder``   ``restart 2``   ``leave 3``
             ``partition 1,2 | 3,4``   ``heal``   ``lossy 1-2 30%`` (both ways)   ``lossy 1->2 30%``
             ``block 1->2`` (1 no longer reaches 2)   ``recv_only 4``   ``drop_token 2`` (next 2 tokens)
             ``pause 2 600ms`` (node 2 not scheduled: what reaches it waits, then comes in one burst)
             ``send 1 agreed 100B x10``   ``send all safe 2MiB``   ``traffic on|off`` (random workload)
             ``at 500ms <event>``   ``when 2 enters recovery <event>`` (once node 2's core state name matches)
             ``run 5s``
Expect:      ``expect config 1,2,3``      final regular membership of every live node, one ring id
             ``expect one_ring``          every live node ends in one regular ring made of exactly the live nodes
             ``expect delivered all``     every message accepted by a live instance delivered at every live one
             ``expect delivered after 5s``  the same for messages accepted at or after 5 s
             ``expect transitional 1,3 at 1``   node 1 (its live incarnation) saw that transitional set
             ``expect regular 1,2 at 1``  likewise for a regular configuration
             ``expect detect <= 900ms``   every crash was noticed by a peer within that time
Expectations are judged on the whole run, after the last statement. The EVS checker always runs
too; any violation fails the scenario.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycorosync.engine.totem.api import ConfigType, Guarantee
from tests.sim.checker import Checker, Violation, detection_times_ms, fmt_inst
from tests.sim.cluster import Simulator
from tests.sim.cores import SIM_TOKEN_MS, is_token_frame, make_factory
from tests.sim.network import MS

_TIME = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s)$")
_SIZE = re.compile(r"^(\d+)(B|KiB|MiB)$")


def _each(fn: Callable[[int], None], nodes: list[int]) -> Callable[[], None]:
    def apply() -> None:
        for n in nodes:
            fn(n)

    return apply


class ScenarioError(ValueError):
    """A script line that cannot be understood: names the file and line."""


def parse_time_ns(text: str) -> int:
    m = _TIME.match(text)
    if not m:
        raise ValueError(f"bad time {text!r} (e.g. 500ms, 2s, 250us)")
    return int(float(m.group(1)) * {"us": 1_000, "ms": MS, "s": 1_000 * MS}[m.group(2)])


def parse_size(text: str) -> int:
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"bad size {text!r} (e.g. 100B, 4KiB, 2MiB)")
    return int(m.group(1)) * {"B": 1, "KiB": 1024, "MiB": 1024 * 1024}[m.group(2)]


def parse_nodes(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


@dataclass
class Line:
    number: int
    words: list[str]


@dataclass
class ScenarioOutcome:
    """Result of a scenario: the checker's violations plus failed expectations."""

    name: str
    failures: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    detect_ms: list[float] = field(default_factory=list)
    checker: Checker | None = None

    @property
    def ok(self) -> bool:
        return not self.failures and not self.violations

    def report(self) -> str:
        lines = [f"scenario {self.name}:"]
        lines += [f"  expectation failed: {f}" for f in self.failures]
        lines += [f"  violation: {v}" for v in self.violations[:5]]
        if self.violations and self.checker is not None:
            lines.append(self.checker.context(self.violations[0]))
        if self.checker is not None:
            for inst, log in sorted(self.checker.rec.logs.items()):
                ccs = [f"{e[0] / MS:.0f}ms {'R' if e[2].type == ConfigType.REGULAR else 'T'}{list(e[2].members)}"
                       for e in log.events if e[1] == "C"]
                lines.append(f"  {fmt_inst(inst)} configurations: {', '.join(ccs[-6:])}")
        return "\n".join(lines)


class Scenario:
    """A parsed script, runnable on a fresh simulator."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.lines: list[Line] = []
        for i, raw in enumerate(text.splitlines(), start=1):
            words = raw.split("#", 1)[0].split()
            if words:
                self.lines.append(Line(i, words))
        self.seed = 1
        self.core = "real"
        self.token_ms = SIM_TOKEN_MS
        self.nodelist: list[int] = []
        self._setup()

    def _err(self, line: Line, text: str) -> ScenarioError:
        return ScenarioError(f"{self.name}:{line.number}: {text}: {' '.join(line.words)}")

    def _setup(self) -> None:
        named: set[int] = set()
        for line in self.lines:
            w = line.words
            try:
                if w[0] == "seed":
                    self.seed = int(w[1])
                elif w[0] == "core":
                    self.core = w[1]
                elif w[0] == "token":
                    self.token_ms = parse_time_ns(w[1]) // MS
                elif w[0] == "nodes":
                    self.nodelist = parse_nodes(w[1])
                elif w[0] in ("start", "restart"):
                    named.update(int(x) for x in w[1:])
            except (IndexError, ValueError) as exc:
                raise self._err(line, str(exc)) from None
        if not self.nodelist:
            self.nodelist = sorted(named)
        if not self.nodelist:
            raise ScenarioError(f"{self.name}: no nodes (add `nodes 1-3` or `start 1 2 3`)")

    @classmethod
    def from_file(cls, path: Path) -> Scenario:
        return cls(path.name, path.read_text())

    # running --------------------------------------------------------------------------------
    def run(self) -> ScenarioOutcome:
        factory = make_factory(self.core, len(self.nodelist), **({"token_ms": self.token_ms}
                                                                 if self.core == "real" else {}))
        sim = Simulator(factory, self.nodelist, self.seed,
                        token_frame=is_token_frame if self.core == "real" else None)
        sim.workload_on = False
        outcome = ScenarioOutcome(self.name)
        expects: list[Line] = []
        cursor = 0
        for line in self.lines:
            w = line.words
            if w[0] in ("seed", "core", "nodes", "token"):
                continue
            if w[0] == "expect":
                expects.append(line)
                continue
            try:
                if w[0] == "run":
                    cursor += parse_time_ns(w[1])
                    sim.run_until(cursor)
                elif w[0] == "at":
                    sim.call_at(parse_time_ns(w[1]), self._event(sim, line, w[2:]))
                elif w[0] == "when":
                    self._when(sim, line, w)
                else:
                    sim.call_at(cursor, self._event(sim, line, w))
            except (IndexError, ValueError) as exc:
                raise self._err(line, str(exc)) from None
        sim.run_until(cursor)
        record = sim.record()
        checker = Checker(record)
        outcome.checker = checker
        outcome.violations = checker.run()
        outcome.detect_ms = detection_times_ms(record)
        for line in expects:
            try:
                failure = self._expect(checker, outcome, line.words[1:])
            except (IndexError, ValueError) as exc:
                raise self._err(line, str(exc)) from None
            if failure:
                outcome.failures.append(f"line {line.number} `{' '.join(line.words)}`: {failure}")
        return outcome

    def _when(self, sim: Simulator, line: Line, w: list[str]) -> None:
        # when <node> enters <state> <event...>
        node, state, action = int(w[1]), w[3].lower(), self._event(sim, line, w[4:])
        fired = [False]

        def observe(s: Simulator, now: int, n: Any) -> None:
            if fired[0] or n.node_id != node or not n.alive:
                return
            name = str(getattr(n.core, "state", "")).lower()
            if state in name:
                fired[0] = True
                s.call_at(now, action)

        sim.observers.append(observe)

    def _event(self, sim: Simulator, line: Line, w: list[str]) -> Callable[[], None]:
        op = w[0]
        net = sim.net
        if op == "start" or op == "restart":
            nodes = [int(x) for x in w[1:]]

            def start() -> None:
                for n in nodes:
                    if op == "restart":
                        sim.crash(n)  # no-op when it is already down
                    sim.start(n)

            return start
        if op == "crash":
            if w[1] == "token_holder":
                def crash_holder() -> None:
                    if sim.last_token_receiver is not None:
                        sim.crash(sim.last_token_receiver)
                return crash_holder
            return _each(sim.crash, [int(x) for x in w[1:]])
        if op == "leave":
            return _each(sim.leave, [int(x) for x in w[1:]])
        if op == "partition":
            groups = [parse_nodes(g) for g in " ".join(w[1:]).split("|")]
            return lambda: net.partition(groups)
        if op == "heal":
            def heal() -> None:
                net.heal()
                sim.heal_ns = sim.now_ns
            return heal
        if op == "lossy":
            pairs = self._pairs(w[1])
            rate = float(w[2].rstrip("%")) / 100.0

            def lossy() -> None:
                for a, b in pairs:
                    net.link(a, b).loss = rate
            return lossy
        if op == "block":
            pairs = self._pairs(w[1])

            def block() -> None:
                for a, b in pairs:
                    net.link(a, b).blocked = True
            return block
        if op == "recv_only":
            nodes = [int(x) for x in w[1:]]
            return lambda: net.recv_only.update(nodes)
        if op == "pause":
            who, span = int(w[1]), parse_time_ns(w[2])
            return lambda: sim.pause(who, span)
        if op == "drop_token":
            n = int(w[1]) if len(w) > 1 else 1

            def drop() -> None:
                net.drop_tokens += n
            return drop
        if op == "traffic":
            on = w[1] == "on"

            def traffic() -> None:
                sim.workload_on = on
            return traffic
        if op == "send":
            who, g_name, size = w[1], w[2].upper(), parse_size(w[3])
            count = int(w[4][1:]) if len(w) > 4 else 1
            g = int(Guarantee[g_name])

            def send() -> None:
                targets = sim.live_nodes() if who == "all" else [int(who)]
                for n in targets:
                    sim.enqueue(n, size, g, count)
            return send
        raise ValueError(f"unknown event {op!r}")

    @staticmethod
    def _pairs(text: str) -> list[tuple[int, int]]:
        if "->" in text:
            a, b = text.split("->")
            return [(int(a), int(b))]
        a, b = text.split("-")
        return [(int(a), int(b)), (int(b), int(a))]

    # expectations ---------------------------------------------------------------------------
    def _expect(self, checker: Checker, outcome: ScenarioOutcome, w: list[str]) -> str | None:
        rec = checker.rec
        alive = sorted(rec.alive_at_end)
        if w[0] in ("config", "one_ring"):
            want = tuple(parse_nodes(w[1])) if w[0] == "config" else tuple(sorted(i[0] for i in alive))
            got = {}
            for inst in alive:
                segs = checker.views[inst].segments
                last = segs[-1] if segs else None
                if last is None or last.kind != "R":
                    return f"{fmt_inst(inst)} is not in a regular configuration at the end"
                got[inst] = (last.cc.ring_id, tuple(last.cc.members))
            bad = {fmt_inst(i): f"{r} {list(m)}" for i, (r, m) in got.items() if m != want}
            if bad or len({r for r, _m in got.values()}) > 1:
                return f"wanted every live node in one ring of {list(want)}, got {bad or got}"
            if tuple(sorted(i[0] for i in alive)) != want:
                return f"live nodes are {[i[0] for i in alive]}, not {list(want)}"
            return None
        if w[0] == "delivered":
            since = 0 if w[1] == "all" else parse_time_ns(w[2])
            keys = [k for k, a in rec.accepted.items() if (a.node, a.incarnation) in rec.alive_at_end
                    and a.t_ns >= since]
            if not keys:
                return "no message was accepted from a live node"
            for inst in alive:
                missing = [k for k in keys if k not in checker.views[inst].delivered]
                if missing:
                    return f"{fmt_inst(inst)} misses {len(missing)} of {len(keys)} messages, e.g. {missing[:3]}"
            return None
        if w[0] in ("transitional", "regular"):
            want = tuple(parse_nodes(w[1]))
            node = int(w[3])
            kind = "T" if w[0] == "transitional" else "R"
            insts = [i for i in alive if i[0] == node]
            if not insts:
                return f"node {node} is not alive at the end"
            seen = [tuple(s.cc.members) for s in checker.views[insts[0]].segments if s.kind == kind]
            return None if want in seen else f"node {node} saw {w[0]} sets {seen}, not {list(want)}"
        if w[0] == "detect":
            limit_ms = parse_time_ns(w[2]) / MS
            if not outcome.detect_ms:
                return "no crash was detected"
            worst = max(outcome.detect_ms)
            return None if worst <= limit_ms else f"a crash took {worst:.0f} ms to detect (> {limit_ms:.0f} ms)"
        raise ValueError(f"unknown expectation {w[0]!r}")
