"""corosync-quorumtool layouts (COROSYNC.md §10.1) against the real tool's outputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pycorosync.services.quorum.display import (
    MemberEntry,
    QuorumStatus,
    ctime,
    format_flags,
    format_members,
    format_status,
    node_display_name,
)
from pycorosync.services.quorum.settings import QuorumSettings
from pycorosync.services.quorum.simcluster import SimCluster
from pycorosync.services.quorum.votequorum import InfoFlag, VoteInfo

TOOLS = Path(__file__).resolve().parents[1] / "data" / "reference" / "tools"


def status_of(sim: SimCluster, nodeid: int, date: str, ring_id: tuple[int, int]) -> QuorumStatus:
    vq = sim.nodes[nodeid]
    members = []
    for member in vq.members:
        info = vq.getinfo(member)
        assert info is not None
        members.append(MemberEntry(member, f"node{member}", info))
    local = vq.getinfo(0)
    return QuorumStatus(date, "corosync_votequorum", nodeid, ring_id, vq.quorate, tuple(members), local)


def reference_date(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("Date:"))[len("Date:") :].strip()


def three_nodes() -> SimCluster:
    sim = SimCluster(lambda nodeid: QuorumSettings.build(3, node_count=3))
    for nodeid in (1, 2, 3):
        sim.up(nodeid)
    return sim


def test_status_layout_equals_corosync_quorumtool_s() -> None:
    expected = (TOOLS / "quorumtool_s.txt").read_text()
    got = format_status(status_of(three_nodes(), 1, reference_date(expected), (1, 0xD)))
    assert got == expected


def test_status_after_a_node_was_killed_equals_the_real_tool() -> None:
    expected = (TOOLS / "quorumtool_s_after_kill3.txt").read_text()
    sim = three_nodes()
    sim.down(3)
    assert format_status(status_of(sim, 1, reference_date(expected), (1, 0x11))) == expected


def test_members_layout_equals_corosync_quorumtool_l() -> None:
    expected = (TOOLS / "quorumtool_l.txt").read_text()
    assert format_members(status_of(three_nodes(), 1, "x", (1, 1))) == expected


def test_inquorate_status_says_activity_blocked() -> None:
    sim = three_nodes()
    sim.down(3)
    sim.down(2)
    text = format_status(status_of(sim, 1, "d", (1, 0x14)))
    assert "Quorate:          No\n" in text
    assert "Quorum:           2 Activity blocked\n" in text
    assert "Flags:            \n" in text


def test_flags_are_words_each_followed_by_a_space_in_corosync_order() -> None:
    flags = InfoFlag.AUTO_TIE_BREAKER | InfoFlag.QUORATE | InfoFlag.TWONODE | InfoFlag.WAIT_FOR_ALL
    assert format_flags(flags) == "2Node Quorate WaitForAll AutoTieBreaker "
    assert format_flags(InfoFlag.LAST_MAN_STANDING | InfoFlag.ALLOW_DOWNSCALE) == "LastManStanding AllowDownscale "


def test_hex_ids_in_header_and_rows() -> None:
    text = format_status(status_of(three_nodes(), 1, "d", (1, 0xD)), hex_ids=True)
    assert "Node ID:          0x00000001\n" in text
    assert "0x00000002          1 node2\n" in text


def test_machine_parsable_forces_the_qdevice_column_with_nr() -> None:
    text = format_members(status_of(three_nodes(), 1, "d", (1, 1)), machine_parsable=True)
    assert "    Nodeid      Votes    Qdevice Name\n" in text
    assert "         1          1         NR node1 (local)\n" in text


def test_registered_qdevice_adds_its_column_and_row() -> None:
    status = status_of(three_nodes(), 1, "d", (1, 1))
    device = InfoFlag.QDEVICE_REGISTERED | InfoFlag.QDEVICE_ALIVE | InfoFlag.QDEVICE_CAST_VOTE
    members = tuple(
        dataclasses.replace(m, info=dataclasses.replace(m.info, flags=m.info.flags | device)) for m in status.members
    )
    local = dataclasses.replace(status.local, qdevice_votes=2, qdevice_name="Qdevice")
    text = format_members(dataclasses.replace(status, members=members, local=local))
    assert "         1          1    A,V,NMW node1 (local)\n" in text
    assert text.endswith("         0          2            Qdevice\n")


def test_not_voting_qdevice_shows_zero_votes_and_its_real_votes_after_the_name() -> None:
    status = status_of(three_nodes(), 1, "d", (1, 1))
    members = tuple(
        dataclasses.replace(m, info=dataclasses.replace(m.info, flags=InfoFlag.QDEVICE_REGISTERED))
        for m in status.members
    )
    local = dataclasses.replace(status.local, qdevice_votes=2, qdevice_name="Qdevice")
    text = format_members(dataclasses.replace(status, members=members, local=local))
    assert "NA,NV,NMW node1 (local)" in text
    assert text.endswith("         0          0            Qdevice (votes 2)\n")


def test_without_votequorum_no_votes_column_and_ring_id_is_the_sequence() -> None:
    status = QuorumStatus("d", None, 2, (1, 0x2C), True, (MemberEntry(1, "a"), MemberEntry(2, "b")))
    text = format_status(status)
    assert "Quorum provider:  Not configured\n" in text
    assert "Ring ID:          2c\n" in text
    assert "Votequorum" not in text
    assert format_members(status).splitlines()[3:] == ["    Nodeid Name", "         1 a", "         2 b (local)"]


@pytest.mark.parametrize(("order", "ids"), [("a", [3, 1, 2]), ("i", [1, 2, 3]), ("n", [2, 3, 1])])
def test_member_order_by_address_id_or_name(order: str, ids: list[int]) -> None:
    info = VoteInfo(1, 1, 1, 3, 3, 3, 2, InfoFlag.QUORATE)
    members = (MemberEntry(3, "b", info), MemberEntry(1, "z", info), MemberEntry(2, "a", info))
    text = format_members(QuorumStatus("d", "corosync_votequorum", 1, (1, 1), True, members, info), order=order)
    assert [int(line.split()[0]) for line in text.splitlines()[4:]] == ids


def test_date_is_ctime_without_newline() -> None:
    assert ctime(0).endswith("1970") or ctime(0).endswith("1969")
    assert "\n" not in ctime()


def test_node_name_prefers_nodelist_name_then_address() -> None:
    assert node_display_name("node1", ["10.0.0.1"]) == "node1"
    assert node_display_name(None, ["10.0.0.1"], reverse_dns=lambda a: "host1") == "host1"
    assert node_display_name("node1", ["10.0.0.1"], numeric=True) == "10.0.0.1"
    assert node_display_name(None, ["10.0.0.1", "10.1.0.1"], numeric=True, all_addresses=True) == "10.0.0.1,10.1.0.1"
