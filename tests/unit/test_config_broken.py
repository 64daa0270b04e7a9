"""Every refused configuration in tests/data/conf/broken names the file, the line and corosync's reason.

Each file starts with ``# expect: corosync.conf:LINE: MESSAGE``: the exact text of the ConfigError.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pycorosync.engine.config import ConfigError, parse

BROKEN = Path(__file__).resolve().parents[1] / "data" / "conf" / "broken"
CASES = sorted(BROKEN.glob("*.conf"))


def _expected(path: Path) -> str:
    first = path.read_text().split("\n", 1)[0]
    assert first.startswith("# expect: "), f"{path.name} lacks its '# expect:' header"
    return first.removeprefix("# expect: ")


def test_there_are_many_broken_examples() -> None:
    assert len(CASES) >= 60


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_broken_config_is_refused_with_file_line_and_reason(path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(path.read_text(), filename="corosync.conf")
    assert str(caught.value) == _expected(path)
    error = caught.value
    assert error.filename == "corosync.conf"
    assert f"corosync.conf:{error.line}: {error.reason}" == str(error)
