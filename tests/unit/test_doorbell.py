"""Doorbells: eventfd wake-ups driven by the rings' waiting flags, with no lost wake-up and no idle spin."""

from __future__ import annotations

import asyncio
import select
import threading
import time

import numpy as np
import psutil
import pytest

from pycorosync.ipc import ring_kernels as rk
from pycorosync.ipc.doorbell import Doorbell, wait_for_records
from pycorosync.ipc.ring import Ring
from tests.unit.peer_procs import result, shared_ring, wait_line


def _ring(capacity: int = 4096) -> Ring:
    return Ring.create(np.zeros(Ring.layout_bytes(capacity), np.uint8), capacity)


def test_wait_times_out_when_nobody_rings() -> None:
    with Doorbell() as bell:
        t0 = time.monotonic()
        assert not bell.wait(0.05)
        assert time.monotonic() - t0 >= 0.045


def test_a_ring_before_the_wait_is_not_lost_and_wait_clears_it() -> None:
    with Doorbell() as bell:
        bell.ring()
        bell.ring()
        assert bell.wait(5.0)
        assert not bell.wait(0)  # cleared by the first wait
        bell.ring()
        assert bell.clear() == 1
        assert bell.clear() == 0


def test_wait_wakes_when_another_thread_rings() -> None:
    with Doorbell() as bell:
        timer = threading.Timer(0.05, bell.ring)
        timer.start()
        try:
            t0 = time.monotonic()
            assert bell.wait(5.0)
            assert time.monotonic() - t0 < 2.0
        finally:
            timer.cancel()


def test_doorbell_works_with_epoll() -> None:
    with Doorbell() as bell:
        ep = select.epoll()
        try:
            ep.register(bell.fileno(), select.EPOLLIN)
            assert ep.poll(0) == []
            bell.ring()
            assert ep.poll(1.0) == [(bell.fileno(), select.EPOLLIN)]
            bell.clear()
            assert ep.poll(0) == []
        finally:
            ep.close()


def test_doorbell_works_with_asyncio_add_reader() -> None:
    async def scenario() -> list[tuple[int, bytes]]:
        loop = asyncio.get_running_loop()
        ring = _ring()
        got: list[tuple[int, bytes]] = []
        done = asyncio.Event()
        with Doorbell() as bell:

            def readable() -> None:
                bell.clear()
                got.extend(ring.pop_batch())
                if len(got) == 3:
                    done.set()
                else:
                    ring.arm()

            loop.add_reader(bell.fileno(), readable)
            try:
                assert ring.arm()

                def produce() -> None:
                    for i in range(3):
                        ring.push(i, b"m%d" % i)
                        bell.notify(ring)

                loop.call_later(0.01, produce)
                await asyncio.wait_for(done.wait(), 5.0)
            finally:
                loop.remove_reader(bell.fileno())
        return got

    assert asyncio.run(scenario()) == [(0, b"m0"), (1, b"m1"), (2, b"m2")]


def test_notify_rings_only_for_a_sleeping_consumer() -> None:
    ring = _ring()
    with Doorbell() as bell:
        ring.push(1, b"a")
        assert not bell.notify(ring)  # consumer awake: no syscall
        ring.pop()
        assert ring.arm()
        ring.push(2, b"b")
        assert bell.notify(ring)
        assert not bell.notify(ring)  # one wake per sleep
        assert bell.clear() == 1


def test_one_doorbell_serves_many_rings() -> None:
    rings = [_ring() for _ in range(5)]
    with Doorbell() as bell:
        rings[3].push(1, b"waiting already")
        assert wait_for_records(bell, rings, 5.0)  # no sleep: a ring had data
        rings[3].pop()

        def late_producer() -> None:
            rings[4].push(2, b"late")
            bell.notify(rings[4])

        timer = threading.Timer(0.05, late_producer)
        timer.start()
        try:
            assert wait_for_records(bell, rings, 5.0)
        finally:
            timer.cancel()
        assert rings[4].pop() == (2, b"late")
        assert not wait_for_records(bell, rings, 0.02)  # nothing more: times out


def test_a_stale_ring_of_the_bell_does_not_wake_an_idle_consumer() -> None:
    rings = [_ring() for _ in range(3)]
    with Doorbell() as bell:
        rings[0].arm()
        rings[0].push(1, b"x")
        assert bell.notify(rings[0])  # rung while the consumer was awake anyway
        assert rings[0].pop() == (1, b"x")
        t0 = time.monotonic()
        assert not wait_for_records(bell, rings, 0.05)  # the stale count was cleared before sleeping
        assert time.monotonic() - t0 >= 0.045


