"""votequorum's rules (COROSYNC.md §8.3) and the worked examples (§8.4) on the pure state machine."""

from __future__ import annotations

import pytest

from pycorosync.services.quorum.settings import ATB_LIST, ATB_NONE, QuorumSettings
from pycorosync.services.quorum.simcluster import SimCluster
from pycorosync.services.quorum.votequorum import (
    ExpectedVotesNotification,
    InfoFlag,
    Multicast,
    NodeInfo,
    NodeState,
    QuorumNotification,
    Reconfigure,
    StoreExpectedVotes,
    VoteError,
)


def cluster(n: int, votes: dict[int, int] | None = None, **options: object) -> SimCluster:
    """n nodes (ids 1..n) all up in partition 0, with the given quorum options."""
    votes = votes or {}
    expected = sum(votes.get(i, 1) for i in range(1, n + 1))
    sim = SimCluster(
        lambda nodeid: QuorumSettings.build(expected, node_votes=votes.get(nodeid, 1), node_count=n, **options)
    )
    for nodeid in range(1, n + 1):
        sim.up(nodeid)
    return sim


def split(sim: SimCluster, *sides: tuple[int, ...]) -> None:
    for number, side in enumerate(sides[1:], start=1):
        sim.move(number, list(side))
    sim.update_all()


def quorate(sim: SimCluster) -> dict[int, bool]:
    return {status.nodeid: status.quorate for status in sim.status()}


def test_all_members_up_is_quorate_with_quorum_half_plus_one() -> None:
    sim = cluster(3)
    assert quorate(sim) == {1: True, 2: True, 3: True}
    info = sim.nodes[1].getinfo(0)
    assert info is not None
    assert (info.node_expected_votes, info.highest_expected, info.total_votes, info.quorum) == (3, 3, 3, 2)
    assert info.flags == InfoFlag.QUORATE


def test_two_nodes_without_two_node_survivor_is_inquorate() -> None:
    sim = cluster(2)
    sim.down(2)
    assert quorate(sim) == {1: False}
    assert sim.nodes[1].quorum == 2


def test_two_node_split_both_sides_stay_quorate() -> None:
    sim = cluster(2, two_node=True)
    split(sim, (1,), (2,))
    assert quorate(sim) == {1: True, 2: True}
    assert sim.nodes[1].quorum == 1
    assert sim.nodes[1].info_flags() & InfoFlag.TWONODE


def test_two_node_lone_node_at_cold_start_waits_for_all() -> None:
    sim = SimCluster(lambda nodeid: QuorumSettings.build(2, node_count=2, two_node=True))
    sim.up(1)
    assert quorate(sim) == {1: False}
    sim.up(2)
    assert quorate(sim) == {1: True, 2: True}


def test_two_node_is_off_with_more_than_two_nodes() -> None:
    settings = QuorumSettings.build(3, node_count=3, two_node=True)
    assert not settings.two_node
    assert settings.wait_for_all  # still implied by the option as written


def test_three_nodes_split_two_one_pair_is_quorate() -> None:
    sim = cluster(3)
    split(sim, (1, 2), (3,))
    assert quorate(sim) == {1: True, 2: True, 3: False}


def test_wait_for_all_not_quorate_until_every_node_was_seen_once() -> None:
    sim = SimCluster(lambda nodeid: QuorumSettings.build(3, node_count=3, wait_for_all=True))
    sim.up(1)
    sim.up(2)
    assert quorate(sim) == {1: False, 2: False}
    sim.up(3)
    assert quorate(sim) == {1: True, 2: True, 3: True}
    sim.down(3)
    assert quorate(sim) == {1: True, 2: True}


def test_wait_for_all_rearms_after_quorum_is_lost() -> None:
    sim = cluster(3, wait_for_all=True)
    sim.down(3)
    sim.down(2)
    assert quorate(sim) == {1: False}
    sim.up(2)
    # 2 of 3 votes would be enough for quorum, but WFA waits for all again after the loss
    assert quorate(sim) == {1: False, 2: False}
    sim.up(3)
    assert all(quorate(sim).values())


def test_restarted_node_joining_a_quorate_partition_does_not_wait_for_all() -> None:
    sim = cluster(5, wait_for_all=True)
    split(sim, (1, 2, 3), (4, 5))
    sim.down(4)
    sim.up(4, partition=0)
    # 4 votes != 5 expected, but the members it joins hold quorum and are not waiting
    assert quorate(sim) == {1: True, 2: True, 3: True, 4: True, 5: False}


def test_cancel_wait_for_all_grants_quorum_with_enough_votes() -> None:
    sim = SimCluster(lambda nodeid: QuorumSettings.build(3, node_count=3, wait_for_all=True))
    sim.up(1)
    sim.up(2)
    actions = sim.nodes[1].cancel_wait_for_all()
    assert sim.nodes[1].quorate
    assert any(isinstance(a, QuorumNotification) and a.quorate for a in actions)


