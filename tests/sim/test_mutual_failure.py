"""Two nodes that failed each other merge again once the faults stop.

Pauses of both processes of a 2-node cluster could leave each node holding the other's last verdict
("failed"): each then ignored the other's new joins, failed it again at the consensus timeout and formed a
ring of its own, round after round, for good (each seed here did so on the core before the fix; about 1 %
of 2-node pause seeds). A failed node that has installed a ring of its own since is now heard again.
"""

from __future__ import annotations

import pytest

from tests.sim.faults import parse_faults
from tests.sim.runner import RunPlan, run

# 2-node pause seeds whose nodes never merged again before the fix, with the default totem settings
STUCK_SEEDS = (401, 5079, 5116, 5291, 5454, 5516, 5579, 5613, 5673, 5676)


@pytest.mark.parametrize("seed", STUCK_SEEDS)
def test_two_nodes_that_failed_each_other_merge_after_the_pauses(seed: int) -> None:
    result = run(RunPlan(seed=seed, nodes=2, faults=parse_faults("pause"), profile="quick"),
                 pytest_id=f"seed{seed}]")
    assert result.ok, result.report()
