"""cfg wire formats: requests, node status, cluster messages; malformed input is refused, never fatal."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from pycorosync.ipc.errors import CsError, CsErrorCode
from pycorosync.services.cfg import protocol as p


def test_cluster_messages_round_trip() -> None:
    for msg in (p.KillNode(3, "Killed by corosync-cfgtool"), p.Shutdown(), p.ReloadConfig(2**63 + 5)):
        assert p.decode_cluster(p.encode_cluster(msg)) == msg


@given(st.binary(max_size=300))
def test_any_bytes_decode_to_a_message_or_a_protocol_error(body: bytes) -> None:
    try:
        msg = p.decode_cluster(body)
    except p.ProtocolError:
        return
    assert p.decode_cluster(p.encode_cluster(msg)) == msg


def test_truncated_and_unknown_cluster_messages_are_protocol_errors() -> None:
    good = p.encode_cluster(p.KillNode(2, "why"))
    for bad in (b"", good[:-1], good + b"x", bytes([9, 0, 0, 0]), p.encode_cluster(p.Shutdown()) + b"\0"):
        with pytest.raises(p.ProtocolError):
            p.decode_cluster(bad)


def test_node_status_round_trips_with_eight_links() -> None:
    link = p.CfgLinkStatus(True, True, False, 1397, "10.0.0.1", "10.0.0.2")
    status = p.CfgNodeStatus(1, 2, True, link_status=(link,) + (p.CfgLinkStatus(),) * 7)
    back = p.decode_node_status(p.encode_node_status(status))
    assert back == status and len(back.link_status) == p.CFG_MAX_LINKS


def test_a_kill_reason_over_255_bytes_is_name_too_long() -> None:
    with pytest.raises(CsError) as info:
        p.encode_killnode(2, "x" * 256)
    assert info.value.code == CsErrorCode.CS_ERR_NAME_TOO_LONG
    assert p.decode_killnode(p.encode_killnode(2, "x" * 255)) == (2, "x" * 255)


def test_short_requests_are_invalid_param() -> None:
    with pytest.raises(CsError) as info:
        p.decode_u32(b"\x01\x00", "TRYSHUTDOWN")
    assert info.value.code == CsErrorCode.CS_ERR_INVALID_PARAM


def test_ring_status_and_address_lists_round_trip() -> None:
    assert p.decode_ring_status(p.encode_ring_status([("0 10.0.0.1", "n33")])) == [("0 10.0.0.1", "n33")]
    assert p.decode_str_list(p.encode_str_list(["10.0.0.1", "fe80::1"]), "addrs") == ["10.0.0.1", "fe80::1"]
