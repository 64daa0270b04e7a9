"""``make pytest`` runs the test folders it names: a new folder of tests must be named there, or it never runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _make_list(text: str, name: str) -> list[str]:
    match = re.search(rf"^{name} := (.+)$", text, re.M)
    assert match, f"Makefile has no {name}"
    return match.group(1).split()


def test_make_pytest_runs_every_folder_of_tests_once() -> None:
    text = (ROOT / "Makefile").read_text()
    parallel = _make_list(text, "PARALLEL_SUITES")
    serial = _make_list(text, "SERIAL_SUITES")
    named = parallel + serial
    assert len(named) == len(set(named)), f"a suite is named twice: {named}"
    folders = {f"tests/{p.parent.relative_to(ROOT / 'tests').parts[0]}"
               for p in (ROOT / "tests").rglob("test_*.py") if p.parent != ROOT / "tests"}
    assert folders == set(named), f"folders with tests {sorted(folders)} != suites make pytest runs {sorted(named)}"
    # the suites that start whole nodes run one test at a time
    assert {"tests/cluster", "tests/netns"} <= set(serial)
