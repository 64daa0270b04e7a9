"""``pycorosync vqsim``: the real corosync-vqsim's scenarios give the same states; our own scenarios follow §8."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from pycorosync.engine.config.model import load
from pycorosync.services.quorum.settings import QuorumSettings
from pycorosync.services.quorum.simcluster import SimCluster
from pycorosync.services.quorum.vqsim import VqsimSession, format_status, run_script

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference" / "vqsim"
OWN = Path(__file__).resolve().parents[1] / "data" / "vqsim"
STATUS = re.compile(r"^(\d+):(\d+): q=(\d|UNINITIALIZED)(?: ring=\[([0-9a-f]+)\.([0-9a-f]+)\] nodes=\[([\d ]*)\])?$")


def run_vqsim(conf: Path, script: str) -> tuple[str, str]:
    """stdout and stderr of vqsim run on ``conf`` with ``script`` as stdin."""
    config = load(conf)
    cluster = SimCluster(lambda nodeid: QuorumSettings.from_config(config, nodeid))
    for node in config.nodes:
        cluster.up(node.nodeid)
    out, err = io.StringIO(), io.StringIO()
    run_script(VqsimSession(cluster, out, err), io.StringIO(script))
    return out.getvalue(), err.getvalue()


def show_blocks(output: str) -> list[list[str]]:
    """The status lines printed by each ``show`` command (the ones that are never stale)."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in output.splitlines():
        # a command right after a comment is echoed without a prompt of its own
        if line in ("#vqsim> show", "show"):
            current = []
            blocks.append(current)
        elif line.startswith("#autofence"):
            current = None
        elif current is not None and STATUS.match(line):
            current.append(line)
    return blocks


def summarize(block: list[str]) -> str:
    """``P{ids}=Q|-|mixed`` per partition, as the reference summary.md writes them (ids sorted)."""
    parts: dict[int, list[tuple[int, bool]]] = {}
    for line in block:
        match = STATUS.match(line)
        assert match, line
        parts.setdefault(int(match[1]), []).append((int(match[2]), match[3] == "1"))
    words = []
    for number in sorted(parts):
        nodes = sorted(parts[number])
        states = {q for _, q in nodes}
        state = ("Q" if True in states else "-") if len(states) == 1 else "mixed"
        words.append(f"{number}{{{','.join(str(n) for n, _ in nodes)}}}={state}")
    return " ".join(words)


REFERENCE_SCENARIOS = sorted(path.stem for path in REFERENCE.glob("*.in"))
OWN_SCENARIOS = sorted(path.stem for path in OWN.glob("*.in"))


@pytest.mark.parametrize("name", REFERENCE_SCENARIOS)
def test_reference_scenario_show_lines_match_real_vqsim(name: str) -> None:
    expected = show_blocks((REFERENCE / f"{name}.out").read_text())
    output, _ = run_vqsim(REFERENCE / f"{name}.conf", (REFERENCE / f"{name}.in").read_text())
    got = show_blocks(output)
    assert len(got) == len(expected) > 0
    for step, (ours, theirs) in enumerate(zip(got, expected)):
        # same partitions, nodes, quorate states, ring ids and member lists
        assert ours == theirs, f"{name}: show #{step}"


def test_reference_scenarios_cover_every_file() -> None:
    assert len(REFERENCE_SCENARIOS) == len(list(REFERENCE.glob("*.out"))) >= 10


@pytest.mark.parametrize("name", OWN_SCENARIOS)
def test_own_scenario_follows_votequorum_rules(name: str) -> None:
    expect_lines = [
        line.strip()
        for line in (OWN / f"{name}.expect").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    output, errors = run_vqsim(OWN / f"{name}.conf", (OWN / f"{name}.in").read_text())
    assert errors == ""
    assert [summarize(block) for block in show_blocks(output)] == expect_lines


def test_own_scenarios_exist() -> None:
    assert len(OWN_SCENARIOS) >= 12
    for name in OWN_SCENARIOS:
        assert (OWN / f"{name}.conf").is_file() and (OWN / f"{name}.expect").is_file()


def test_status_line_layout_is_the_real_tools() -> None:
    assert format_status(1, 3, True, (3, 0x1C), (3, 4)) == "1:3: q=1 ring=[3.1c] nodes=[3 4]"


def test_output_echoes_commands_after_the_prompt_and_comments_without_one() -> None:
    output, _ = run_vqsim(
        REFERENCE / "n3_baseline.conf",
        "# hello\ntimeout 3000\nshow\nexit\n",
    )
    lines = output.splitlines()
    assert "#vqsim> # hello" in lines
    assert lines[lines.index("#vqsim> # hello") + 1] == "timeout 3000"
    assert lines[-1] == "#vqsim> exit"


def test_down_prints_quit_and_unknown_node_is_an_error() -> None:
    output, errors = run_vqsim(OWN / "n4_split_3_1.conf", "down 4\ndown 9\nexit\n")
    assert "0:4: Quit (on request)" in output.splitlines()
    assert "ERR: nodeid 9 is not up" in errors


def test_autofence_stops_inquorate_nodes_after_an_event() -> None:
    output, _ = run_vqsim(OWN / "n4_split_3_1.conf", "autofence on\nsplit 1:4\nshow\nexit\n")
    assert "1:4: Quit (autofenced)" in output.splitlines()
    assert show_blocks(output)[-1] == [
        "0:1: q=1 ring=[1.14] nodes=[1 2 3]",
        "0:2: q=1 ring=[1.14] nodes=[1 2 3]",
        "0:3: q=1 ring=[1.14] nodes=[1 2 3]",
    ]


def test_sleep_comment_lets_virtual_time_pass_without_echo() -> None:
    script = "down 4\n#sleep 10\ndown 3\nshow\nexit\n"
    output, _ = run_vqsim(OWN / "lms_outside_window.conf", script)
    assert "#sleep 10" not in output
    assert summarize(show_blocks(output)[-1]) == "0{1,2}=Q"


def test_bad_command_and_bad_node_list_are_reported_not_fatal() -> None:
    output, errors = run_vqsim(OWN / "n4_split_3_1.conf", "frobnicate\nup x:1\nshow\nexit\n")
    assert "unknown command 'frobnicate'" in errors
    assert "cannot read 'x:1'" in errors
    assert len(show_blocks(output)[-1]) == 4


def test_interactive_session_prompts_without_hash_and_does_not_echo() -> None:
    config = load(OWN / "n4_split_3_1.conf")
    cluster = SimCluster(lambda nodeid: QuorumSettings.from_config(config, nodeid))
    for node in config.nodes:
        cluster.up(node.nodeid)
    out = io.StringIO()
    run_script(VqsimSession(cluster, out, io.StringIO()), io.StringIO("show\nexit\n"), interactive=True)
    assert "vqsim> " in out.getvalue() and "#vqsim>" not in out.getvalue()
    assert "show\n" not in out.getvalue()
