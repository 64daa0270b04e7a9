"""One seeded run: warm-up (form the ring) -> fault phase -> heal -> quiescence -> EVS check.

Everything in a run follows from (seed, nodes, faults, durations): the network, the faults, the
clients and the cores' own seeds. A failing run says how to replay it.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

from tests.sim.checker import Checker, Violation, detection_times_ms
from tests.sim.cluster import RunRecord, Simulator
from tests.sim.cores import SIM_TOKEN_MS, is_token_frame, make_factory
from tests.sim.faults import FAULT_KINDS, FaultInjector
from tests.sim.network import MS
from tests.sim.workload import WorkloadParams


@dataclass(frozen=True)
class Profile:
    """Phase lengths (virtual ms) and client traffic of a run; 'quick' is what `make test` sweeps."""

    warmup_ms: int
    duration_ms: int  # the fault phase
    settle_ms: int  # after the heal: the final ring must be installed by then
    quiesce_ms: int  # clients quiet; everything accepted must get delivered
    workload: WorkloadParams
    mean_fault_gap_ms: float


PROFILES = {
    "full": Profile(1000, 2000, 2500, 2000, WorkloadParams(), 200.0),
    "quick": Profile(500, 1500, 2000, 1000, WorkloadParams(mean_interval_ms=100.0, max_big_bytes=2 * 1024 * 1024),
                     120.0),
}

MAX_DRAIN_MS = 10_000

# every third seed runs with a small send queue so that client bursts hit flow control (QueueFull)
SMALL_QUEUE = {"send_queue_frames": 24, "max_message_bytes": 32 * 1024}


def core_overrides(plan: RunPlan) -> dict[str, int]:
    """Totem config overrides a seed implies (the replay command needs nothing more than the seed)."""
    return dict(SMALL_QUEUE) if plan.core == "real" and plan.seed % 3 == 0 else {}


@dataclass(frozen=True)
class RunPlan:
    """Phase lengths in virtual ms and the cluster shape of one run."""

    seed: int
    nodes: int = 4
    faults: tuple[str, ...] = ()
    duration_ms: int | None = None  # the fault phase; None = the profile's
    profile: str = "full"
    core: str = "real"
    boot_spread_ms: int = 30  # nodes boot within this much of each other
    workload: WorkloadParams | None = None  # None = the profile's

    @property
    def phases(self) -> Profile:
        p = PROFILES[self.profile]
        return dataclasses.replace(p, duration_ms=p.duration_ms if self.duration_ms is None else self.duration_ms,
                                   workload=self.workload or p.workload)

    def replay_command(self) -> str:
        faults = "all" if set(self.faults) == set(FAULT_KINDS) else (",".join(self.faults) or "none")
        extra = "" if self.duration_ms is None else f" --duration-ms {self.duration_ms}"
        extra += "" if self.profile == "full" else f" --profile {self.profile}"
        extra += "" if self.core == "real" else f" --core {self.core}"
        return f"python -m tests.sim --seed {self.seed} --nodes {self.nodes} --faults {faults}{extra}"


@dataclass
class RunResult:
    """Outcome of one run."""

    plan: RunPlan
    record: RunRecord
    violations: list[Violation]
    detect_ms: list[float]
    injected: list[tuple[int, str]]
    checker: Checker
    pytest_id: str | None = None

    @property
    def ok(self) -> bool:
        return not self.violations

    def report(self) -> str:
        """The failure message: seed, replay lines, the first violation with context."""
        if self.ok:
            return f"seed {self.plan.seed}: ok"
        first = self.violations[0]
        lines = [
            f"seed {self.plan.seed}: {len(self.violations)} violation(s); first: {first}",
            f"replay with: {self.plan.replay_command()}",
        ]
        if self.pytest_id:
            lines.append(f"         or: pytest tests/sim/test_seeds.py -k \"{self.pytest_id}\"")
        ctx = self.checker.context(first)
        if ctx:
            lines.append(ctx)
        for v in self.violations[1:4]:
            lines.append(f"  also: {v}")
        faults = [f"{t / MS:.0f}ms {what}" for t, what in self.injected[-8:]]
        if faults:
            lines.append("  last faults: " + "; ".join(faults))
        return "\n".join(lines)


def run(plan: RunPlan, pytest_id: str | None = None, **factory_kwargs: Any) -> RunResult:
    """Execute one seeded run and check it."""
    nodelist = list(range(1, plan.nodes + 1))
    ph = plan.phases
    workload = ph.workload
    boot_spread_ms = plan.boot_spread_ms
    if plan.core == "standin":  # it has no SAFE delivery to check, nor catch-up for a late booting node
        workload = dataclasses.replace(workload, safe_prob=0.0)
        boot_spread_ms = 0
    factory = make_factory(plan.core, plan.nodes, **{**core_overrides(plan), **factory_kwargs})
    sim = Simulator(factory, nodelist, plan.seed, workload=workload,
                    token_frame=is_token_frame if plan.core == "real" else None)
    rng = random.Random(f"{plan.seed}/plan")
    heal_ns = (ph.warmup_ms + ph.duration_ms) * MS
    injector = FaultInjector(sim, random.Random(f"{plan.seed}/faults"), plan.faults, ph.warmup_ms * MS, heal_ns,
                             mean_gap_ms=ph.mean_fault_gap_ms, token_ms=SIM_TOKEN_MS)
    for node in nodelist:
        sim.call_at(int(rng.uniform(0, boot_spread_ms) * MS), lambda node=node: sim.start(node))
    sim.workload_on = True
    injector.install()
    # membership rounds take longer with more nodes: 150 ms more settle time per node beyond 4
    sim.liveness_deadline_ns = heal_ns + (ph.settle_ms + 150 * max(0, plan.nodes - 4)) * MS

    def quiet() -> None:  # clients stop: nothing new is submitted, backlogs not yet accepted are dropped
        sim.workload_on = False
        for node in sim.nodes.values():
            node.pending.clear()

    sim.call_at(sim.liveness_deadline_ns, quiet)
    sim.run_until(sim.liveness_deadline_ns + ph.quiesce_ms * MS)
    # a multi-MiB message accepted late may still be in transit at the token's pace: go on, up to
    # MAX_DRAIN_MS more, while a live core has frames queued or deliveries still happen (then judge)
    drain_end = sim.now_ns + MAX_DRAIN_MS * MS
    delivered = -1
    while sim.now_ns < drain_end and not sim.errors and (delivered != sim.stats.delivered or any(
            n.alive and getattr(n.core, "queue_fill", lambda: 0.0)() > 0 for n in sim.nodes.values())):
        delivered = sim.stats.delivered
        sim.run_until(sim.now_ns + 250 * MS)
    record = sim.record()
    checker = Checker(record)
    violations = checker.run()
    return RunResult(plan, record, violations, detection_times_ms(record), injector.injected, checker, pytest_id)
