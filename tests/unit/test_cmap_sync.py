"""cmap's sync round (services/cmap/sync.py): config versions of the members, bad messages dropped."""

from __future__ import annotations

from pycorosync.engine.totem.api import RingId
from pycorosync.services.cmap.sync import CmapSync, decode_sync, encode_sync

RING = RingId(1, 8)


def test_each_members_config_version_heard_in_the_round_is_applied_at_activation() -> None:
    sync = CmapSync(own_nodeid=1, own_version=3)
    sync.init(RING, (1, 2, 3))
    assert decode_sync(sync.message()) == (8, 3)
    sync.on_deliver(1, RING, encode_sync(8, 3))
    sync.on_deliver(2, RING, encode_sync(8, 3))
    sync.on_deliver(3, RING, encode_sync(8, 2))
    heard, error = sync.activate()
    assert heard == {1: 3, 2: 3, 3: 2} and error is None


def test_messages_of_another_ring_of_non_members_or_malformed_are_dropped() -> None:
    sync = CmapSync(own_nodeid=1, own_version=0)
    sync.init(RING, (1, 2))
    sync.on_deliver(2, RingId(1, 4), encode_sync(4, 9))  # older ring
    sync.on_deliver(2, RING, encode_sync(4, 9))  # right ring, stale seq in the body
    sync.on_deliver(7, RING, encode_sync(8, 9))  # not a member
    for junk in (b"", b"\x01", b"\x02" + bytes(16), encode_sync(8, 1) + b"x"):
        sync.on_deliver(2, RING, junk)
    assert sync.bad_messages == 4
    heard, _ = sync.activate()
    assert heard == {}


def test_an_abort_forgets_the_round() -> None:
    sync = CmapSync(own_nodeid=1, own_version=0)
    sync.init(RING, (1, 2))
    sync.on_deliver(2, RING, encode_sync(8, 5))
    sync.abort()
    sync.on_deliver(2, RING, encode_sync(8, 5))
    assert sync.activate()[0] == {}


def test_a_versioned_node_merging_first_with_a_higher_version_reports_corosyncs_error_once() -> None:
    sync = CmapSync(own_nodeid=1, own_version=2)
    sync.init(RingId(1, 4), (1,))
    assert sync.activate()[1] is None  # alone: nothing to compare
    sync.init(RING, (1, 2))
    sync.on_deliver(2, RING, encode_sync(8, 5))
    _, error = sync.activate()
    assert error == "Received config version (5) is different than my config version (2)! Exiting"
    sync.init(RingId(1, 12), (1, 2))
    sync.on_deliver(2, RingId(1, 12), encode_sync(12, 5))
    assert sync.activate()[1] is None  # only on the first merge, as corosync
    unversioned = CmapSync(own_nodeid=1, own_version=0)
    unversioned.init(RING, (1, 2))
    unversioned.on_deliver(2, RING, encode_sync(8, 5))
    assert unversioned.activate()[1] is None
