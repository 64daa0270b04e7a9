"""A virtual-time cluster of Totem cores: one heap of (time, seq, event), no sleeping, one seed.

The simulator owns the clock, the network, the timers and the clients. It drives each node's
core through the sans-IO contract of ``pycorosync.engine.totem.api`` and records, per process
instance (node id, incarnation), everything the checker needs: starts, configuration changes,
deliveries, accepted submits, crashes and clean leaves.
"""

from __future__ import annotations

import heapq
import random
import traceback
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pycorosync.engine.totem.api import (
    ConfigChange,
    ConfigType,
    Deliver,
    DeliverFrame,
    LogEvent,
    MessageTooBig,
    QueueFull,
    SendFrame,
)
from pycorosync.engine.totem.wire import MCAST
from tests.sim.network import MS, Network
from tests.sim.workload import WorkloadParams, decode_payload, draw_guarantee, draw_size, encode_payload, keys_in_frame

Instance = tuple[int, int]  # (node id, incarnation)

_FRAME, _TIMER, _CLIENT, _CALL = 0, 1, 2, 3


class Core(Protocol):
    """The sans-IO TotemCore contract the simulator drives."""

    def start(self, now_ns: int) -> list[Any]: ...
    def on_frame(self, now_ns: int, data: bytes) -> list[Any]: ...
    def on_timer(self, now_ns: int) -> list[Any]: ...
    def submit(self, now_ns: int, payload: bytes, guarantee: Any) -> list[Any]: ...
    def leave(self, now_ns: int) -> list[Any]: ...
    def next_deadline_ns(self) -> int | None: ...


# (node_id, nodelist, seed, ring_seq, incarnation) -> core
CoreFactory = Callable[[int, list[int], int, int, int], Core]


@dataclass(frozen=True)
class DeliverRecord:
    """One delivery as the checker sees it (the payload itself is not kept)."""

    ring_id: Any
    key: tuple[int, int, int] | None
    guarantee: int
    sender: int
    msg_id: int
    size: int
    payload_guarantee: int
    error: str | None


@dataclass(frozen=True)
class Accepted:
    """A submit the core accepted: it must not be lost while its submitter lives."""

    node: int
    incarnation: int
    t_ns: int
    size: int
    guarantee: int


@dataclass
class InstanceLog:
    """Everything one process instance did, in order: (t_ns, kind, data).

    kinds: 'S' start, 'C' ConfigChange, 'D' DeliverRecord, 'A' accepted key, 'X' crash, 'L' clean leave.
    """

    node: int
    incarnation: int
    events: list[tuple[int, str, Any]] = field(default_factory=list)
    core_log: deque[tuple[int, str, str]] = field(default_factory=lambda: deque(maxlen=12))
    received_at: dict[tuple[int, int, int], int] = field(default_factory=dict)  # first frame carrying a key


@dataclass
class SimStats:
    """Client and core counters of one run."""

    submitted: int = 0
    accepted: int = 0
    queue_full: int = 0
    too_big: int = 0
    delivered: int = 0
    core_calls: int = 0
    events: int = 0


@dataclass
class RunRecord:
    """What the checker reads after a run."""

    nodelist: list[int]
    logs: dict[Instance, InstanceLog]
    accepted: dict[tuple[int, int, int], Accepted]
    alive_at_end: set[Instance]
    crashes: list[tuple[Instance, int]]  # (instance, t_ns) of crashes (not clean leaves)
    end_ns: int
    heal_ns: int | None  # faults stopped at this time (None: no fault phase)
    liveness_deadline_ns: int | None  # the final ring must be installed by then
    frames_tracked: bool
    errors: list[str]  # simulator-level failures (a core raised, event budget exhausted)
    stats: SimStats
    net_stats: Any


class _Node:
    __slots__ = ("alive", "core", "counter", "frame_limit", "incarnation", "log", "node_id", "paused_until", "pending",
                 "retry_armed", "ring_seq", "timer_at")

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.incarnation = -1
        self.core: Core | None = None
        self.alive = False
        self.timer_at: int | None = None
        self.pending: deque[tuple[int, int]] = deque()  # (size, guarantee) the client still has to submit
        self.counter = 0  # per-incarnation accepted-submit counter (the payload's identity)
        self.ring_seq = 0  # what the node persists across restarts (corosync's ringid file)
        self.log: InstanceLog | None = None
        self.retry_armed = False  # one QueueFull retry pending at a time
        self.paused_until = 0  # not scheduled until then: what reaches it waits (a stalled process)
        self.frame_limit = 0  # the largest multicast frame one netmtu datagram carries (0: no limit known)