def test_a_consumer_asleep_on_the_ring_futex_is_woken_by_the_publish() -> None:
    ring = _ring()
    woke: list[bool] = []
    t = threading.Thread(target=lambda: woke.append(ring.wait(5.0)))
    t0 = time.monotonic()
    t.start()
    try:
        deadline = time.monotonic() + 5.0
        while ring._index(rk.OFF_CWAIT) & 0xFFFFFFFF != rk.WAIT_FUTEX:  # the flag is the sleeper saying it sleeps
            assert time.monotonic() < deadline, "the waiter never armed"
            time.sleep(0.001)
        ring.push(1, b"x")
        assert not ring.needs_wake()  # woken through the futex: no doorbell to write
    finally:
        t.join(10)
    assert woke == [True]
    assert time.monotonic() - t0 < 4.0
    assert ring.counters().wakes == 1


def test_futex_wait_returns_at_once_when_data_is_there_and_times_out_otherwise() -> None:
    ring = _ring()
    t0 = time.monotonic()
    assert not ring.wait(0.05)
    assert time.monotonic() - t0 >= 0.045
    ring.push(1, b"x")
    assert ring.wait(5.0)
    assert not ring.needs_wake()  # the flag was cleared on the way out


def test_a_producer_asleep_on_a_full_ring_is_woken_when_space_is_freed() -> None:
    ring = _ring()
    while ring.push(1, bytes(100)):
        pass
    assert not ring.wait_for_space(100, 0.02)  # full: times out
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(ring.wait_for_space(100, 5.0)))
    t.start()
    try:
        deadline = time.monotonic() + 5.0
        while ring._index(rk.OFF_PWAIT) & 0xFFFFFFFF != rk.WAIT_FUTEX:
            assert time.monotonic() < deadline, "the producer never armed"
            time.sleep(0.001)
        ring.pop()
        assert not ring.producer_needs_wake()  # woken through the futex
    finally:
        t.join(10)
    assert got == [True]


@pytest.mark.parametrize(
    ("capacity", "count", "max_burst", "max_pause_us", "futex", "plain"),
    [(1 << 16, 200_000, 64, 200, 0, ""), (4096, 100_000, 400, 100, 0, ""), (4096, 100_000, 400, 100, 1, ""),
     (1 << 16, 100_000, 64, 200, 0, "producer"), (4096, 60_000, 400, 100, 0, "producer"),
     (1 << 16, 100_000, 64, 200, 0, "consumer"), (4096, 60_000, 400, 100, 0, "consumer")],
    ids=["bursts-and-pauses", "small-ring-both-sides-sleep", "futex-waits-small-ring",
         "plain-producer-bursts", "plain-producer-small-ring", "plain-consumer-bursts", "plain-consumer-small-ring"],
)
def test_no_wake_up_is_lost_between_processes(
    capacity: int, count: int, max_burst: int, max_pause_us: int, futex: int, plain: str
) -> None:
    """``plain``: that side uses ``ipc.plainring`` (plain Python, its fences from a lock) against the kernels."""
    with shared_ring("bell-stress", capacity) as shared:
        consumer = shared.spawn("consumer", count=count, max_len=300, futex=futex, plain=int(plain == "consumer"))
        producer = shared.spawn(
            "producer", count=count, max_len=300, max_burst=max_burst, max_pause_us=max_pause_us, seed=7, futex=futex,
            plain=int(plain == "producer"),
        )
        sent = result(producer, timeout=120)
        got = result(consumer, timeout=120)
    assert got["received"] == count and got["bad_seq"] == -1
    assert got["sleeps"] > 100, "the consumer hardly slept: the test did not exercise the wake-up path"
    # waits are 5 s long; any that ended by timeout was a lost wake-up
    assert got["timeouts"] == 0, f"consumer: {got}"
    assert sent["timeouts"] == 0, f"producer: {sent}"


def test_idle_consumer_on_a_doorbell_uses_almost_no_cpu() -> None:
    with shared_ring("bell-idle", 4096) as shared:
        idle = shared.spawn("idle")
        proc = psutil.Process(idle.pid)
        time.sleep(0.3)  # let it reach the wait after printing "ready"
        before = proc.cpu_times()
        t0 = time.monotonic()
        time.sleep(2.0)  # the measurement window itself
        after = proc.cpu_times()
        wall = time.monotonic() - t0
        used = (after.user - before.user) + (after.system - before.system)
        shared.ring.push(1, b"wake up")
        shared.consumer_bell.notify(shared.ring)
        wait_line(idle, '{"role": "idle", "rung": true}', timeout=10)
    assert used / wall < 0.005, f"idle consumer used {100 * used / wall:.2f}% of a core"
