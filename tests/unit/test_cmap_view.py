"""The shared read view of icmap (services/cmap/view.py): what a client may answer without asking."""

from __future__ import annotations

import contextlib
import mmap
import os
import random
import select
import signal
import time

import pytest

from pycorosync.engine.config.types import ValueType
from pycorosync.services.cmap.engine import (
    CMAP_TRACK_ADD,
    CMAP_TRACK_DELETE,
    CMAP_TRACK_MODIFY,
    CMAP_TRACK_PREFIX,
    CmapNotification,
    Icmap,
)
from pycorosync.services.cmap.view import (
    ABSENT,
    ASK_SERVICE,
    LEASE_NS,
    MAX_MIRRORED_VALUE,
    IcmapViewReader,
    IcmapViewWriter,
)

ALL_EVENTS = CMAP_TRACK_ADD | CMAP_TRACK_DELETE | CMAP_TRACK_MODIFY | CMAP_TRACK_PREFIX


class Mirrored:
    """An icmap with a view kept up to date the way the service does it (a prefix tracker on "")."""

    def __init__(self, nslots: int = 1 << 10, heap_bytes: int = 1 << 16) -> None:
        self.icmap = Icmap()
        self.writer = IcmapViewWriter(lambda: self.icmap.items(), nslots=nslots, heap_bytes=heap_bytes)
        self.icmap.track_add("", ALL_EVENTS, self._mirror, "test")
        self.reader = IcmapViewReader(self.writer.reader_fd())
        self.writer.beat()

    def _mirror(self, n: CmapNotification) -> None:
        self.writer.beat()  # the service's loop beats at least every 0.1 s; a slow test must not outlive it
        if n.event == CMAP_TRACK_DELETE:
            self.writer.remove(n.key)
        else:
            assert n.new is not None
            self.writer.put(n.key, n.new)

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


@pytest.fixture
def mirrored() -> Mirrored:
    m = Mirrored()
    yield m  # type: ignore[misc]
    m.close()


def expected(icmap: Icmap, key: str) -> object:
    return icmap.get(key) if key in icmap else ABSENT


def test_every_key_reads_as_icmap_holds_it_through_random_sets_and_deletes() -> None:
    mirrored = Mirrored(heap_bytes=16384)
    rng = random.Random(6)
    keys = [f"k.{i}" for i in range(300)]
    values = [(ValueType.UINT32, 7), (ValueType.STRING, "running"), (ValueType.INT8, -3), (ValueType.DOUBLE, 0.5),
              (ValueType.BINARY, b"\x00\xff"), (ValueType.STRING, ""), (ValueType.UINT64, 2**64 - 1)]
    for step in range(3000):
        key = rng.choice(keys)
        if rng.random() < 0.3 and key in mirrored.icmap:
            mirrored.icmap.delete(key)
        else:
            vtype, value = rng.choice(values)
            mirrored.icmap.set(key, vtype, value)
        if step % 100 == 0 or step > 2900:
            mirrored.writer.beat()
            for k in keys:
                assert mirrored.reader.lookup(k) == expected(mirrored.icmap, k), (step, k)
    assert mirrored.writer.rebuilds > 1  # the small heap filled and was compacted on the way
    mirrored.close()


def test_a_missing_key_is_absent_locally_only_while_the_view_holds_every_key() -> None:
    m = Mirrored(nslots=16, heap_bytes=4096)
    try:
        m.icmap.set("a.key", ValueType.UINT8, 1)
        assert m.reader.lookup("no.such.key") is ABSENT
        for i in range(20):  # more keys than 3/4 of 16 slots: the view cannot hold them all
            m.icmap.set(f"many.{i}", ValueType.UINT32, i)
        assert m.reader.lookup("no.such.key") is ASK_SERVICE
        for i in range(20):  # what the view still holds is current; the rest is asked for
            assert m.reader.lookup(f"many.{i}") in ((ValueType.UINT32, i), ASK_SERVICE)
        m.icmap.set("many.0", ValueType.UINT32, 100)
        assert m.reader.lookup("many.0") in ((ValueType.UINT32, 100), ASK_SERVICE)
    finally:
        m.close()


def test_values_above_the_mirror_limit_are_fetched_from_the_service(mirrored: Mirrored) -> None:
    mirrored.icmap.set("big.value", ValueType.BINARY, b"x" * (MAX_MIRRORED_VALUE + 1))
    mirrored.icmap.set("small.value", ValueType.BINARY, b"x" * MAX_MIRRORED_VALUE)
    assert mirrored.reader.lookup("big.value") is ASK_SERVICE
    assert mirrored.reader.lookup("small.value") == (ValueType.BINARY, b"x" * MAX_MIRRORED_VALUE)