class Simulator:
    """Runs N cores on a simulated network in virtual time; all randomness from ``seed``."""

    def __init__(
        self,
        core_factory: CoreFactory,
        nodelist: list[int],
        seed: int,
        workload: WorkloadParams | None = None,
        track_frames: bool = True,
        max_events: int = 1_000_000,
        **net_kwargs: Any,
    ) -> None:
        self.core_factory = core_factory
        self.nodelist = sorted(nodelist)
        self.seed = seed
        self.now_ns = 0
        self._heap: list[tuple[int, int, int, Any, Any, Any]] = []
        self._seq = 0
        self.net = Network(random.Random(f"{seed}/net"), self.nodelist, self._frame_at, **net_kwargs)
        self.client_rng = random.Random(f"{seed}/client")
        self.workload = workload or WorkloadParams()
        self.workload_on = False
        self.track_frames = track_frames
        self.max_events = max_events
        self.nodes: dict[int, _Node] = {n: _Node(n) for n in self.nodelist}
        self.logs: dict[Instance, InstanceLog] = {}
        self.accepted: dict[tuple[int, int, int], Accepted] = {}
        self.crashes: list[tuple[Instance, int]] = []
        self.errors: list[str] = []
        self.stats = SimStats()
        self.heal_ns: int | None = None
        self.liveness_deadline_ns: int | None = None
        self.last_token_receiver: int | None = None  # node that last got a unicast frame (token holder guess)
        self._busy: Counter[tuple[str, Any]] = Counter()
        self.observers: list[Callable[[Simulator, int, _Node], None]] = []  # called after each core call

    # event queue --------------------------------------------------------------------------
    def _push(self, t_ns: int, kind: int, a: Any, b: Any = None, c: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t_ns, self._seq, kind, a, b, c))

    def _frame_at(self, t_ns: int, dst: int, src: int, data: bytes) -> None:
        self._push(t_ns, _FRAME, dst, src, data)

    def call_at(self, t_ns: int, fn: Callable[[], None]) -> None:
        """Run ``fn()`` at virtual time t_ns (fault injection, scenario steps)."""
        self._push(max(t_ns, self.now_ns), _CALL, fn)

    def run_until(self, t_end_ns: int) -> None:
        """Process every event up to t_end_ns, then leave the clock there."""
        heap = self._heap
        nodes = self.nodes
        stats = self.stats
        pop = heapq.heappop
        while heap and heap[0][0] <= t_end_ns and not self.errors:
            t, _s, kind, a, b, c = pop(heap)
            self.now_ns = t
            stats.events += 1
            if stats.events > self.max_events - 5000:
                self._busy[(("frame", "timer", "client", "call")[kind], a if kind != _CALL else None)] += 1
                if stats.events > self.max_events:
                    top = ", ".join(f"{k} to node {n}: {c}" for (k, n), c in self._busy.most_common(4))
                    self.errors.append(f"event budget of {self.max_events} exhausted at {t / MS:.3f} ms (core busy "
                                       f"loop?); the last 5000 events: {top}")
                    break
            if kind != _CALL:
                node = nodes.get(a)
                if node is not None and node.paused_until > t:
                    self._push(node.paused_until, kind, a, b, c)  # in arrival order, once it runs again
                    continue
            if kind == _FRAME:
                node = nodes.get(a)
                if node is not None and node.alive:
                    if b != a and self.track_frames:
                        self._track(node, t, c)
                    self._call(node, "on_frame", c)
            elif kind == _TIMER:
                node = nodes[a]
                if node.alive and node.incarnation == b and node.timer_at == c:
                    node.timer_at = None
                    self._call(node, "on_timer")
            elif kind == _CLIENT:
                node = nodes[a]
                if c:
                    node.retry_armed = False
                if node.alive and node.incarnation == b:
                    self._client_tick(node, retry=c)
            else:
                a()
        if not self.errors:
            self.now_ns = max(self.now_ns, t_end_ns)

    def _track(self, node: _Node, t: int, data: bytes) -> None:
        keys = keys_in_frame(data)
        if keys:
            rx = node.log.received_at  # type: ignore[union-attr]
            for k in keys:
                if k not in rx:
                    rx[k] = t

    # driving cores ------------------------------------------------------------------------
    def _call(self, node: _Node, method: str, *args: Any) -> None:
        self.stats.core_calls += 1
        try:
            actions = getattr(node.core, method)(self.now_ns, *args)
        except Exception:
            self.errors.append(
                f"node {node.node_id} core.{method} raised at {self.now_ns / MS:.3f} ms:\n{traceback.format_exc()}"
            )
            return
        self._apply(node, actions)

    def _apply(self, node: _Node, actions: list[Any]) -> None:
        now = self.now_ns
        log = node.log
        assert log is not None
        for act in actions:
            tp = type(act)
            if tp is SendFrame:
                limit = node.frame_limit
                if limit and len(act.data) > limit and act.data[2] == MCAST:
                    # Totem packs multicast frames to what one netmtu datagram carries; the UDP transport
                    # would send a longer one whole and leave it to IP fragmentation (as it does for the
                    # commit token of a large cluster), InfiniBand would drop it: either way a packing bug
                    self.errors.append(f"node {node.node_id} sent a multicast frame of {len(act.data)} bytes at "
                                       f"{now / MS:.3f} ms; one netmtu datagram carries at most {limit}")
                    return
                if act.dest is not None and act.dest != node.node_id:
                    self.last_token_receiver = act.dest
                self.net.send(now, node.node_id, act.dest, act.data)
            elif tp is Deliver or tp is DeliverFrame:
                for d in (act,) if tp is Deliver else act.messages():
                    self.stats.delivered += 1
                    dec = decode_payload(d.payload)
                    log.events.append(
                        (
                            now,
                            "D",
                            DeliverRecord(
                                d.ring_id, dec.key, int(d.guarantee), d.sender, d.msg_id, dec.size, dec.guarantee,
                                dec.error,
                            ),
                        )
                    )
            elif tp is ConfigChange:
                log.events.append((now, "C", act))
                if act.type == ConfigType.REGULAR:
                    node.ring_seq = max(node.ring_seq, act.ring_id.seq)
            elif tp is LogEvent:
                log.core_log.append((now, act.level, act.text))
            else:
                self.errors.append(f"node {node.node_id} core returned an unknown action {act!r}")
        if node.alive and node.core is not None:
            d = node.core.next_deadline_ns()
            if d is not None and d != node.timer_at:
                node.timer_at = d
                self._push(max(d, now), _TIMER, node.node_id, node.incarnation, d)
        for obs in self.observers:
            obs(self, now, node)

    # lifecycle ------------------------------------------------------------------------------
    def pause(self, node_id: int, duration_ns: int) -> None:
        """The node's process is not scheduled for ``duration_ns``: frames, timers and its client wait, then
        run in one burst in their order (a stalled or starved process; its socket buffer keeps the frames)."""
        node = self.nodes[node_id]
        node.paused_until = max(node.paused_until, self.now_ns + duration_ns)

    def start(self, node_id: int) -> None:
        """Start (or restart) a node: a new core, incarnation + 1, with the ring seq it persisted."""
        node = self.nodes[node_id]
        if node.alive:
            return
        node.incarnation += 1
        inst = (node_id, node.incarnation)
        node.log = self.logs[inst] = InstanceLog(node_id, node.incarnation)
        node.log.events.append((self.now_ns, "S", None))
        core_seed = random.Random(f"{self.seed}/core/{node_id}/{node.incarnation}").getrandbits(63)
        try:
            node.core = self.core_factory(node_id, list(self.nodelist), core_seed, node.ring_seq, node.incarnation)
        except Exception:
            self.errors.append(f"node {node_id}: creating the core raised:\n{traceback.format_exc()}")
            return
        cfg = getattr(node.core, "cfg", None)
        node.frame_limit = int(getattr(cfg, "frame_payload_bytes", 0))
        node.alive = True
        node.timer_at = None
        node.counter = 0
        node.pending.clear()
        node.retry_armed = False
        self._call(node, "start")
        self._push(self.now_ns + self._client_gap(), _CLIENT, node_id, node.incarnation, False)

    def _persist_ring_seq(self, node: _Node) -> None:
        # the runtime writes the core's max_ring_seq whenever it grows; without it, the highest installed seq
        node.ring_seq = max(node.ring_seq, int(getattr(node.core, "max_ring_seq", 0) or 0))

    def crash(self, node_id: int) -> None:
        """The node's process dies: nothing more in or out, its clients' unsent messages are gone."""
        node = self.nodes[node_id]
        if not node.alive:
            return
        self._persist_ring_seq(node)
        node.alive = False
        node.pending.clear()
        assert node.log is not None
        node.log.events.append((self.now_ns, "X", None))
        self.crashes.append(((node_id, node.incarnation), self.now_ns))

    def leave(self, node_id: int) -> None:
        """Clean leave (like `corosync-cfgtool -H`): the core announces it, then the process stops."""
        node = self.nodes[node_id]
        if not node.alive:
            return
        self._call(node, "leave")
        self._persist_ring_seq(node)
        node.alive = False
        node.pending.clear()
        assert node.log is not None
        node.log.events.append((self.now_ns, "L", None))

    def live_nodes(self) -> list[int]:
        return [n for n, node in self.nodes.items() if node.alive]

    # clients ----------------------------------------------------------------------------------
    def _client_gap(self) -> int:
        return int(self.client_rng.expovariate(1.0 / self.workload.mean_interval_ms) * MS) + 1

    def enqueue(self, node_id: int, size: int, guarantee: int, count: int = 1) -> None:
        """Queue messages at a node's client and try to submit them now."""
        node = self.nodes[node_id]
        if not node.alive:
            return
        node.pending.extend([(size, guarantee)] * count)
        self._drain(node)

    def _client_tick(self, node: _Node, retry: bool) -> None:
        rng = self.client_rng
        wp = self.workload
        if self.workload_on and not retry:
            if rng.random() < wp.burst_prob:
                g = draw_guarantee(rng, wp)
                for _ in range(rng.randint(wp.burst_min, wp.burst_max)):
                    node.pending.append((rng.randint(1, 1200), g))
            else:
                node.pending.append((draw_size(rng, wp), draw_guarantee(rng, wp)))
        self._drain(node)
        if not retry:
            self._push(self.now_ns + self._client_gap(), _CLIENT, node.node_id, node.incarnation, False)

    def _drain(self, node: _Node) -> None:
        """Submit queued client messages until the core pushes back; QueueFull = retry later."""
        stats = self.stats
        while node.pending and node.alive:
            size, g = node.pending[0]
            payload = encode_payload(node.node_id, node.incarnation, node.counter, g, size)
            stats.submitted += 1
            self.stats.core_calls += 1
            try:
                actions = node.core.submit(self.now_ns, payload, g)  # type: ignore[union-attr]
            except QueueFull:
                stats.queue_full += 1
                if not node.retry_armed:
                    node.retry_armed = True
                    lo, hi = self.workload.retry_ms
                    self._push(self.now_ns + int(self.client_rng.uniform(lo, hi) * MS), _CLIENT, node.node_id,
                               node.incarnation, True)
                return
            except MessageTooBig:
                stats.too_big += 1
                node.pending.popleft()
                continue
            except Exception:
                self.errors.append(f"node {node.node_id} core.submit raised:\n{traceback.format_exc()}")
                return
            node.pending.popleft()
            key = (node.node_id, node.incarnation, node.counter)
            node.counter += 1
            stats.accepted += 1
            self.accepted[key] = Accepted(node.node_id, node.incarnation, self.now_ns, len(payload), g)
            if self.track_frames:
                node.log.received_at[key] = self.now_ns  # type: ignore[union-attr]
            node.log.events.append((self.now_ns, "A", key))  # type: ignore[union-attr]
            self._apply(node, actions)

    # result ----------------------------------------------------------------------------------
    def record(self) -> RunRecord:
        """Freeze what happened for the checker."""
        alive = {(n.node_id, n.incarnation) for n in self.nodes.values() if n.alive}
        return RunRecord(
            nodelist=list(self.nodelist),
            logs=self.logs,
            accepted=self.accepted,
            alive_at_end=alive,
            crashes=list(self.crashes),
            end_ns=self.now_ns,
            heal_ns=self.heal_ns,
            liveness_deadline_ns=self.liveness_deadline_ns,
            frames_tracked=self.track_frames,
            errors=list(self.errors),
            stats=self.stats,
            net_stats=self.net.stats,
        )
