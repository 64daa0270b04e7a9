"""The totem runtime driver in one process: two nodes' runtimes over in-memory rings, frames carried by
the test as a transport would, services played by the test through their submit/deliver rings."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from pycorosync.engine.runtime import records as rec
from pycorosync.engine.runtime.layout import NodeLayout, NodeRings
from pycorosync.engine.runtime.totem_proc import Bells, TotemRuntime, next_incarnation, read_ring_seq, write_ring_seq
from pycorosync.engine.totem.api import DeliverFrame, RingId
from pycorosync.engine.totem.config import TotemConfig
from pycorosync.engine.totem.core import TotemCore
from pycorosync.engine.totem.wire import ENTRY, KIND_WHOLE, MCAST_HEADER_BYTES, Mcast

SVC = "testecho"
SID = 200


class _MemSegment:
    def __init__(self, nbytes: int) -> None:
        self._arr = np.zeros(nbytes, np.uint8)

    def array(self) -> np.ndarray[Any, Any]:
        return self._arr

    def close(self) -> None:
        pass


def _node(nodeid: int, deliver_capacity: int = 1 << 16) -> TotemRuntime:
    layout = NodeLayout.compute([SVC], 1 << 16, {SVC: deliver_capacity})
    seg = _MemSegment(layout.payload_bytes)
    rings = NodeRings(layout, seg, reset=[s.name for s in layout.slots])  # type: ignore[arg-type]
    cfg = TotemConfig.defaults_for(token=200, node_count=2)
    core = TotemCore(cfg, nodeid, [1, 2], seed=nodeid, incarnation=1)
    return TotemRuntime(core, rings, Bells({}), {SVC: SID}, [SVC])


def _carry(nodes: dict[int, TotemRuntime]) -> None:
    """The transport: every tx record to its destination's rx (0 = every other node)."""
    for src, rt in nodes.items():
        for dest, frame in rt.rings.tx.pop_batch(1024):
            for n, other in nodes.items():
                if n != src and dest in (0, n):
                    assert other.rings.rx.push(src, frame)


class _Service:
    """The service side of one node: reads deliver.<svc>, answers SYNC_INIT with SYNC_DONE at once."""

    def __init__(self, rt: TotemRuntime, read: bool = True) -> None:
        self.rt = rt
        self.read = read
        self.records: list[rec.DeliverRecord] = []

    def step(self) -> None:
        if not self.read:
            return
        for rtype, payload in self.rt.rings.deliver[SVC].pop_batch(4096):
            r = rec.decode_deliver(rtype, payload)
            self.records.append(r)
            if isinstance(r, rec.SyncInitRecord):
                assert self.rt.rings.submit[SVC].push(rec.SUBMIT_SYNC_DONE, rec.encode_ring(r.ring_id))

    def mcast(self, body: bytes) -> bool:
        return bool(self.rt.rings.submit[SVC].push(rec.SUBMIT_MCAST, rec.encode_submit_mcast(body, 2)))

    def messages(self) -> list[tuple[int, bytes]]:
        return [(r.sender_nodeid, r.body) for r in self.records if isinstance(r, rec.MessageRecord)]

    def completed(self) -> RingId | None:
        done = [r.ring_id for r in self.records
                if isinstance(r, rec.SyncRecord) and r.rtype == rec.DELIVER_SYNC_COMPLETE]
        return done[-1] if done else None


