"""votequorum's cluster messages survive encoding; malformed bodies are refused, never raised on."""

from __future__ import annotations

from hypothesis import given, strategies as st

from pycorosync.services.quorum.cluster_msg import decode, encode
from pycorosync.services.quorum.votequorum import NodeInfo, Reconfigure

u32 = st.integers(1, 0xFFFFFFFF)


@given(u32, st.integers(0, 0xFFFFFFFF), u32, st.integers(0, 0xFFFFFFFF))
def test_nodeinfo_round_trips(nodeid: int, votes: int, expected: int, flags: int) -> None:
    message = NodeInfo(nodeid, votes, expected, flags)
    assert decode(encode(message)) == message


def test_reconfigure_round_trips_for_expected_votes_and_node_votes() -> None:
    for message in (Reconfigure(0, expected_votes=5), Reconfigure(3, votes=2), Reconfigure(3, votes=0),
                    Reconfigure(2, cancel_wait_for_all=True)):
        assert decode(encode(message)) == message


@given(st.binary(max_size=40))
def test_arbitrary_bytes_decode_to_a_message_or_none(body: bytes) -> None:
    result = decode(body)
    assert result is None or isinstance(result, NodeInfo | Reconfigure)


def test_truncated_or_unknown_kind_is_refused() -> None:
    body = encode(NodeInfo(1, 1, 3, 0))
    assert decode(body[:-1]) is None
    assert decode(b"\x09" + body[1:]) is None
    assert decode(b"") is None
    assert decode(encode(NodeInfo(0, 1, 3, 0))) is None
