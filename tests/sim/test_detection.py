"""A crashed member is removed after about token + consensus (COROSYNC.md §2.13), measured on a busy ring."""

from __future__ import annotations

import random
import statistics

from tests.sim.checker import check, detection_times_ms
from tests.sim.cluster import Simulator
from tests.sim.cores import SIM_TOKEN_MS, is_token_frame, real_core_factory, sim_totem_config
from tests.sim.network import MS


def crash_detection_ms(seed: int, nodes: int) -> float:
    """One run: a stable ring with traffic, one random member crashes at a random moment."""
    rng = random.Random(f"{seed}/detect")
    sim = Simulator(real_core_factory(nodes), list(range(1, nodes + 1)), seed, token_frame=is_token_frame)
    sim.workload_on = True
    for n in sim.nodelist:
        sim.start(n)
    t_crash = int(rng.uniform(800, 1200) * MS)
    sim.call_at(t_crash, lambda: sim.crash(rng.choice(sim.nodelist)))
    sim.run_until(t_crash + 2000 * MS)
    sim.workload_on = False  # quiet end: what is in flight gets delivered before the check
    sim.run_until(t_crash + 3000 * MS)
    record = sim.record()
    assert check(record) == []
    times = detection_times_ms(record)
    assert len(times) == 1, f"seed {seed}: crash not detected"
    return times[0]


def test_crashed_member_is_removed_after_about_token_plus_consensus() -> None:
    cfg = sim_totem_config(3)
    expected = cfg.token + cfg.consensus
    times = [crash_detection_ms(seed, 2 + seed % 4) for seed in range(12)]
    summary = f"min {min(times):.0f} p50 {statistics.median(times):.0f} max {max(times):.0f} ms"
    assert cfg.token == SIM_TOKEN_MS
    # token loss is noticed after `token` ms without it; the survivors then wait up to `consensus` for joins
    assert all(cfg.token <= t <= expected + 2 * cfg.join + 100 for t in times), summary
    assert abs(statistics.median(times) - expected) < 100, summary
