"""``pycorosync quorumtool`` without a node: corosync-quorumtool's messages and exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycorosync.cli import main as cli_main


def run(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str) -> tuple[int, str, str]:
    code = cli_main(["--run-dir", str(tmp_path), "quorumtool", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("args", [["-s"], ["-l"], [], ["-e", "3"], ["-v", "1"]])
def test_without_a_running_node_says_cannot_initialize_cmap_and_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str]
) -> None:
    code, out, err = run(capsys, tmp_path, *args)
    assert (code, out, err) == (1, "", "Cannot initialize CMAP service\n")


def test_a_nodeid_that_is_not_a_number_is_refused_before_connecting(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, tmp_path, "-v", "1", "-n", "abc")
    assert code == 1 and err == "The nodeid was not valid, try a positive number\n"


def test_order_must_be_address_name_or_id(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        run(capsys, tmp_path, "-o", "x")
    assert exc.value.code == 2