def test_names_that_cannot_be_stored_are_left_to_the_service_for_its_exact_error(mirrored: Mirrored) -> None:
    for key in ("k\0ey", "x" * 2000, "clé.key"):
        assert mirrored.reader.lookup(key) is ASK_SERVICE


def test_a_write_in_progress_sends_readers_to_the_service(mirrored: Mirrored) -> None:
    mirrored.icmap.set("a.key", ValueType.UINT8, 1)
    mirrored.reader.use_cache = False
    mirrored.writer._begin()  # a writer stopped half way (seq odd)
    assert mirrored.reader.lookup("a.key") is ASK_SERVICE
    mirrored.writer._end()
    assert mirrored.reader.lookup("a.key") == (ValueType.UINT8, 1)


def test_a_view_whose_service_stopped_beating_is_not_trusted(mirrored: Mirrored) -> None:
    mirrored.icmap.set("a.key", ValueType.UINT8, 1)
    assert mirrored.reader.lookup("a.key") == (ValueType.UINT8, 1)  # now cached too
    mirrored.writer.beat(time.monotonic_ns() - LEASE_NS - 1)
    assert mirrored.reader.lookup("a.key") is ASK_SERVICE
    assert mirrored.reader.lookup("no.such.key") is ASK_SERVICE
    mirrored.writer.beat()
    assert mirrored.reader.lookup("a.key") == (ValueType.UINT8, 1)


def test_a_closed_view_sends_readers_to_the_service() -> None:
    m = Mirrored()
    m.icmap.set("a.key", ValueType.UINT8, 1)
    assert m.reader.lookup("a.key") == (ValueType.UINT8, 1)
    m.writer.close()
    assert m.reader.lookup("a.key") is ASK_SERVICE
    m.reader.close()


def test_the_cache_never_hides_a_change(mirrored: Mirrored) -> None:
    mirrored.icmap.set("a.key", ValueType.UINT32, 1)
    assert mirrored.reader.lookup("a.key") == (ValueType.UINT32, 1)
    assert mirrored.reader.lookup("a.key") == (ValueType.UINT32, 1)
    mirrored.icmap.set("other.key", ValueType.UINT32, 1)  # any change drops the whole cache
    mirrored.icmap.set("a.key", ValueType.UINT32, 2)
    assert mirrored.reader.lookup("a.key") == (ValueType.UINT32, 2)
    mirrored.icmap.delete("a.key")
    assert mirrored.reader.lookup("a.key") is ABSENT


def test_a_client_cannot_map_the_view_writable(mirrored: Mirrored) -> None:
    fd = mirrored.writer.reader_fd()
    size = os.fstat(fd).st_size
    with pytest.raises(PermissionError):
        mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    with pytest.raises(OSError):
        os.write(fd, b"x")


def test_a_reader_beside_a_busy_writer_process_only_sees_values_that_were_current() -> None:
    """Torn reads: a forked writer rewrites one key (a string of one repeated digit, growing and
    shrinking, so a torn copy would mix digits or lengths) while this process reads it."""
    # a small heap and many other keys: long rebuilds (the slot table zeroed, then refilled) happen
    # under the reader too, where a reader without the seqlock would see the key missing
    m = Mirrored(nslots=1024, heap_bytes=16384)
    for i in range(300):
        m.icmap.set(f"filler.{i}", ValueType.UINT32, i)
    m.icmap.set("torn.key", ValueType.STRING, "0")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the writer: never returns into pytest
        try:
            os.close(r)
            deadline = time.monotonic() + 1.5
            i = 0
            os.write(w, b"go")
            while time.monotonic() < deadline:
                i += 1
                m.icmap.set("torn.key", ValueType.STRING, str(i % 10) * (1 + i % 50))
                m.writer.beat()
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert select.select([r], [], [], 30)[0]
        os.read(r, 2)
        m.reader.use_cache = False
        seen = local = 0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            result = m.reader.lookup("torn.key")
            seen += 1
            if result is ASK_SERVICE:
                continue
            local += 1
            assert isinstance(result, tuple) and result[0] == ValueType.STRING
            text = result[1]
            assert isinstance(text, str) and text and text == text[0] * len(text), text
        assert local > 0
    finally:
        os.close(r)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        m.close()
