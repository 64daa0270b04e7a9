"""``pycorosync status``: the view of two readings, and its errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pycorosync.monitoring import status
from pycorosync.monitoring.reading import LinkSample, NodeReading, ProcessSample, QuorumState, SamState


def reading(tokens: int, mcast_tx: int, cpu: float, quorate: bool = True) -> NodeReading:
    return NodeReading(
        nodeid=2,
        srp={"orf_token_rx": tokens, "mcast_tx": mcast_tx, "mcast_rx": 3 * mcast_tx, "mcast_retx": 0,
             "messages_delivered": 0, "mtt_rx_token": 4},
        runtime={"members": 3, "ring_seq": 8, "submit_queue_full": 1},
        status={"state": "OPERATIONAL", "ring_rep": 1, "sync_completed": 1, "configured_nodes": 3},
        quorum=QuorumState(quorate, 3, 3, 2, 1),
        links=(LinkSample(1, True, 0.2, 10, 20), LinkSample(3, False, None, 0, 0)),
        processes=(ProcessSample("totem", 100, cpu, 50 << 20, 1, "RR 99"),),
        sam=SamState({"running": 2, "failed": 0}, 4),
    )


def test_status_shows_ring_members_quorum_rates_links_and_processes() -> None:
    text = status.render(reading(1250, 60, 2.0), reading(1000, 40, 1.5), 2.0, cluster="alpha", run_dir="/run/x",
                         now=0)
    lines = text.splitlines()
    assert "node 2 of cluster 'alpha'" in lines[0]
    assert lines[1].split()[:3] == ["Ring", "1.8", "OPERATIONAL"] and "members 3/3" in lines[1]
    assert "quorate" in lines[2] and "votes 3  expected 3  needed 2" in lines[2]
    assert "tokens 125.0/s" in lines[3] and "mcast tx 10.0/s" in lines[3] and "rx 30.0/s" in lines[3]
    assert "flow-control waits 1" in lines[4]
    assert "SAM        2 running; restarts 4" in lines
    assert "1:up (0.2s ago)" in text and "3:DOWN (never)" in text
    assert any(line.split()[:3] == ["totem", "100", "25.0%"] and line.endswith("  RR 99") for line in lines)
    assert any(line.split()[-1:] == ["sched"] for line in lines), "the process table has a sched column"
    assert "\x1b[" not in text, "no ANSI codes without color"


def test_status_marks_a_lost_quorum_in_red_when_colored() -> None:
    text = status.render(reading(1, 1, 0.0, quorate=False), None, 1.0, cluster="a", run_dir="/r", color=True, now=0)
    assert f"{status.RED}NOT QUORATE{status.RESET}" in text
    assert "tokens -" in text, "no rates without a previous reading"


def test_status_without_a_running_node_says_so_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(run_dir=str(tmp_path), watch=False, interval=0.1, count=None, no_color=True)
    assert status.run(args) == 1
    assert f"no running node in {tmp_path}" in capsys.readouterr().err