@pytest.mark.parametrize(
    ("sides", "expected"), [(((1, 2), (3, 4)), [False] * 4), (((1, 2, 3), (4,)), [True] * 3 + [False])]
)
def test_four_nodes_need_three_votes(sides: tuple[tuple[int, ...], ...], expected: list[bool]) -> None:
    sim = cluster(4)
    split(sim, *sides)
    assert [quorate(sim)[i] for i in range(1, 5)] == expected


def test_auto_tie_breaker_lowest_side_with_node_one_wins_even_split() -> None:
    sim = cluster(4, auto_tie_breaker=True)
    split(sim, (3, 4), (1, 2))
    assert quorate(sim) == {1: True, 2: True, 3: False, 4: False}


def test_auto_tie_breaker_highest_side_with_highest_node_wins() -> None:
    sim = cluster(4, auto_tie_breaker=True, auto_tie_breaker_node="highest")
    split(sim, (1, 2), (3, 4))
    assert quorate(sim) == {1: False, 2: False, 3: True, 4: True}


def test_auto_tie_breaker_list_first_listed_present_node_wins() -> None:
    sim = cluster(4, auto_tie_breaker=True, auto_tie_breaker_node="3 1")
    assert sim.nodes[1].settings.auto_tie_breaker == ATB_LIST
    split(sim, (1, 2), (3, 4))
    assert quorate(sim) == {1: False, 2: False, 3: True, 4: True}


def test_auto_tie_breaker_list_skips_a_listed_node_that_is_down_everywhere() -> None:
    sim = cluster(6, auto_tie_breaker=True, auto_tie_breaker_node="6 2")
    sim.down(6)  # 5 of 6 still quorate; node 6 is no longer in the membership
    split(sim, (1, 2, 5), (3, 4))
    # 3 votes == 6 / 2 on the side of node 2, the first listed node that is still around
    assert quorate(sim) == {1: True, 2: True, 5: True, 3: False, 4: False}


def test_auto_tie_breaker_off_with_odd_nodes_without_wait_for_all() -> None:
    assert QuorumSettings.build(5, node_count=5, auto_tie_breaker=True).auto_tie_breaker == ATB_NONE
    assert QuorumSettings.build(5, node_count=5, auto_tie_breaker=True, wait_for_all=True).auto_tie_breaker != ATB_NONE


def test_auto_tie_breaker_not_used_when_the_other_side_may_hold_quorum() -> None:
    sim = cluster(4, auto_tie_breaker=True)
    sim.down(4)
    sim.down(3)  # 3 -> 2 members: 1 < quorum, ATB applies
    assert quorate(sim) == {1: True, 2: True}


def test_node_with_two_votes_raises_expected_votes() -> None:
    sim = cluster(4, votes={1: 2})
    split(sim, (2, 3, 4), (1,))
    assert quorate(sim) == {1: False, 2: True, 3: True, 4: True}
    info = sim.nodes[2].getinfo(0)
    assert info is not None and (info.node_expected_votes, info.quorum) == (5, 3)


def test_five_nodes_three_two_split_three_side_is_quorate() -> None:
    sim = cluster(5)
    split(sim, (1, 2, 3), (4, 5))
    assert quorate(sim) == {1: True, 2: True, 3: True, 4: False, 5: False}
    sim.join(0, 1)
    sim.update_all()
    assert all(quorate(sim).values())


def test_last_man_standing_steps_down_after_each_window() -> None:
    sim = cluster(5, last_man_standing=True, wait_for_all=True, last_man_standing_window_ms=10000)
    sim.down(5)
    sim.down(4)
    assert sim.nodes[1].quorum == 3
    sim.advance(10000)
    assert (sim.nodes[1].expected_votes, sim.nodes[1].quorum) == (3, 2)
    sim.down(3)
    assert quorate(sim) == {1: True, 2: True}
    sim.advance(10000)
    assert (sim.nodes[1].expected_votes, sim.nodes[1].quorum) == (2, 2)
    sim.down(2)
    assert quorate(sim) == {1: False}


def test_last_man_standing_window_not_expired_keeps_expected_votes() -> None:
    sim = cluster(4, last_man_standing=True, last_man_standing_window_ms=10000)
    sim.down(4)
    sim.advance(9999)
    assert sim.nodes[1].expected_votes == 4
    sim.down(3)  # second loss inside the window: 2 < quorum 3
    assert quorate(sim) == {1: False, 2: False}
    sim.advance(20000)
    assert sim.nodes[1].expected_votes == 4  # the timer fires only while quorate


def test_expected_votes_grow_with_total_and_are_never_lowered() -> None:
    sim = cluster(3)
    sim.up(4)
    sim.up(5)
    assert sim.nodes[1].expected_votes == 5
    split(sim, (1, 2), (3, 4, 5))
    assert quorate(sim) == {1: False, 2: False, 3: True, 4: True, 5: True}


def test_setexpected_rejects_values_below_total_and_lowers_quorum_when_allowed() -> None:
    sim = cluster(5)
    sim.down(5)
    sim.down(4)
    vq = sim.nodes[1]
    assert vq.setexpected(2) is VoteError.INVALID_PARAM
    result = sim.setexpected(1, 3)
    assert isinstance(result, Multicast) and result.message == Reconfigure(nodeid=0, expected_votes=3)
    assert (vq.expected_votes, vq.quorum) == (3, 2)
    assert any(isinstance(a, ExpectedVotesNotification) and a.expected_votes == 3 for a in sim.actions[2])
    assert sim.nodes[2].quorum == 2


