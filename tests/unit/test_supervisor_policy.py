"""RestartBudget: backoff that grows and is capped, storms that give up, a window that forgets."""

from __future__ import annotations

import pytest

from pycorosync.engine.supervisor.policy import GiveUp, Restart, RestartBudget, RestartPolicy


def test_backoff_doubles_per_restart_in_the_window_and_is_capped() -> None:
    budget = RestartBudget(RestartPolicy(max_restarts=10, window_s=60, backoff_initial_s=0.1, backoff_max_s=0.5))
    delays = [budget.on_failure(float(t)) for t in range(5)]
    assert all(isinstance(d, Restart) for d in delays)
    assert [d.delay_s for d in delays] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])  # type: ignore[union-attr]
    assert [d.attempt for d in delays] == [1, 2, 3, 4, 5]  # type: ignore[union-attr]


def test_failure_after_max_restarts_within_the_window_gives_up() -> None:
    budget = RestartBudget(RestartPolicy(max_restarts=3, window_s=10))
    assert all(isinstance(budget.on_failure(t), Restart) for t in (0.0, 1.0, 2.0))
    decision = budget.on_failure(3.0)
    assert isinstance(decision, GiveUp)
    assert decision.failures == 4
    assert decision.message("cpg") == "child 'cpg' failed 4 times within 10 s (restart storm); giving up on it"


def test_failures_older_than_the_window_are_forgotten() -> None:
    budget = RestartBudget(RestartPolicy(max_restarts=2, window_s=10, backoff_initial_s=1, backoff_max_s=8))
    budget.on_failure(0.0)
    budget.on_failure(5.0)
    decision = budget.on_failure(10.5)  # the failure at 0.0 left the window
    assert isinstance(decision, Restart) and decision.attempt == 2
    assert budget.recent(10.5) == 2
    assert budget.total_restarts == 3


def test_zero_max_restarts_gives_up_on_the_first_failure() -> None:
    assert isinstance(RestartBudget(RestartPolicy(max_restarts=0)).on_failure(0.0), GiveUp)


def test_invalid_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        RestartPolicy(window_s=0)
