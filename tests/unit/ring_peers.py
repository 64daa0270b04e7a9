"""Producer and consumer programs for the cross-process ring tests (run as ``python -m tests.unit.ring_peers``).

The segment holds two rings: the data ring at offset 0 and, after it, an ack ring going back.
The producer writes a deterministic stream: record ``seq`` has type ``seq & 0xFFFFFFFF``, length
``8 + seq * 7919 % max_len``, the 8-byte little-endian ``seq`` then bytes ``(seq + i) & 0xFF``. The
consumer checks every byte of every record in order. Both sleep on doorbells (the consumer when the
ring is empty, the producer when it is full) with a long timeout, and count the waits that ended by
timeout: with a correct wake-up protocol there are none. In burst mode the producer waits after each
burst until the consumer acknowledges all of it (the consumer acks before every sleep), so a lost
wake-up on either ring leaves both asleep and shows as a timeout instead of being rescued by the
next burst. Each prints one JSON line when done. With ``--plain 1`` a peer uses ``ipc.plainring`` (plain
Python) instead of the numba kernels, against a peer that uses the kernels.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from typing import Any

import numpy as np
from numba import njit

from pycorosync.ipc import ring_kernels as rk
from pycorosync.ipc.doorbell import Doorbell, wait_for_records
from pycorosync.ipc.plainring import PlainRing
from pycorosync.ipc.ring import Ring, RingCorruptError
from pycorosync.ipc.segment import Segment, SegmentKind

WAIT_S = 5.0


@njit(cache=True, nogil=True)
def record_len(seq: int, max_len: int) -> int:
    return 8 + (seq * 7919) % max_len


@njit(cache=True, nogil=True)
def produce(buf: Any, base: int, cap: int, seq0: int, n: int, max_len: int) -> int:
    k = 0
    while k < n:
        seq = seq0 + k
        ln = record_len(seq, max_len)
        hdr = rk.ring_reserve(buf, base, cap, ln)
        if hdr < 0:
            break
        p = hdr + 8
        for i in range(8):
            buf[p + i] = (seq >> (8 * i)) & 0xFF
        for i in range(8, ln):
            buf[p + i] = (seq + i) & 0xFF
        rk.ring_commit(buf, base, cap, seq & 0xFFFFFFFF, ln)
        k += 1
    rk.ring_publish(buf, base)
    return k


@njit(cache=True, nogil=True)
def consume(buf: Any, base: int, cap: int, seq0: int, max_len: int, out: Any) -> tuple[int, int]:
    """(records verified, -1) or (index, first bad seq); the head is published after the batch."""
    k = rk.ring_scan(buf, base, cap, out)
    if k < 0:
        return 0, seq0
    for j in range(k):
        seq = seq0 + j
        hdr, rtype, n = out[j, 0], out[j, 1], out[j, 2]
        if rtype != (seq & 0xFFFFFFFF) or n != record_len(seq, max_len):
            return j, seq
        p = hdr + 8
        got = 0
        for i in range(8):
            got |= np.int64(buf[p + i]) << (8 * i)
        if got != seq:
            return j, seq
        for i in range(8, n):
            if buf[p + i] != ((seq + i) & 0xFF):
                return j, seq
    rk.ring_publish_head(buf, base)
    return k, -1


_PATTERN = bytes(range(256)) * 4


def produce_plain(ring: PlainRing, seq0: int, n: int, max_len: int) -> int:
    """``produce`` through a plain ring (each record published as it is committed)."""
    k = 0
    while k < n:
        seq = seq0 + k
        ln = 8 + (seq * 7919) % max_len
        view = ring.claim(ln)
        if view is None:
            break
        view[:8] = seq.to_bytes(8, "little")
        start = (seq + 8) & 0xFF
        view[8:] = _PATTERN[start : start + ln - 8]
        del view
        ring.commit(seq & 0xFFFFFFFF)
        k += 1
    return k


def consume_plain(ring: PlainRing, seq0: int, max_len: int) -> tuple[int, int]:
    """``consume`` through a plain ring."""
    try:
        items = ring.pop_batch(256)
    except RingCorruptError:
        return 0, seq0
    for j, (rtype, payload) in enumerate(items):
        seq = seq0 + j
        ln = 8 + (seq * 7919) % max_len
        start = (seq + 8) & 0xFF
        if (rtype != seq & 0xFFFFFFFF or len(payload) != ln or int.from_bytes(payload[:8], "little") != seq
                or payload[8:] != _PATTERN[start : start + ln - 8]):
            return j, seq
    return len(items), -1


def warm() -> None:
    buf = np.zeros(rk.RING_HEADER_BYTES + 1024, np.uint8)
    Ring.create(buf, 1024)
    produce(buf, 0, 1024, 0, 3, 50)
    consume(buf, 0, 1024, 0, 50, np.zeros((4, 3), np.int64))


ACK_CAPACITY = 1 << 16


def _open(memfd: int, capacity: int, plain: int = 0) -> tuple[Segment, Any, Any]:
    seg = Segment.attach_fd(memfd, SegmentKind.RINGS, 1)
    arr = seg.array()
    kind: Any = PlainRing if plain else Ring
    data = kind.attach(arr, capacity=capacity, label=seg.name)
    ack = kind.attach(arr, offset=Ring.layout_bytes(capacity), capacity=ACK_CAPACITY, label=seg.name + " ack")
    return seg, data, ack


def _close(seg: Segment, *rings: Any) -> None:
    for ring in rings:
        ring.close()
    seg.close()


def _timed_out(t0: float) -> int:
    """1 if a wait that returned empty-handed lasted its whole timeout (0 for an early spurious return)."""
    return int(time.monotonic() - t0 >= WAIT_S * 0.9)


def run_producer(args: argparse.Namespace) -> dict[str, Any]:
    seg, ring, ack = _open(args.memfd, args.capacity, args.plain)
    to_consumer, to_me = Doorbell(args.consumer_fd), Doorbell(args.producer_fd)
    if args.plain:
        def put(seq0: int, n: int, max_len: int) -> int:
            return produce_plain(ring, seq0, n, max_len)
    else:
        arr, cap = ring.array, ring.capacity

        def put(seq0: int, n: int, max_len: int) -> int:
            return int(produce(arr, 0, cap, seq0, n, max_len))
    rng = random.Random(args.seed)
    sent = timeouts = sleeps = acked = 0
    print("ready", flush=True)
    while sent < args.count:
        burst = rng.randint(1, args.max_burst) if args.max_burst else args.count
        target = min(args.count, sent + burst)
        while sent < target:
            k = put(sent, min(target - sent, 256), args.max_len)
            sent += k
            to_consumer.notify(ring)
            if k:
                continue
            need = int(record_len(sent, args.max_len))
            if args.futex:
                sleeps += 1
                t0 = time.monotonic()
                if not ring.wait_for_space(need, WAIT_S):
                    timeouts += _timed_out(t0)
            elif ring.arm_producer(need):
                sleeps += 1
                if not to_me.wait(WAIT_S):
                    timeouts += 1
        while args.max_burst and acked < sent:
            for _, payload in ack.pop_batch():
                acked = max(acked, int.from_bytes(payload, "little"))
            if acked >= sent:
                break
            t0 = time.monotonic()
            if not (ack.wait(WAIT_S) if args.futex else wait_for_records(to_me, [ack], WAIT_S)):
                timeouts += _timed_out(t0)
        if args.max_pause_us:
            time.sleep(rng.random() * args.max_pause_us / 1e6)  # the producer's think time, not a wait
    _close(seg, ring, ack)
    return {"role": "producer", "sent": sent, "timeouts": timeouts, "sleeps": sleeps}


def _ack(ack: Any, to_producer: Doorbell, got: int, acked: int) -> int:
    """Tells the producer how far the consumer has read (before sleeping, and at the end)."""
    if got != acked and ack.push(0, got.to_bytes(8, "little")):
        to_producer.notify(ack)
        return got
    return acked


def run_consumer(args: argparse.Namespace) -> dict[str, Any]:
    seg, ring, ack = _open(args.memfd, args.capacity, args.plain)
    my_bell, to_producer = Doorbell(args.consumer_fd), Doorbell(args.producer_fd)
    if args.plain:
        def take(seq0: int, max_len: int) -> tuple[int, int]:
            return consume_plain(ring, seq0, max_len)
    else:
        arr, cap = ring.array, ring.capacity
        out = np.zeros((256, 3), np.int64)

        def take(seq0: int, max_len: int) -> tuple[int, int]:
            k, bad = consume(arr, 0, cap, seq0, max_len, out)
            return int(k), int(bad)
    got = timeouts = sleeps = acked = 0
    bad = -1
    print("ready", flush=True)
    while got < args.count:
        k, bad = take(got, args.max_len)
        if bad >= 0:
            break
        got += k
        if k:
            if ring.producer_needs_wake():
                to_producer.ring()
            continue
        acked = _ack(ack, to_producer, got, acked)
        sleeps += 1
        t0 = time.monotonic()
        if not (ring.wait(WAIT_S) if args.futex else wait_for_records(my_bell, [ring], WAIT_S)):
            timeouts += _timed_out(t0)
    _ack(ack, to_producer, got, acked)
    _close(seg, ring, ack)
    return {"role": "consumer", "received": got, "bad_seq": int(bad), "timeouts": timeouts, "sleeps": sleeps}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["producer", "consumer", "idle"])
    p.add_argument("--memfd", type=int, required=True)
    p.add_argument("--capacity", type=int, required=True)
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--max-len", type=int, default=200)
    p.add_argument("--consumer-fd", type=int, required=True)
    p.add_argument("--producer-fd", type=int, required=True)
    p.add_argument("--max-burst", type=int, default=0)
    p.add_argument("--max-pause-us", type=int, default=0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--futex", type=int, default=0, help="1: sleep on the rings' futex words, not the doorbells")
    p.add_argument("--plain", type=int, default=0, help="1: plain-Python rings (ipc.plainring), not the kernels")
    args = p.parse_args(argv)
    if args.role == "idle":  # a consumer of a ring nobody writes to: sleeps until the doorbell or stdin closes
        seg, ring, ack = _open(args.memfd, args.capacity)
        bell = Doorbell(args.consumer_fd)
        print("ready", flush=True)
        rung = wait_for_records(bell, [ring], 30.0)
        _close(seg, ring, ack)
        print(json.dumps({"role": "idle", "rung": rung}), flush=True)
        return 0
    result = run_producer(args) if args.role == "producer" else run_consumer(args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