def test_setvotes_unknown_node_is_name_not_found_and_bad_votes_invalid() -> None:
    sim = cluster(3)
    assert sim.nodes[1].setvotes(9, 1) is VoteError.NAME_NOT_FOUND
    assert isinstance(sim.setvotes(1, 2, 2), Multicast)
    info = sim.nodes[3].getinfo(2)
    assert info is not None and info.node_votes == 2 and info.total_votes == 4


def test_setvotes_that_would_put_quorum_above_total_votes_is_invalid() -> None:
    sim = cluster(5)
    for nodeid in (5, 4, 3):
        sim.down(nodeid)
    # total would be 1 with quorum 3 (expected votes stay 5)
    assert sim.nodes[1].setvotes(2, 0) is VoteError.INVALID_PARAM


def test_getinfo_reports_dead_nodes_and_unknown_ones_as_missing() -> None:
    sim = cluster(3)
    sim.down(3)
    info = sim.nodes[1].getinfo(3)
    assert info is not None and info.node_state == NodeState.DEAD
    assert sim.nodes[1].getinfo(42) is None


def test_expected_votes_tracking_asks_to_store_the_new_highest() -> None:
    sim = cluster(2, expected_votes_tracking=True)
    sim.up(3)
    assert StoreExpectedVotes(3) in sim.actions[1]


def test_expected_votes_tracking_barrier_is_a_floor_at_start() -> None:
    from pycorosync.services.quorum.votequorum import Votequorum

    vq = Votequorum(1, QuorumSettings.build(2, node_count=2, expected_votes_tracking=True), ev_barrier=5)
    assert vq.expected_votes == 5 and vq.quorum == 3


def leave_cleanly(sim: SimCluster, nodeid: int) -> None:
    sim._handle(nodeid, [sim.nodes[nodeid].prepare_leave()])
    sim.down(nodeid)


def test_allow_downscale_lowers_expected_votes_and_quorum_down_to_the_configured_value() -> None:
    # man votequorum: expected_votes 3 configured, the cluster grew to 5, ordered shutdowns bring it back to 3
    sim = SimCluster(lambda nodeid: QuorumSettings.build(3, node_count=5, allow_downscale=True))
    for nodeid in range(1, 6):
        sim.up(nodeid)
    assert (sim.nodes[1].expected_votes, sim.nodes[1].quorum) == (5, 3)
    leave_cleanly(sim, 5)
    assert (sim.nodes[1].expected_votes, sim.nodes[1].quorum) == (4, 3)
    leave_cleanly(sim, 4)
    assert (sim.nodes[1].expected_votes, sim.nodes[1].quorum) == (3, 2)
    assert ExpectedVotesNotification(3) in sim.actions[1]
    leave_cleanly(sim, 3)  # at the configured value: no lower
    assert (sim.nodes[1].expected_votes, sim.nodes[1].quorum) == (3, 2)
    assert quorate(sim) == {1: True, 2: True}
    sim.down(2)
    assert not sim.nodes[1].quorate


def test_allow_downscale_keeps_expected_votes_when_a_node_fails() -> None:
    sim = SimCluster(lambda nodeid: QuorumSettings.build(3, node_count=5, allow_downscale=True))
    for nodeid in range(1, 6):
        sim.up(nodeid)
    sim.down(5)  # a failure, not a leave
    assert (sim.nodes[1].expected_votes, sim.nodes[1].quorum) == (5, 3)
    assert sim.nodes[1].info_flags() & InfoFlag.ALLOW_DOWNSCALE


def test_quorum_notification_after_every_sync_carries_ring_and_members() -> None:
    sim = cluster(3)
    sim.actions[1].clear()
    sim.down(3)
    notes = [a for a in sim.actions[1] if isinstance(a, QuorumNotification)]
    assert notes[-1].quorate and notes[-1].members == (1, 2) and notes[-1].ring_id == (1, 16)


def test_a_sync_cut_short_does_not_hide_the_nodes_that_left_from_the_next_one() -> None:
    from pycorosync.services.quorum.votequorum import Votequorum

    vq = Votequorum(1, QuorumSettings.build(3, node_count=3, last_man_standing=True,
                                            last_man_standing_window_ms=1000))
    vq.sync_init((1, 4), (1, 2, 3), 0)
    for nodeid in (2, 3):
        vq.deliver(nodeid, NodeInfo(nodeid, 1, 3, 0))
    vq.sync_activate(0)
    vq.sync_init((1, 8), (1, 2), 10)  # node 3 left; this sync is aborted by another change
    vq.sync_init((1, 12), (1, 2), 20)
    vq.deliver(2, NodeInfo(2, 1, 3, 1))
    vq.sync_activate(20)
    assert vq.quorate and vq.previous_members == (1, 2, 3)
    assert vq.next_deadline_ms() == 1020  # node 3's departure starts the last_man_standing window
