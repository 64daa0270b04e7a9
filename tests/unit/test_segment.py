"""Named and anonymous shared-memory segments: names, permissions, headers, cleanup."""

from __future__ import annotations

import fcntl
import os
import stat
import struct
from collections.abc import Iterator

import pytest

from pycorosync.ipc import segment as sg
from pycorosync.ipc.segment import Segment, SegmentKind, SegmentLayoutError
from tests.conftest import unique_prefix


@pytest.fixture
def prefix() -> Iterator[str]:
    p = unique_prefix("seg") + "-"
    yield p
    sg.unlink_prefix(p)


def test_segment_names_follow_the_node_prefix() -> None:
    assert sg.segment_name("alpha", 1, "stats") == "/pcs-alpha-1-stats"
    assert sg.node_prefix("my-cluster", 12) == "/pcs-my_cluster-12-"  # no '-' inside the cluster part
    with pytest.raises(ValueError, match="segment name part"):
        sg.segment_name("alpha", 1, "a/b")
    with pytest.raises(ValueError, match="longer than 255"):
        sg.segment_name("alpha", 1, "x" * 260)


def test_named_segment_is_private_to_its_user_whatever_the_umask(prefix: str) -> None:
    old = os.umask(0)
    try:
        seg = Segment.create(prefix + "stats", 100, SegmentKind.STATS, 1)
    finally:
        os.umask(old)
    try:
        fd = os.open(f"/dev/shm/{(prefix + 'stats')[1:]}", os.O_RDONLY)
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_uid == os.geteuid()
        assert st.st_size == seg.size == 8192  # header page + payload rounded to a page
    finally:
        seg.close()


def test_create_refuses_an_existing_name(prefix: str) -> None:
    seg = Segment.create(prefix + "x", 10, SegmentKind.RAW, 1)
    try:
        with pytest.raises(FileExistsError, match="already exists"):
            Segment.create(prefix + "x", 10, SegmentKind.RAW, 1)
    finally:
        seg.close()


def test_attach_sees_the_creators_bytes_and_header(prefix: str) -> None:
    a = Segment.create(prefix + "rings", 5000, SegmentKind.RINGS, 2)
    b = Segment.attach(prefix + "rings", SegmentKind.RINGS, 2)
    try:
        a.array()[:5] = list(b"hello")
        assert bytes(b.payload[:5]) == b"hello"
        assert (b.kind, b.layout_version, b.creator_pid, b.size) == (SegmentKind.RINGS, 2, os.getpid(), a.size)
        assert b.payload_bytes >= 5000
    finally:
        a.close()
        b.close()


def test_attach_to_another_layout_version_says_which(prefix: str) -> None:
    name = prefix + "stats"
    seg = Segment.create(name, 64, SegmentKind.STATS, 3)
    try:
        with pytest.raises(SegmentLayoutError) as err:
            Segment.attach(name, SegmentKind.STATS, 1)
        assert str(err.value) == f"{name}: layout version 3, this build reads 1"
        with pytest.raises(SegmentLayoutError, match="segment holds STATS, expected RINGS"):
            Segment.attach(name, SegmentKind.RINGS, 3)
    finally:
        seg.close()


def test_attach_refuses_a_segment_without_our_magic(prefix: str) -> None:
    name = prefix + "foreign"
    seg = Segment.create(name, 64, SegmentKind.RAW, 1)
    try:
        seg_mv = memoryview(bytearray(8))
        struct.pack_into("8s", seg_mv, 0, b"XXXXXXXX")
        with open(f"/dev/shm/{name[1:]}", "r+b") as f:
            f.write(seg_mv)
        with pytest.raises(SegmentLayoutError, match="not a pycorosync segment"):
            Segment.attach(name, SegmentKind.RAW, 1)
    finally:
        seg.close()


def test_attach_to_a_missing_segment_names_it(prefix: str) -> None:
    with pytest.raises(FileNotFoundError, match=f"{prefix}nothing"):
        Segment.attach(prefix + "nothing", SegmentKind.RAW, 1)


def test_unlink_prefix_removes_only_that_prefix(prefix: str) -> None:
    other = unique_prefix("segother") + "-"
    segs = [Segment.create(prefix + w, 8, SegmentKind.RAW, 1) for w in ("a", "b")]
    keep = Segment.create(other + "a", 8, SegmentKind.RAW, 1)
    try:
        assert sg.list_segments(prefix) == [prefix + "a", prefix + "b"]
        assert sg.unlink_prefix(prefix) == [prefix + "a", prefix + "b"]
        assert sg.list_segments(prefix) == []
        assert sg.list_segments(other) == [other + "a"]
        assert bytes(segs[0].payload[:1]) == b"\x00"  # still mapped after unlink
    finally:
        for s in [*segs, keep]:
            s.close()
        sg.unlink_prefix(other)


def test_unlink_prefix_refuses_names_outside_the_project() -> None:
    with pytest.raises(ValueError, match="must start with '/pcs-'"):
        sg.unlink_prefix("/")


def test_anonymous_segment_is_a_sealed_memfd_another_mapping_can_share() -> None:
    seg = Segment.create_anonymous(10000, SegmentKind.RINGS, 1, label="test-conn")
    try:
        fd = seg.fileno()
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        assert seals & fcntl.F_SEAL_SHRINK and seals & fcntl.F_SEAL_GROW
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 4096)
        other = Segment.attach_fd(os.dup(fd), SegmentKind.RINGS, 1)
        try:
            seg.array()[100] = 7
            assert other.array()[100] == 7
        finally:
            other.close()
    finally:
        seg.close()


def test_an_unsealed_memfd_is_refused() -> None:
    fd = os.memfd_create("unsealed", os.MFD_CLOEXEC)
    os.ftruncate(fd, 8192)
    with pytest.raises(SegmentLayoutError, match="not sealed against shrinking"):
        Segment.attach_fd(fd, SegmentKind.RINGS, 1)  # takes ownership of fd and closes it
    with pytest.raises(OSError):
        os.fstat(fd)


def test_close_with_live_views_neither_fails_nor_leaves_them_dangling(prefix: str) -> None:
    seg = Segment.create(prefix + "views", 100, SegmentKind.RAW, 1)
    arr = seg.array()
    seg.close()  # the mapping outlives close() while arr exists
    arr[0] = 1
    assert arr[0] == 1
    assert seg.closed
    with pytest.raises(ValueError, match="closed"):
        seg.array()
    del arr
