"""One seeded run: warm-up (form the ring) -> fault phase -> heal -> quiescence -> EVS check.

Everything in a run follows from (seed, nodes, faults, durations): the network, the faults, the
clients and the cores' own seeds. A failing run says how to replay it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from tests.sim.checker import Checker, Violation, detection_times_ms
from tests.sim.cluster import RunRecord, Simulator
from tests.sim.cores import SIM_TOKEN_MS, is_token_frame, make_factory
from tests.sim.faults import FaultInjector
from tests.sim.network import MS
from tests.sim.workload import WorkloadParams


@dataclass(frozen=True)
class RunPlan:
    """Phase lengths in virtual ms and the cluster shape of one run."""

    seed: int
    nodes: int = 4
    faults: tuple[str, ...] = ()
    warmup_ms: int = 1000
    duration_ms: int = 2000  # the fault phase
    settle_ms: int = 2500  # after the heal: the final ring must be installed by then
    quiesce_ms: int = 1000  # clients quiet; everything accepted must get delivered
    core: str = "real"
    workload: WorkloadParams = field(default_factory=WorkloadParams)

    def replay_command(self) -> str:
        faults = ",".join(self.faults) or "none"
        extra = "" if self.duration_ms == RunPlan.duration_ms else f" --duration-ms {self.duration_ms}"
        core = "" if self.core == "real" else f" --core {self.core}"
        return f"python -m tests.sim --seed {self.seed} --nodes {self.nodes} --faults {faults}{extra}{core}"


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
    factory = make_factory(plan.core, plan.nodes, **factory_kwargs)
    sim = Simulator(factory, nodelist, plan.seed, workload=plan.workload,
                    token_frame=is_token_frame if plan.core == "real" else None)
    rng = random.Random(f"{plan.seed}/plan")
    heal_ns = (plan.warmup_ms + plan.duration_ms) * MS
    injector = FaultInjector(sim, random.Random(f"{plan.seed}/faults"), plan.faults, plan.warmup_ms * MS, heal_ns,
                             token_ms=SIM_TOKEN_MS)
    for node in nodelist:  # nodes boot within a few ms of each other
        sim.call_at(int(rng.uniform(0, 30) * MS), lambda node=node: sim.start(node))
    sim.workload_on = True
    injector.install()
    sim.liveness_deadline_ns = heal_ns + plan.settle_ms * MS

    def quiet() -> None:
        sim.workload_on = False

    sim.call_at(sim.liveness_deadline_ns, quiet)
    sim.run_until(sim.liveness_deadline_ns + plan.quiesce_ms * MS)
    record = sim.record()
    checker = Checker(record)
    violations = checker.run()
    return RunResult(plan, record, violations, detection_times_ms(record), injector.injected, checker, pytest_id)
