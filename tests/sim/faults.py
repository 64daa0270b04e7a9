"""Random fault injection for a seeded run: the fault kinds, and an injector active for one phase.

Each fault starts at a random moment of the fault phase and most undo themselves after a random
duration; at the heal moment every fault stops at once and the nodes planned to come back restart.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from tests.sim.cluster import Simulator
from tests.sim.network import MS

FAULT_KINDS = ("loss", "dup", "reorder", "delay", "partition", "crash", "restart", "leave", "asym", "token_loss",
               "recv_only", "pause")


def parse_faults(text: str) -> tuple[str, ...]:
    """'loss,dup' -> ('dup', 'loss'); 'all' -> every kind; '' or 'none' -> no fault."""
    kinds: set[str] = set()
    for part in text.split(","):
        part = part.strip()
        if part in ("", "none"):
            continue
        if part == "all":
            kinds.update(FAULT_KINDS)
        elif part in FAULT_KINDS:
            kinds.add(part)
        else:
            raise ValueError(f"unknown fault kind {part!r}; known: {', '.join(FAULT_KINDS)}, all")
    return tuple(sorted(kinds))


class FaultInjector:
    """Injects random faults of ``kinds`` between t_start_ns and heal_ns, then heals everything."""

    def __init__(self, sim: Simulator, rng: random.Random, kinds: tuple[str, ...], t_start_ns: int, heal_ns: int,
                 mean_gap_ms: float = 250.0, max_duration_ms: float = 1500.0, token_ms: float = 200.0) -> None:
        self.sim = sim
        self.rng = rng
        self.kinds = kinds
        self.t_start_ns = t_start_ns
        self.heal_ns = heal_ns
        self.mean_gap_ms = mean_gap_ms
        self.max_duration_ms = max_duration_ms
        self.token_ms = token_ms
        self.active = False
        self.restart_at_heal: set[int] = set()
        self.injected: list[tuple[int, str]] = []  # (t_ns, description)

    def install(self) -> None:
        """Schedule the fault phase and the heal on the simulator."""
        if self.kinds:
            self.sim.call_at(self.t_start_ns, self._begin)
        self.sim.call_at(self.heal_ns, self.heal)

    def _begin(self) -> None:
        self.active = True
        self._schedule_next()

    def _schedule_next(self) -> None:
        t = self.sim.now_ns + int(self.rng.expovariate(1.0 / self.mean_gap_ms) * MS) + 1
        if t < self.heal_ns:
            self.sim.call_at(t, self._inject)

    def _duration_ns(self) -> int:
        # half short blips, half long enough to make the ring reconfigure
        if self.rng.random() < 0.5:
            return int(self.rng.uniform(5, self.token_ms / 2) * MS)
        return int(self.rng.uniform(self.token_ms, self.max_duration_ms) * MS)

    def _later(self, fn: Callable[[], None]) -> None:
        """Undo a fault after a random duration, unless the heal came first (it undid everything)."""

        def undo() -> None:
            if self.active:
                fn()

        self.sim.call_at(self.sim.now_ns + self._duration_ns(), undo)

    def _inject(self) -> None:
        if not self.active:
            return
        kind = self.rng.choice(self.kinds)
        getattr(self, f"_fault_{kind}")()
        self._schedule_next()

    def _note(self, text: str) -> None:
        self.injected.append((self.sim.now_ns, text))

    def _links(self) -> list[tuple[int, int]]:
        nodes = self.sim.nodelist
        pairs = [(a, b) for a in nodes for b in nodes if a != b]
        k = self.rng.randint(1, len(pairs)) if self.rng.random() < 0.3 else self.rng.randint(1, max(1, len(nodes)))
        return self.rng.sample(pairs, min(k, len(pairs)))

    def _link_fault(self, attr: str, value_fn: Callable[[], float]) -> None:
        links = self._links()
        net = self.sim.net
        for src, dst in links:
            setattr(net.link(src, dst), attr, value_fn())
        self._note(f"{attr} on {links}")

        def undo() -> None:
            for src, dst in links:
                setattr(net.link(src, dst), attr, 0)

        self._later(undo)

    def _fault_loss(self) -> None:
        self._link_fault("loss", lambda: self.rng.uniform(0.02, 0.5))

    def _fault_dup(self) -> None:
        self._link_fault("dup", lambda: self.rng.uniform(0.05, 0.5))

    def _fault_reorder(self) -> None:
        self._link_fault("reorder", lambda: self.rng.uniform(0.1, 0.7))

    def _fault_delay(self) -> None:
        self._link_fault("extra_delay_ns", lambda: int(self.rng.uniform(1, self.token_ms * 0.4) * MS))

    def _fault_asym(self) -> None:
        self._link_fault("blocked", lambda: True)

    def _fault_partition(self) -> None:
        nodes = list(self.sim.nodelist)
        if len(nodes) < 2:
            return
        self.rng.shuffle(nodes)
        k = 2 if len(nodes) < 4 or self.rng.random() < 0.6 else 3
        cuts = sorted(self.rng.sample(range(1, len(nodes)), k - 1))
        groups = [nodes[i:j] for i, j in zip([0, *cuts], [*cuts, len(nodes)])]
        self.sim.net.partition(groups)
        self._note(f"partition {groups}")
        self._later(lambda: self.sim.net.partition([]))

    def _fault_token_loss(self) -> None:
        n = self.rng.randint(1, 3)
        self.sim.net.drop_tokens += n
        self._note(f"drop {n} token(s)")

    def _fault_recv_only(self) -> None:
        node = self.rng.choice(self.sim.nodelist)
        self.sim.net.recv_only.add(node)
        self._note(f"recv_only {node}")
        self._later(lambda: self.sim.net.recv_only.discard(node))

    def _fault_pause(self) -> None:
        # a starved or stalled process (a loaded host, a long GC): it runs again before the heal
        node = self.rng.choice(self.sim.nodelist)
        span = min(int(self.rng.uniform(self.token_ms / 4, 3 * self.token_ms) * MS), self.heal_ns - self.sim.now_ns)
        if span > 0:
            self.sim.pause(node, span)
            self._note(f"pause {node} {span / MS:.0f} ms")

    def _victim(self) -> int | None:
        live = self.sim.live_nodes()
        return self.rng.choice(live) if len(live) > 1 else None

    def _fault_crash(self) -> None:
        node = self._victim()
        if node is None:
            return
        self.sim.crash(node)
        if self.rng.random() < 0.5:
            self.restart_at_heal.add(node)
        self._note(f"crash {node}")

    def _fault_leave(self) -> None:
        node = self._victim()
        if node is None:
            return
        self.sim.leave(node)
        if self.rng.random() < 0.5:
            self.restart_at_heal.add(node)
        self._note(f"leave {node}")

    def _fault_restart(self) -> None:
        node = self._victim()
        if node is None:
            return
        self.sim.crash(node)
        self._note(f"crash {node} (restarting)")
        self.restart_at_heal.add(node)

        def back() -> None:
            if self.active:
                self.restart_at_heal.discard(node)
                self.sim.start(node)
                self._note(f"restart {node}")

        self.sim.call_at(self.sim.now_ns + int(self.rng.uniform(20, 800) * MS), back)

    def heal(self) -> None:
        """All faults stop; the nodes planned to return restart now."""
        self.active = False
        self.sim.net.heal()
        self.sim.heal_ns = self.sim.now_ns
        for node in sorted(self.restart_at_heal):
            self.sim.start(node)
        self._note(f"heal (restart {sorted(self.restart_at_heal)})")