def _run(nodes: dict[int, TotemRuntime], services: dict[int, _Service], until: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    for rt in nodes.values():
        if rt.core.state == "INIT":
            rt.start(time.monotonic_ns())
    while time.monotonic() < deadline:
        for rt in nodes.values():
            rt.pump(time.monotonic_ns())
        _carry(nodes)
        for svc in services.values():
            svc.step()
        if until():
            return True
        time.sleep(0.001)
    return bool(until())


def test_two_runtimes_form_a_ring_synchronize_and_deliver_in_one_order() -> None:
    nodes = {1: _node(1), 2: _node(2)}
    services = {n: _Service(rt) for n, rt in nodes.items()}
    assert _run(nodes, services, lambda: all(s.completed() and s.completed() == nodes[1].sync.ring_id
                                             and nodes[1].core.members == (1, 2) for s in services.values()), 10)
    kinds = [type(r).__name__ for r in services[1].records]
    assert kinds.index("SyncInitRecord") > kinds.index("ConfchgRecord")  # confchg first, then sync
    for k in range(50):
        assert services[1 + k % 2].mcast(b"m%d" % k)
    assert _run(nodes, services, lambda: all(len(s.messages()) == 50 for s in services.values()), 10)
    assert services[1].messages() == services[2].messages()
    assert sorted(b for _n, b in services[1].messages()) == sorted(b"m%d" % k for k in range(50))


def test_a_full_deliver_ring_is_backlogged_and_loses_nothing() -> None:
    nodes = {1: _node(1, deliver_capacity=4096), 2: _node(2)}
    services = {n: _Service(rt) for n, rt in nodes.items()}
    assert _run(nodes, services, lambda: all(s.completed() for s in services.values())
                and nodes[1].core.members == (1, 2), 10)
    services[1].read = False  # node 1's service stops reading
    for k in range(200):
        while not services[2].mcast(b"x%03d" % k + bytes(100)):
            _run(nodes, services, lambda: True, 0)
    assert _run(nodes, services, lambda: len(services[2].messages()) == 200, 10)
    # node 1 receives them too, but its deliver ring is full: they wait in the backlog
    assert _run(nodes, services, lambda: sum(len(b) for b in nodes[1].deliver_backlog.values()) > 0, 10)
    services[1].read = True
    assert _run(nodes, services, lambda: len(services[1].messages()) == 200, 10)
    assert [b[:4] for _n, b in services[1].messages()] == [b"x%03d" % k for k in range(200)]


def test_garbage_in_a_submit_ring_is_counted_and_dropped() -> None:
    nodes = {1: _node(1)}
    services = {1: _Service(nodes[1])}
    assert _run(nodes, services, lambda: services[1].completed() is not None, 10)
    nodes[1].rings.submit[SVC].push(99, b"junk")
    nodes[1].rings.submit[SVC].push(rec.SUBMIT_SYNC_DONE, b"short")
    assert services[1].mcast(b"after")
    assert _run(nodes, services, lambda: services[1].messages() == [(1, b"after")], 10)
    assert nodes[1].counters["bad_records"] == 2


def test_ring_seq_and_incarnation_persist_across_starts(tmp_path: Any) -> None:
    path = tmp_path / "ringid_1"
    assert read_ring_seq(path) == 0
    write_ring_seq(path, 0x1234)
    assert read_ring_seq(path) == 0x1234
    inc = tmp_path / "incarnation_1"
    first = next_incarnation(inc)
    assert next_incarnation(inc) == first + 1


def test_submits_do_not_ring_totem_while_its_queued_messages_wait_for_the_token_and_go_with_it() -> None:
    nodes = {1: _node(1), 2: _node(2)}
    services = {n: _Service(rt) for n, rt in nodes.items()}
    assert _run(nodes, services, lambda: all(s.completed() for s in services.values())
                and nodes[1].core.members == (1, 2), 10)
    # node 2 is not the representative (which holds an idle ring's token); no frame reaches it from now on
    # until the end, so the token cannot come while the test looks
    rt = nodes[2]
    submit = rt.rings.submit[SVC]
    rt.pump(time.monotonic_ns())
    while not rt.arm():  # frames carried before: let totem take them
        rt.pump(time.monotonic_ns())
    assert len(rt.core.sendq) == 0
    assert services[2].mcast(b"first")
    assert submit.needs_wake(), "an idle totem must be woken by a submit"
    rt.disarm()
    rt.pump(time.monotonic_ns())
    assert len(rt.core.sendq) == 1, "the message waits for the token"
    assert rt.arm()
    assert services[2].mcast(b"second")
    assert not submit.needs_wake(), "a submit woke totem although the token comes for its queue anyway"
    rt.disarm()
    assert _run(nodes, services, lambda: [b for _n, b in services[1].messages()][-2:] == [b"first", b"second"], 10)


def test_apply_sends_the_frames_first_and_keeps_each_services_records_in_the_cores_order() -> None:
    import os

    from pycorosync.engine.totem.api import ConfigChange, ConfigType, Deliver, Guarantee, LogEvent, SendFrame

    rt = _node(1)
    bell = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        rt.bells = Bells({"transport": bell})
        ring = RingId(1, 8)
        header = rec.service_header(SID)

        def message(k: int) -> Deliver:
            return Deliver(ring, 2, k, Guarantee.AGREED, header + b"m%d" % k)

        change = ConfigChange(ConfigType.REGULAR, ring, (1, 2), (), (2,))
        actions = [message(0), SendFrame(None, b"frame-a"), message(1), change, LogEvent("debug", "x"), message(2),
                   Deliver(ring, 2, 3, Guarantee.AGREED, rec.service_header(99) + b"unknown service"),
                   Deliver(ring, 2, 4, Guarantee.AGREED, b"\x01"), message(5), SendFrame(2, b"token")]
        assert rt.rings.tx.arm()  # the transport sleeps on its doorbell
        rt.apply(0, actions)
        # the frames are in the tx ring and the transport was woken before any delivery was routed
        assert rt.rings.tx.pop_batch() == [(0, b"frame-a"), (2, b"token")]
        assert os.eventfd_read(bell) == 1
        got = [rec.decode_deliver(t, p) for t, p in rt.rings.deliver[SVC].pop_batch()]
        kinds = [(type(r).__name__, getattr(r, "body", None)) for r in got]
        assert kinds == [("MessageRecord", b"m0"), ("MessageRecord", b"m1"), ("ConfchgRecord", None),
                         ("SyncInitRecord", None), ("MessageRecord", b"m2"), ("MessageRecord", b"m5")], kinds
        assert rt.counters["bad_records"] == 2  # the unknown service and the malformed payload: counted, skipped
    finally:
        os.close(bell)


def test_bad_submit_records_amid_good_ones_are_dropped_in_place_and_the_rest_keeps_its_order() -> None:
    nodes = {1: _node(1), 2: _node(2)}
    services = {n: _Service(rt) for n, rt in nodes.items()}
    assert _run(nodes, services, lambda: all(s.completed() for s in services.values())
                and nodes[1].core.members == (1, 2), 10)
    submit = nodes[1].rings.submit[SVC]
    nodes[1].core.sendq.max_message_bytes = 1000  # (a 16 MiB + 1 record would not fit this test's ring)
    too_big = 1001
    records = [(rec.SUBMIT_MCAST, rec.encode_submit_mcast(b"r0", 2)),
               (rec.SUBMIT_MCAST, rec.encode_submit_mcast(b"r1", 2)),
               (rec.SUBMIT_MCAST, bytes([9, 0, 0, 0]) + b"bad guarantee"),
               (rec.SUBMIT_MCAST, rec.encode_submit_mcast(bytes(too_big), 2)),
               (rec.SUBMIT_MCAST, rec.encode_submit_mcast(b"r2", 2)), (rec.SUBMIT_MCAST, b"\x01"),
               (rec.SUBMIT_MCAST, rec.encode_submit_mcast(b"r3", 2))]
    assert submit.push_many(records) == len(records)
    bad_before = nodes[1].counters["bad_records"]
    assert _run(nodes, services, lambda: all(len(s.messages()) == 4 for s in services.values()), 10)
    for svc in services.values():
        assert [b for _n, b in svc.messages()] == [b"r0", b"r1", b"r2", b"r3"]
    assert nodes[1].counters["bad_records"] - bad_before == 3  # guarantee 9, too big, too short


def _drain(rt: TotemRuntime) -> list[tuple[int, bytes]]:
    """Every record for the service, the backlog included (as the service would read them over time)."""
    out: list[tuple[int, bytes]] = []
    for _ in range(1000):
        got = rt.rings.deliver[SVC].pop_batch(4096)
        out += got
        rt._flush_outputs()
        if not got and not rt.deliver_backlog[SVC]:
            return out
    raise AssertionError("the deliver backlog does not drain")


@pytest.mark.parametrize("capacity", [1 << 16, 4096])
def test_a_frame_of_messages_reaches_the_deliver_ring_as_the_per_message_path_writes_it(capacity: int) -> None:
    """The kernel path for a whole frame (DeliverFrame) against ``_route`` per message: the same records
    in the same order, with other services' messages, malformed payloads and a full ring in between."""
    head = rec.service_header(SID)
    payloads = [head + b"a", head + b"b" * 500, rec.service_header(99) + b"not run here", b"\x01",
                head, head + b"c" * 1000, rec.service_header(SID, rec.KIND_SERVICE_BUILD) + b"short",
                *[head + bytes([k]) * 300 for k in range(12)]]
    entries = tuple((KIND_WHOLE, k % 4, 1000 + k, p, 0) for k, p in enumerate(payloads))
    frame = bytes(MCAST_HEADER_BYTES) + b"".join(ENTRY.pack(KIND_WHOLE, g, len(p), mid) + p
                                                 for _kind, g, mid, p, _t in entries)
    d = DeliverFrame(RingId(3, (1 << 40) + 7), 5, Mcast(5, 1, (3, (1 << 40) + 7), 1, 0, frame, entries))
    fast, slow = _node(1, deliver_capacity=capacity), _node(2, deliver_capacity=capacity)
    fast._deliver_frame(0, d)
    for m in d.messages():
        slow._route(0, m)
    got, want = _drain(fast), _drain(slow)
    assert len(want) == 16  # the 4 + 12 messages of the service, the empty one included
    assert got == want
    assert fast.counters["bad_records"] == slow.counters["bad_records"] >= 2


@pytest.mark.parametrize("capacity", [1 << 16, 4096])
def test_a_run_of_frames_reaches_the_deliver_ring_as_the_per_message_path_writes_it(capacity: int) -> None:
    """Consecutive DeliverFrames go through one kernel call (``deliver_frames``) until an entry it does
    not take: the same records in the same order as ``_route`` per message, with frames of another
    service, malformed payloads, an entry it stops in the middle of a frame and a full ring."""
    head = rec.service_header(SID)
    ring = RingId(3, 9)

    def frame(seq: int, payloads: list[bytes]) -> DeliverFrame:
        entries = tuple((KIND_WHOLE, k % 4, seq * 100 + k, p, 0) for k, p in enumerate(payloads))
        raw = bytes(MCAST_HEADER_BYTES) + b"".join(ENTRY.pack(KIND_WHOLE, g, len(p), mid) + p
                                                   for _kind, g, mid, p, _t in entries)
        return DeliverFrame(ring, 1 + seq % 2, Mcast(1 + seq % 2, 1, (3, 9), seq, 0, raw, entries))

    frames = [frame(1, [head + b"a" * 200]), frame(2, [head + b"b" * 300, head + b"c"]),
              frame(3, [rec.service_header(99) + b"other"]), frame(4, [head + b"d" * 700]),
              frame(5, [head + b"e", b"\x01", head + b"f" * 100]),  # stops in the middle, goes on after
              *[frame(6 + k, [head + bytes([k]) * 400]) for k in range(12)]]
    fast, slow = _node(1, deliver_capacity=capacity), _node(2, deliver_capacity=capacity)
    fast.apply(0, frames)
    for d in frames:
        for m in d.messages():
            slow._route(0, m)
    got, want = _drain(fast), _drain(slow)
    assert len(want) == 18
    assert got == want
    assert fast.counters["bad_records"] == slow.counters["bad_records"] >= 2
