"""The SAFE check is not vacuous: a real core made to deliver SAFE messages as AGREED gets caught."""

from __future__ import annotations

import pytest

from tests.sim.cores import sim_totem_config
from tests.sim.faults import parse_faults
from tests.sim.runner import RunPlan, run
from tests.sim.workload import WorkloadParams

core_mod = pytest.importorskip("pycorosync.engine.totem.core")
ordering = pytest.importorskip("pycorosync.engine.totem.ordering")


class _SafeAsAgreedCore(core_mod.TotemCore):  # type: ignore[misc,name-defined]
    """Delivers as soon as a message is in order locally, whatever its guarantee."""

    def _deliver(self, out):  # type: ignore[no-untyped-def]
        store = self.store
        ordering.deliver_frames(store, store.my_aru, 1 << 62, self.assembler, self.ring_id, out)


def _factory(nodes: int):  # type: ignore[no-untyped-def]
    config = sim_totem_config(nodes)

    def make(node_id, nodelist, seed, ring_seq, incarnation):  # type: ignore[no-untyped-def]
        return _SafeAsAgreedCore(config, node_id, nodelist, seed=seed, ring_seq=ring_seq, incarnation=incarnation)

    return make


def test_safe_messages_delivered_before_all_members_hold_them_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    if not hasattr(core_mod.TotemCore, "_deliver"):
        pytest.skip("the core's delivery hook changed; adapt this test")
    import tests.sim.runner as runner

    monkeypatch.setattr(runner, "make_factory", lambda kind, nodes, **kw: _factory(nodes))
    caught = 0
    for seed in range(4):
        plan = RunPlan(seed=seed, nodes=4, faults=parse_faults("loss,delay"), profile="quick",
                       workload=WorkloadParams(safe_prob=1.0, mean_interval_ms=20.0))
        result = run(plan)
        caught += any(v.prop == "safe" for v in result.violations)
    assert caught, "SAFE-as-AGREED delivery went unnoticed"


def test_the_real_core_passes_the_safe_check_on_the_same_runs() -> None:
    for seed in range(2):
        plan = RunPlan(seed=seed, nodes=4, faults=parse_faults("loss,delay"), profile="quick",
                       workload=WorkloadParams(safe_prob=1.0, mean_interval_ms=20.0))
        result = run(plan)
        assert not [v for v in result.violations if v.prop == "safe"], result.report()
