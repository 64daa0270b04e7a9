"""Quorum on real loopback clusters: votequorum's arithmetic as nodes die and come back, what tracking clients are
told, what ``pycorosync quorumtool`` prints on every node, and live changes of votes and expected votes."""

from __future__ import annotations

import asyncio
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from pycorosync.cli import main as cli_main
from pycorosync.cmap import CmapClient, ValueType
from pycorosync.ipc.errors import CsError
from pycorosync.quorum import (
    CS_TRACK_CHANGES_ONLY,
    QUORUM_SET,
    AsyncQuorumClient,
    NodelistEvent,
    QuorumClient,
    QuorumEvent,
)
from pycorosync.votequorum import AsyncVotequorumClient, ExpectedVotesEvent, InfoFlag, VotequorumClient
from tests.cluster.conftest import Cluster, wait_for

pytestmark = pytest.mark.timeout(300)

VOTEQUORUM = "quorum {\n    provider: corosync_votequorum\n}\n"
TWO_NODE = "quorum {\n    provider: corosync_votequorum\n    two_node: 1\n}\n"
# a token that survives a busy machine: kills are still seen within ~3 s
TOTEM = {"token": 1000}


def quorumtool(capsys: pytest.CaptureFixture[str], cluster: Cluster, nodeid: int, *args: str) -> tuple[int, str]:
    """Runs ``pycorosync quorumtool`` against one node: (exit code, stdout + stderr)."""
    capsys.readouterr()
    code = cli_main(["--run-dir", str(cluster.nodes[nodeid].run_dir), "quorumtool", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def parse_status(text: str) -> dict[str, Any]:
    """The fields of ``quorumtool -s`` output, and the membership rows as (nodeid, votes, name)."""
    fields = dict(re.findall(r"^([A-Z][A-Za-z ]+):\s+(.*?)\s*$", text, re.MULTILINE))
    rows = [(int(a), int(b), c) for a, b, c in re.findall(r"^\s+(\d+)\s+(\d+) (.+)$", text, re.MULTILINE)]
    return {**fields, "rows": rows}


def status_of_all(capsys: pytest.CaptureFixture[str], cluster: Cluster, ids: list[int]) -> dict[int, dict[str, Any]]:
    out = {}
    for nodeid in ids:
        code, text = quorumtool(capsys, cluster, nodeid, "-s")
        out[nodeid] = {**parse_status(text), "exit": code}
    return out


def wait_quorum(cluster: Cluster, nodeid: int, quorate: bool, members: list[int], timeout: float = 30.0) -> None:
    """Waits until node ``nodeid``'s quorum service reports this state for exactly these members."""

    def reached() -> bool:
        try:
            with QuorumClient(str(cluster.nodes[nodeid].run_dir), timeout=5.0) as q:
                q.trackstart(1)
                event = q.next_event(timeout=5.0)
        except CsError:
            return False
        return isinstance(event, QuorumEvent) and event.quorate == quorate and list(event.members) == members

    wait_for(reached, timeout, f"node {nodeid}: quorate={quorate} with members {members}", interval=0.1)


def next_quorum_event(cluster: Cluster, client: QuorumClient, members: list[int], timeout: float = 60.0) -> QuorumEvent:
    """The first quorum notification whose member list is ``members`` (skipping intermediate rings)."""
    for event in client.events(timeout=timeout):
        if isinstance(event, QuorumEvent) and list(event.members) == members:
            return event
    raise AssertionError(f"no quorum notification with members {members} within {timeout} s\n{cluster.logs()}")


def monitor_node_counts(monitor: subprocess.Popen[bytes], until: str, timeout: float = 60.0) -> list[str]:
    """The ``Nodes:`` values ``quorumtool -m`` prints, up to the first equal to ``until`` (reads the pipe
    unbuffered: a buffered reader would hide lines from select)."""
    assert monitor.stdout is not None
    fd = monitor.stdout.fileno()
    counts: list[str] = []
    pending = b""
    deadline = time.monotonic() + timeout
    while not counts or counts[-1] != until:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"quorumtool -m printed node counts {counts} only"
        chunk = os.read(fd, 65536)
        assert chunk, f"quorumtool -m exited ({monitor.poll()}) after node counts {counts}"
        *lines, pending = (pending + chunk).split(b"\n")
        counts += [line.split()[1].decode() for line in lines if line.startswith(b"Nodes:")]
        if until in counts:
            counts = counts[: counts.index(until) + 1]
    return counts


def test_three_nodes_quorate_with_two_not_with_one_and_restarts_restore_quorum(
    make_cluster: Callable[..., Cluster], capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = make_cluster(3, extra_config=VOTEQUORUM, test_services=(), totem=TOTEM)
    ring = cluster.wait_ring()
    status = status_of_all(capsys, cluster, [1, 2, 3])
    for nodeid, st in status.items():
        assert st["exit"] == 0 and st["Quorate"] == "Yes" and st["Nodes"] == "3", st
        assert st["Ring ID"] == f"{ring[0]:x}.{ring[1]:x}" and st["Node ID"] == str(nodeid)
        assert st["Expected votes"] == "3" and st["Total votes"] == "3" and st["Quorum"] == "2"
        assert [r[:2] for r in st["rows"]] == [(1, 1), (2, 1), (3, 1)]
        assert next(r for r in st["rows"] if r[2].endswith(" (local)"))[0] == nodeid

    with QuorumClient(str(cluster.nodes[1].run_dir)) as tracker:
        tracker.trackstart()
        first = next_quorum_event(cluster, tracker, [1, 2, 3])
        assert first.quorate and list(first.ring_id) == ring

        cluster.nodes[3].kill()
        event = next_quorum_event(cluster, tracker, [1, 2])
        assert event.quorate
        assert list(event.ring_id) == cluster.wait_ring([1, 2])
        st = status_of_all(capsys, cluster, [1, 2])
        assert all(s["Quorate"] == "Yes" and s["Total votes"] == "2" and s["Quorum"] == "2" for s in st.values())

        cluster.nodes[2].kill()
        event = next_quorum_event(cluster, tracker, [1])
        assert not event.quorate
        assert list(event.ring_id) == cluster.wait_ring([1])
        assert not tracker.getquorate()
        code, text = quorumtool(capsys, cluster, 1, "-s")
        lone = parse_status(text)
        assert code == 2 and lone["Quorate"] == "No" and lone["Quorum"] == "2 Activity blocked"

        cluster.start([2, 3])
        event = next_quorum_event(cluster, tracker, [1, 2, 3])
        assert event.quorate
    cluster.wait_ring()
    status = status_of_all(capsys, cluster, [1, 2, 3])
    assert {st["Ring ID"] for st in status.values()} == {status[1]["Ring ID"]}
    assert all(st["exit"] == 0 and st["Quorate"] == "Yes" for st in status.values())

    # a crashed quorum service process: its clients see it gone, the restarted one serves the same state
    with QuorumClient(str(cluster.nodes[2].run_dir)) as old:
        cluster.nodes[2].kill_child("quorum")
        wait_for(lambda: not old.service_alive(), 20, "the old client to see the service gone", interval=0.05)
    wait_quorum(cluster, 2, True, [1, 2, 3], timeout=60)
    with VotequorumClient(str(cluster.nodes[2].run_dir)) as vq:
        info = vq.getinfo(0)
        assert (info.total_votes, info.quorum, info.node_expected_votes) == (3, 2, 3)


def test_five_nodes_keep_quorum_with_three_lose_it_with_two_and_regain_it_by_lowering_expected_votes(
    make_cluster: Callable[..., Cluster], capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = make_cluster(5, extra_config=VOTEQUORUM, test_services=(), totem=TOTEM)
    with QuorumClient(str(cluster.nodes[1].run_dir)) as tracker:
        tracker.trackstart()
        assert next_quorum_event(cluster, tracker, [1, 2, 3, 4, 5]).quorate
        alive = [1, 2, 3, 4, 5]
        for victim, quorate in ((5, True), (4, True), (3, False)):
            cluster.nodes[victim].kill()
            alive.remove(victim)
            event = next_quorum_event(cluster, tracker, alive)
            assert event.quorate is quorate, (alive, event)
        with VotequorumClient(str(cluster.nodes[2].run_dir)) as vq:
            info = vq.getinfo(0)
            assert (info.total_votes, info.quorum, info.node_expected_votes) == (2, 3, 5)
            assert vq.getinfo(5).node_state.name == "DEAD"

        # the administrator's way out: expected votes down to what is left (-e), seen by both nodes
        code, text = quorumtool(capsys, cluster, 1, "-e", "2")
        assert code == 0, text
        while not next_quorum_event(cluster, tracker, [1, 2]).quorate:
            pass  # a notification of the ring before the change
        status = status_of_all(capsys, cluster, [1, 2])
        assert all((st["exit"], st["Quorate"], st["Expected votes"], st["Quorum"]) == (0, "Yes", "2", "2")
                   for st in status.values()), status

    code, text = quorumtool(capsys, cluster, 2, "-v", "2", "-n", "1")  # from node 2, for node 1
    assert code == 0, text

    def both_see_three_votes() -> bool:
        return all(st["Total votes"] == "3" for st in status_of_all(capsys, cluster, [1, 2]).values())

    wait_for(both_see_three_votes, 20, "total votes 3 on nodes 1 and 2", interval=0.1)
    for st in status_of_all(capsys, cluster, [1, 2]).values():
        assert st["rows"][:2] == [(1, 2, st["rows"][0][2]), (2, 1, st["rows"][1][2])] and st["Expected votes"] == "3"
    code, text = quorumtool(capsys, cluster, 2, "-e", "1")  # below the total votes: refused
    assert code == 1 and "Unable to set expected votes: CS_ERR_INVALID_PARAM" in text


def test_two_node_cluster_survivor_stays_quorate_and_monitor_async_clients_and_cmap_keys_follow(
    make_cluster: Callable[..., Cluster], capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = make_cluster(2, extra_config=TWO_NODE, test_services=(), totem=TOTEM)
    run_dir = str(cluster.nodes[1].run_dir)
    wait_quorum(cluster, 1, True, [1, 2])
    code, text = quorumtool(capsys, cluster, 1, "-s")
    st = parse_status(text)
    assert code == 0 and st["Flags"] == "2Node Quorate WaitForAll" and st["Quorum"] == "1"
    with CmapClient(run_dir) as cmap:
        wait_for(lambda: cmap.keys("runtime.votequorum."), 10, "runtime.votequorum.* keys", interval=0.1)
        assert cmap.get("runtime.votequorum.this_node_id") == (1, ValueType.UINT32)
        assert cmap.get("runtime.votequorum.two_node") == (1, ValueType.UINT8)
        wait_for(lambda: cmap.get("runtime.votequorum.lowest_node_id")[0] == 1, 10, "lowest_node_id 1", interval=0.1)
        assert cmap.get("runtime.votequorum.wait_for_all_status") == (0, ValueType.UINT8)

    monitor = subprocess.Popen([sys.executable, "-m", "pycorosync", "--run-dir", run_dir, "quorumtool", "-m"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert monitor_node_counts(monitor, until="2") == ["2"]

        async def watch() -> list[Any]:
            async with AsyncQuorumClient(run_dir) as q, AsyncVotequorumClient(run_dir) as vq:
                assert q.quorum_type == QUORUM_SET and await q.getquorate()
                assert (await vq.getinfo(2)).node_votes == 1
                await q.trackstart(CS_TRACK_CHANGES_ONLY)
                cluster.nodes[2].kill()
                seen: list[Any] = []
                async for event in q.events():
                    seen.append(event)
                    if isinstance(event, QuorumEvent):
                        return seen
            return seen

        events = asyncio.run(asyncio.wait_for(watch(), 60))
        assert events[-1].quorate and events[-1].members == (1,)
        assert any(isinstance(e, NodelistEvent) and e.left == (2,) for e in events)
        code, text = quorumtool(capsys, cluster, 1, "-s")
        assert code == 0 and parse_status(text)["Nodes"] == "1"

        # one status per quorum notification: the one at its start with 2 nodes, then 1
        assert monitor_node_counts(monitor, until="1")[-1] == "1"
    finally:
        monitor.kill()
        monitor.wait(10)


def test_allow_downscale_lowers_expected_votes_when_a_node_shuts_down_cleanly(
    make_cluster: Callable[..., Cluster],
) -> None:
    config = ("quorum {\n    provider: corosync_votequorum\n    expected_votes: 2\n    allow_downscale: 1\n}\n")
    cluster = make_cluster(3, extra_config=config, test_services=(), totem=TOTEM)
    run_dir = str(cluster.nodes[1].run_dir)
    wait_quorum(cluster, 1, True, [1, 2, 3])
    with VotequorumClient(run_dir) as vq:
        assert (vq.getinfo(0).node_expected_votes, vq.getinfo(0).quorum) == (3, 2)
        vq.trackstart(context=5, flags=CS_TRACK_CHANGES_ONLY)
        assert cluster.nodes[3].stop() == 0  # SIGTERM: a clean shutdown, the node says it is leaving
        expected = next((e for e in vq.events(timeout=30) if isinstance(e, ExpectedVotesEvent)), None)
        assert expected == ExpectedVotesEvent(5, 2)
        info = vq.getinfo(0)
        assert (info.node_expected_votes, info.total_votes, info.quorum) == (2, 2, 2)
        assert info.flags & InfoFlag.ALLOW_DOWNSCALE and info.flags & InfoFlag.QUORATE


def test_last_man_standing_lowers_expected_votes_when_its_window_expires(
    make_cluster: Callable[..., Cluster],
) -> None:
    config = ("quorum {\n    provider: corosync_votequorum\n    last_man_standing: 1\n"
              "    last_man_standing_window: 1500\n}\n")
    cluster = make_cluster(3, extra_config=config, test_services=(), totem=TOTEM)
    wait_quorum(cluster, 1, True, [1, 2, 3])
    with VotequorumClient(str(cluster.nodes[1].run_dir)) as vq:
        vq.trackstart(context=8, flags=CS_TRACK_CHANGES_ONLY)
        cluster.nodes[3].kill()
        expected = next((e for e in vq.events(timeout=30) if isinstance(e, ExpectedVotesEvent)), None)
        assert expected == ExpectedVotesEvent(8, 2)  # the window ran out with nodes 1 and 2 still quorate
        info = vq.getinfo(0)
        assert (info.node_expected_votes, info.quorum, info.total_votes) == (2, 2, 2)
        assert info.flags & InfoFlag.LAST_MAN_STANDING and info.flags & InfoFlag.QUORATE
