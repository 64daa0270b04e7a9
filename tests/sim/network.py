"""The simulated network: every copy of every frame gets its own fate from one seeded RNG.

A multicast is one copy per receiver (the sender included, as a unicast-emulated multicast
over the nodelist does), each lost, duplicated, delayed or reordered on its own. Links are
directed, so A may hear B while B does not hear A. Partitions put nodes in groups; a frame
crosses only inside a group. Without an active reorder fault each link stays FIFO.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

MS = 1_000_000  # ns per ms


@dataclass
class LinkFaults:
    """What currently happens to frames on one directed link (src -> dst)."""

    loss: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0  # probability a copy gets an extra 1..reorder_max delay and may pass later ones
    extra_delay_ns: int = 0
    blocked: bool = False

    def is_clean(self) -> bool:
        return not (self.loss or self.dup or self.reorder or self.extra_delay_ns or self.blocked)


@dataclass
class NetworkStats:
    """Frame counters of one run."""

    sent: int = 0  # copies the network was asked to carry
    delivered: int = 0  # copies scheduled for arrival (dup copies included)
    lost: int = 0
    blocked: int = 0  # partition, asymmetric block, receive-only sender
    duplicated: int = 0
    reordered: int = 0
    token_drops: int = 0


class Network:
    """Decides the fate of each frame copy and hands arrivals to ``deliver_at(t_ns, dst, src, data)``."""

    def __init__(
        self,
        rng: random.Random,
        nodelist: list[int],
        deliver_at: Callable[[int, int, int, bytes], None],
        base_delay_ns: int = 2 * MS,
        jitter_ns: int = 1 * MS,
        reorder_max_ns: int = 20 * MS,
        loopback_ns: int = 1000,
        token_frame: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.rng = rng
        self.nodelist = list(nodelist)
        self.deliver_at = deliver_at
        self.base_delay_ns = base_delay_ns
        self.jitter_ns = jitter_ns
        self.reorder_max_ns = reorder_max_ns
        self.loopback_ns = loopback_ns
        # tells token frames apart; without it a token-loss fault drops the next unicast frames
        self.token_frame = token_frame
        self.links: dict[tuple[int, int], LinkFaults] = {}
        self.group: dict[int, int] = {}  # node -> partition group; absent = group 0
        self.recv_only: set[int] = set()  # nodes whose sends are all dropped
        self.drop_tokens: int = 0  # drop this many next token frames (token loss)
        self.last_arrival: dict[tuple[int, int], int] = {}  # FIFO per link unless reordering
        self.stats = NetworkStats()

    # fault controls -----------------------------------------------------------------------
    def link(self, src: int, dst: int) -> LinkFaults:
        lf = self.links.get((src, dst))
        if lf is None:
            lf = self.links[(src, dst)] = LinkFaults()
        return lf

    def partition(self, groups: list[list[int]]) -> None:
        """Nodes in different groups cannot hear each other; nodes not named form one more group."""
        self.group = {}
        for gi, members in enumerate(groups, start=1):
            for n in members:
                self.group[n] = gi

    def heal(self) -> None:
        """Every fault stops: links clean, no partition, no receive-only node, no pending token drop."""
        self.links.clear()
        self.group = {}
        self.recv_only.clear()
        self.drop_tokens = 0

    def connected(self, src: int, dst: int) -> bool:
        """True when a frame from src could reach dst right now (ignoring random loss)."""
        if src == dst:
            return True
        if src in self.recv_only or self.group.get(src, 0) != self.group.get(dst, 0):
            return False
        lf = self.links.get((src, dst))
        return not (lf is not None and lf.blocked)

    # carrying frames ------------------------------------------------------------------------
    def send(self, now_ns: int, src: int, dest: int | None, data: bytes) -> None:
        """Carry one SendFrame action: dest None = every node of the nodelist, src included."""
        if self.drop_tokens > 0 and dest != src:
            is_token = self.token_frame(data) if self.token_frame is not None else dest is not None
            if is_token:
                self.drop_tokens -= 1
                self.stats.sent += 1
                self.stats.token_drops += 1
                return
        if dest is None:
            for dst in self.nodelist:
                self._copy(now_ns, src, dst, data)
            return
        self._copy(now_ns, src, dest, data)

    def _copy(self, now_ns: int, src: int, dst: int, data: bytes) -> None:
        stats = self.stats
        stats.sent += 1
        if src == dst:  # local loopback is never lost
            stats.delivered += 1
            self.deliver_at(now_ns + self.loopback_ns, dst, src, data)
            return
        if src in self.recv_only or self.group.get(src, 0) != self.group.get(dst, 0):
            stats.blocked += 1
            return
        rng = self.rng
        lf = self.links.get((src, dst))
        if lf is None:
            self._arrive(now_ns + self.base_delay_ns + int(rng.random() * self.jitter_ns), src, dst, data, fifo=True)
            return
        if lf.blocked:
            stats.blocked += 1
            return
        if lf.loss and rng.random() < lf.loss:
            stats.lost += 1
            return
        copies = 1
        if lf.dup and rng.random() < lf.dup:
            copies = 2
            stats.duplicated += 1
        for _ in range(copies):
            t = now_ns + self.base_delay_ns + lf.extra_delay_ns + int(rng.random() * self.jitter_ns)
            if lf.reorder and rng.random() < lf.reorder:
                stats.reordered += 1
                self._arrive(t + int(rng.random() * self.reorder_max_ns), src, dst, data, fifo=False)
            else:
                self._arrive(t, src, dst, data, fifo=not lf.reorder)

    def _arrive(self, t_ns: int, src: int, dst: int, data: bytes, fifo: bool) -> None:
        if fifo:
            last = self.last_arrival.get((src, dst), 0)
            if t_ns <= last:
                t_ns = last + 1
            self.last_arrival[(src, dst)] = t_ns
        self.stats.delivered += 1
        self.deliver_at(t_ns, dst, src, data)
