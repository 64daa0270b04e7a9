"""A lossless in-process network in virtual time for driving several cores (tests, benchmarks, demos).

Frames are delivered in send order after ``latency_ns``; timers fire at their deadlines. Nothing here
reads a clock: ``now_ns`` is the pump's virtual time.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence

from pycorosync.engine.totem.api import Action, ConfigChange, Deliver, DeliverFrame, LogEvent, SendFrame
from pycorosync.engine.totem.config import TotemConfig
from pycorosync.engine.totem.core import TotemCore


class LoopbackNet:
    """N cores on a perfect network: every frame arrives, in order, after a fixed latency."""

    def __init__(self, config: TotemConfig, node_ids: Sequence[int], latency_ns: int = 50_000,
                 start: bool = True, ring_seqs: dict[int, int] | None = None) -> None:
        self.config = config
        self.node_ids = list(node_ids)
        self.latency_ns = latency_ns
        self.now_ns = 0
        self.cores: dict[int, TotemCore] = {}
        self.delivered: dict[int, list[Deliver]] = {}
        self.configs: dict[int, list[ConfigChange]] = {}
        self.logs: dict[int, list[LogEvent]] = {}
        self.frames_sent = 0
        self._events: list[tuple[int, int, int, bytes]] = []  # (at_ns, order, dest, data)
        self._order = 0
        self.up: set[int] = set()
        self.drop: Callable[[int, int | None, int, bytes], bool] | None = None  # (src, dest_spec, to, data)
        for n in self.node_ids:
            self.add_node(n, (ring_seqs or {}).get(n, 0), start=start)

    def add_node(self, node_id: int, ring_seq: int = 0, incarnation: int = 0, start: bool = True) -> TotemCore:
        """Create (or re-create, as a restart) a node's core."""
        core = TotemCore(self.config, node_id, self.node_ids, seed=node_id, ring_seq=ring_seq,
                         incarnation=incarnation)
        self.cores[node_id] = core
        self.delivered.setdefault(node_id, [])
        self.configs.setdefault(node_id, [])
        self.logs.setdefault(node_id, [])
        if start:
            self.start(node_id)
        return core

    def start(self, node_id: int) -> None:
        """Start a node's core now."""
        self.up.add(node_id)
        self.apply(node_id, self.cores[node_id].start(self.now_ns))

    def stop(self, node_id: int) -> None:
        """Crash a node: it no longer receives frames or timers."""
        self.up.discard(node_id)

    def apply(self, src: int, actions: Iterable[Action]) -> None:
        """Carry out a core's actions."""
        for a in actions:
            if isinstance(a, SendFrame):
                self.frames_sent += 1
                targets = self.node_ids if a.dest is None else [a.dest]
                for t in targets:
                    if t == src or (self.drop is not None and self.drop(src, a.dest, t, a.data)):
                        continue
                    self._order += 1
                    heapq.heappush(self._events, (self.now_ns + self.latency_ns, self._order, t, a.data))
            elif isinstance(a, Deliver):
                self.delivered[src].append(a)
            elif isinstance(a, DeliverFrame):
                self.delivered[src].extend(a.messages())
            elif isinstance(a, ConfigChange):
                self.configs[src].append(a)
            elif isinstance(a, LogEvent):
                self.logs[src].append(a)
            else:  # a SendRun: only a core with a frame writer makes one, and none here has one
                raise AssertionError(f"unexpected action {a!r}")

    def submit(self, node_id: int, payload: bytes, guarantee: int = 2) -> None:
        """A client of ``node_id`` submits a message."""
        self.apply(node_id, self.cores[node_id].submit(self.now_ns, payload, guarantee))

    def step(self) -> bool:
        """Advance to the next event (frame or timer); False if nothing is pending."""
        next_timer: tuple[int, int] | None = None
        for n in self.up:
            d = self.cores[n].next_deadline_ns()
            if d is not None and (next_timer is None or d < next_timer[0]):
                next_timer = (d, n)
        if self._events and (next_timer is None or self._events[0][0] <= next_timer[0]):
            at, _o, dest, data = heapq.heappop(self._events)
            self.now_ns = max(self.now_ns, at)
            if dest in self.up:
                self.apply(dest, self.cores[dest].on_frame(self.now_ns, data))
            return True
        if next_timer is None:
            return False
        self.now_ns = max(self.now_ns, next_timer[0])
        self.apply(next_timer[1], self.cores[next_timer[1]].on_timer(self.now_ns))
        return True

    def run_until(self, cond: Callable[[], bool], max_ns: int, max_steps: int = 10_000_000) -> bool:
        """Step until ``cond()`` holds; False if virtual time passed ``max_ns`` or the step budget ran out."""
        steps = 0
        while not cond():
            if self.now_ns > max_ns or steps >= max_steps or not self.step():
                return cond()
            steps += 1
        return True

    def run_for(self, duration_ns: int) -> None:
        """Step through ``duration_ns`` of virtual time."""
        end = self.now_ns + duration_ns
        self.run_until(lambda: False, end)

    def operational(self, nodes: Iterable[int] | None = None) -> bool:
        """Every given (default: every up) node is OPERATIONAL in one ring made of exactly those nodes."""
        ids = sorted(self.up if nodes is None else nodes)
        cores = [self.cores[n] for n in ids]
        return all(c.state == "OPERATIONAL" and list(c.members) == ids and c.ring_id == cores[0].ring_id
                   for c in cores)
