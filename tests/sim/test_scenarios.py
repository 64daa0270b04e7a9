"""Scenario scripts (tests/sim/scenarios/*.txt) against the real Totem core: one test per file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sim.scenario import Scenario, ScenarioError

SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("*.txt"))


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(path: Path) -> None:
    outcome = Scenario.from_file(path).run()
    assert outcome.ok, outcome.report()


def test_required_scenarios_exist() -> None:
    names = {p.stem for p in SCENARIOS}
    assert {"join_one_by_one", "leave", "crash_token_holder", "crash_during_recovery", "split_2_2_merge",
            "split_3way_merge", "lossy_links", "recv_only"} <= names


def test_scenario_language_errors_name_file_and_line() -> None:
    with pytest.raises(ScenarioError, match=r"bad.txt:2: .*frobnicate"):
        Scenario("bad.txt", "start 1 2\nfrobnicate 3\nrun 1s\n").run()
    with pytest.raises(ScenarioError, match=r"bad.txt:2: bad time"):
        Scenario("bad.txt", "start 1\nrun soon\n").run()


def test_standin_scenario_meets_expectations_and_a_wrong_expectation_fails() -> None:
    text = "core standin\nnodes 1-3\nstart 1 2 3\nrun 100ms\nsend all agreed 100B x3\nrun 500ms\n"
    assert Scenario("ok.txt", text + "expect config 1,2,3\nexpect delivered all\n").run().ok
    bad = Scenario("bad.txt", text + "expect config 1,2\n").run()
    assert not bad.ok and "expect config 1,2" in bad.report()
