"""The sync coordinator (PROTOCOL.md §4) and the runtime records, without processes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, strategies as st

from pycorosync.engine.runtime import records as rec
from pycorosync.engine.runtime.sync import SendBarrier, SyncCoordinator, SyncLog, ToService
from pycorosync.engine.totem.api import ConfigChange, ConfigType, RingId

R1 = RingId(1, 4)
R2 = RingId(1, 8)


def _regular(ring: RingId, members: tuple[int, ...]) -> ConfigChange:
    return ConfigChange(ConfigType.REGULAR, ring, members, (), members)


def _records(outs: list[object]) -> list[tuple[int, int]]:
    """(service id, record type) of the ToService outputs, in order."""
    return [(o.service_id, rec.encode_deliver(o.record)[0]) for o in outs if isinstance(o, ToService)]


def test_services_are_synchronized_one_after_the_other_in_id_order_then_all_complete() -> None:
    sync = SyncCoordinator(1, [3, 0, 2], all_service_ids=[200])
    outs = sync.on_confchg(_regular(R1, (1, 2)))
    assert _records(outs) == [(0, rec.DELIVER_SYNC_INIT)]
    assert sync.on_sync_done(0, R1) == [SendBarrier(0, R1)]
    assert sync.on_barrier(1, 0, R1) == []
    outs = sync.on_barrier(2, 0, R1)
    assert _records(outs) == [(0, rec.DELIVER_SYNC_ACTIVATE), (2, rec.DELIVER_SYNC_INIT)]
    sync.on_sync_done(2, R1)
    sync.on_barrier(2, 2, R1)
    outs = sync.on_barrier(1, 2, R1)
    assert _records(outs) == [(2, rec.DELIVER_SYNC_ACTIVATE), (3, rec.DELIVER_SYNC_INIT)]
    sync.on_sync_done(3, R1)
    sync.on_barrier(1, 3, R1)
    outs = sync.on_barrier(2, 3, R1)
    assert _records(outs) == [(3, rec.DELIVER_SYNC_ACTIVATE), (0, rec.DELIVER_SYNC_COMPLETE),
                              (2, rec.DELIVER_SYNC_COMPLETE), (3, rec.DELIVER_SYNC_COMPLETE),
                              (200, rec.DELIVER_SYNC_COMPLETE)]
    assert any(isinstance(o, SyncLog) and "Completed service synchronization" in o.text for o in outs)
    assert sync.completed == R1 and not sync.in_progress


def test_barriers_of_a_peer_one_service_ahead_are_kept_for_when_that_service_starts() -> None:
    sync = SyncCoordinator(1, [0, 2])
    sync.on_confchg(_regular(R1, (1, 2)))
    sync.on_barrier(2, 0, R1)
    sync.on_barrier(2, 2, R1)  # node 2 already finished service 2
    sync.on_sync_done(0, R1)
    outs = sync.on_barrier(1, 0, R1)
    assert _records(outs) == [(0, rec.DELIVER_SYNC_ACTIVATE), (2, rec.DELIVER_SYNC_INIT)]
    sync.on_sync_done(2, R1)
    outs = sync.on_barrier(1, 2, R1)
    assert (2, rec.DELIVER_SYNC_COMPLETE) in _records(outs)


def test_a_new_configuration_aborts_the_service_being_synchronized_and_restarts_from_the_first() -> None:
    sync = SyncCoordinator(1, [0, 2])
    sync.on_confchg(_regular(R1, (1, 2, 3)))
    sync.on_sync_done(0, R1)
    for n in (1, 2, 3):
        sync.on_barrier(n, 0, R1)
    assert sync.active_service == 2
    outs = sync.on_confchg(ConfigChange(ConfigType.TRANSITIONAL, R2, (1, 2), (3,), ()))
    assert outs == []
    outs = sync.on_confchg(_regular(R2, (1, 2)))
    tos = [o for o in outs if isinstance(o, ToService)]
    assert tos[0] == ToService(2, rec.SyncRecord(rec.DELIVER_SYNC_ABORT, R1))
    assert tos[1] == ToService(0, rec.SyncInitRecord(R2, (1, 2), (1, 2)))
    assert sync.aborted == 1


def test_barriers_and_done_reports_of_another_ring_or_from_non_members_are_ignored() -> None:
    sync = SyncCoordinator(1, [0])
    sync.on_confchg(_regular(R2, (1, 2)))
    assert sync.on_sync_done(0, R1) == []
    sync.on_sync_done(0, R2)
    assert sync.on_sync_done(0, R2) == []  # reported once
    assert sync.on_barrier(2, 0, R1) == []
    assert sync.on_barrier(7, 0, R2) == []
    sync.on_barrier(1, 0, R2)
    assert sync.completed is None
    assert _records(sync.on_barrier(2, 0, R2))[-1] == (0, rec.DELIVER_SYNC_COMPLETE)


def test_without_sync_capable_services_every_regular_change_completes_at_once() -> None:
    sync = SyncCoordinator(1, [], all_service_ids=[1])
    outs = sync.on_confchg(_regular(R1, (1,)))
    assert _records(outs) == [(1, rec.DELIVER_SYNC_COMPLETE)]


@given(st.lists(st.integers(1, 2**32 - 1), max_size=8), st.lists(st.integers(1, 2**32 - 1), max_size=8),
       st.lists(st.integers(1, 2**32 - 1), max_size=8), st.integers(0, 1), st.integers(0, 2**64 - 1))
def test_confchg_records_round_trip(members: list[int], left: list[int], joined: list[int], ctype: int,
                                   seq: int) -> None:
    r = rec.ConfchgRecord(ConfigType(ctype), RingId(3, seq), tuple(members), tuple(left), tuple(joined))
    assert rec.decode_deliver(*rec.encode_deliver(r)) == r


@given(st.binary(max_size=64), st.integers(0, 3), st.integers(1, 2**32 - 1))
def test_message_and_sync_records_round_trip(body: bytes, guarantee: int, sender: int) -> None:
    for r in (rec.MessageRecord(sender, RingId(1, 2), guarantee, body),
              rec.SyncInitRecord(RingId(sender, 9), (1, sender), (sender,)),
              rec.SyncRecord(rec.DELIVER_SYNC_ACTIVATE, RingId(sender, 1)),
              rec.NodeStateRecord(sender, RingId(1, 1), 1)):
        assert rec.decode_deliver(*rec.encode_deliver(r)) == r
    g, got = rec.decode_submit_mcast(rec.encode_submit_mcast(body, guarantee))
    assert (g, bytes(got)) == (guarantee, body)


@given(st.integers(0, 10), st.binary(max_size=80))
def test_any_bytes_decode_to_a_record_or_a_record_error(rtype: int, data: bytes) -> None:
    with contextlib.suppress(rec.RecordError):
        rec.decode_deliver(rtype, data)


def test_short_service_payloads_are_record_errors() -> None:
    with pytest.raises(rec.RecordError):
        rec.split_service_payload(b"\x01")
    sid, kind, body = rec.split_service_payload(rec.barrier_payload(2, R1))
    assert (sid, kind, rec.decode_ring(body)) == (2, rec.KIND_BARRIER, R1)


def _run_round(sync: SyncCoordinator, ring: RingId, members: tuple[int, ...], services: tuple[int, ...]) -> list[object]:
    outs: list[object] = []
    for svc in services:
        sync.on_sync_done(svc, ring)
        for n in members:
            outs += sync.on_barrier(n, svc, ring)
    return outs


def test_service_build_of_the_current_ring_runs_its_sync_again_every_member_transitional() -> None:
    sync = SyncCoordinator(1, [0, 2])
    sync.on_confchg(ConfigChange(ConfigType.TRANSITIONAL, R1, (1,), (2,), ()))
    sync.on_confchg(_regular(R1, (1, 2)))
    _run_round(sync, R1, (1, 2), (0, 2))
    assert sync.completed == R1
    assert sync.on_resync(R2) == []  # another ring: ignored
    outs = sync.on_resync(R1)
    inits = [o.record for o in outs if isinstance(o, ToService)]
    assert len(inits) == 1 and isinstance(inits[0], rec.SyncInitRecord)
    assert inits[0].ring_id == R1 and inits[0].transitional == (1, 2) and sync.resyncs == 1
    outs = _run_round(sync, R1, (1, 2), (0, 2))
    assert (2, rec.DELIVER_SYNC_COMPLETE) in _records(outs) and not sync.in_progress


def test_service_build_during_a_round_starts_the_next_round_when_it_completes() -> None:
    sync = SyncCoordinator(1, [0, 2])
    sync.on_confchg(_regular(R1, (1, 2)))
    assert sync.current_init(0) is not None and sync.current_init(2) is None
    assert sync.on_resync(R1) == []  # not now: the running round is not aborted
    outs = _run_round(sync, R1, (1, 2), (0, 2))
    assert _records(outs)[-3:] == [(0, rec.DELIVER_SYNC_COMPLETE), (2, rec.DELIVER_SYNC_COMPLETE),
                                   (0, rec.DELIVER_SYNC_INIT)]
    assert sync.in_progress and sync.resyncs == 1
