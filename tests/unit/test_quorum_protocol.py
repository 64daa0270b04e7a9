"""The quorum / votequorum IPC messages: round trips, and client events that never crash a client."""

from __future__ import annotations

from hypothesis import given, strategies as st

from pycorosync.services.quorum import protocol as p
from pycorosync.services.quorum.client import (
    ExpectedVotesEvent,
    NodelistEvent,
    QuorumEvent,
    VotequorumEvent,
    VotequorumNodelistEvent,
    decode_event,
)
from pycorosync.services.quorum.votequorum import InfoFlag, NodeState, VoteInfo

ids = st.lists(st.integers(1, 0xFFFFFFFF), max_size=16).map(tuple)
rings = st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(0, 2**64 - 1))


@given(st.booleans(), rings, ids)
def test_quorum_notification_round_trips(quorate: bool, ring: tuple[int, int], members: tuple[int, ...]) -> None:
    assert decode_event(p.Msg.EV_Q_NOTIFY, p.encode_q_notify(quorate, ring, members)) == QuorumEvent(
        quorate, ring, members  # type: ignore[arg-type]
    )


@given(rings, ids, ids, ids)
def test_nodelist_notification_round_trips(ring: tuple[int, int], members: tuple[int, ...], joined: tuple[int, ...],
                                           left: tuple[int, ...]) -> None:
    event = decode_event(p.Msg.EV_Q_NODELIST, p.encode_q_nodelist(ring, members, joined, left))
    assert event == NodelistEvent(ring, members, joined, left)  # type: ignore[arg-type]


def test_votequorum_events_carry_the_tracking_context() -> None:
    nodes = ((1, NodeState.MEMBER), (2, NodeState.DEAD))
    assert decode_event(p.Msg.EV_VQ_QUORUM, p.encode_vq_quorum(9, True, nodes)) == VotequorumEvent(9, True, nodes)
    assert decode_event(p.Msg.EV_VQ_NODELIST, p.encode_vq_nodelist(9, (1, 8), (1, 2))) == VotequorumNodelistEvent(
        9, (1, 8), (1, 2)  # type: ignore[arg-type]
    )
    assert decode_event(p.Msg.EV_VQ_EXPECTEDVOTES, p.encode_vq_expected(9, 5)) == ExpectedVotesEvent(9, 5)


def test_getinfo_answer_round_trips_with_the_qdevice_name() -> None:
    info = VoteInfo(3, NodeState.LEAVING, 2, 5, 5, 4, 3, InfoFlag.QUORATE | InfoFlag.WAIT_FOR_ALL, 1, "dev")
    assert p.decode_info(p.encode_info(info)) == info


@given(st.sampled_from([m for m in p.Msg if m >= 64]), st.binary(max_size=64))
def test_arbitrary_event_bytes_decode_to_an_event_or_none(rtype: int, payload: bytes) -> None:
    decode_event(rtype, payload)  # never raises


def test_short_or_overlong_events_are_dropped() -> None:
    good = p.encode_q_notify(True, (1, 4), (1, 2))
    assert decode_event(p.Msg.EV_Q_NOTIFY, good[:-1]) is None
    assert decode_event(p.Msg.EV_Q_NOTIFY, good + b"\0") is None
    assert decode_event(p.Msg.EV_VQ_QUORUM, p.encode_vq_quorum(1, True, ((1, 7),))) is None  # no such state
