"""Suite-wide guards: a warm numba cache, and no shared-memory segment left behind by any test."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from pycorosync import jitcache

SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "pcs-"


def _our_segments() -> set[str]:
    try:
        return {p.name for p in SHM_DIR.iterdir() if p.name.startswith(SHM_PREFIX)}
    except OSError:
        return set()


@pytest.fixture(scope="session", autouse=True)
def _warm_numba_cache() -> None:
    """Tests must never start processes with a cold cache (each would compile for seconds)."""
    if os.environ.get("NUMBA_DISABLE_JIT") == "1" or jitcache.is_warm():
        return
    from pycorosync.warm import warm_all

    warm_all()


def _creator_pid(name: str) -> int:
    """The creator pid stored in a segment's header (ipc/layout.md: u32 at offset 20), or 0."""
    try:
        with open(SHM_DIR / name, "rb") as f:
            head = f.read(24)
    except OSError:
        return 0
    return int.from_bytes(head[20:24], "little") if len(head) == 24 else 0


def _made_elsewhere(name: str) -> bool:
    """True for a segment whose creator is alive and outside this test process's tree.

    Another test run on the same machine (or a node a person started) is not this test's leak, nor is a
    segment named by ``unique_prefix`` in another live test process (a parallel worker: its test may
    give a segment a made-up creator pid on purpose).
    """
    named = re.match(rf"{SHM_PREFIX}test-(\d+)-", name)
    if named and int(named.group(1)) != os.getpid() and _outside_my_tree(int(named.group(1))):
        return True
    pid = _creator_pid(name)
    if pid <= 0:
        return False
    return _outside_my_tree(pid)


def _outside_my_tree(pid: int) -> bool:
    """True when ``pid`` is alive and neither this process nor one of its descendants."""
    try:
        proc = psutil.Process(pid)
        ancestors = {p.pid for p in proc.parents()} | {pid}
    except psutil.Error:
        return False  # creator gone: the segment is an orphan, and it appeared during this test
    return os.getpid() not in ancestors


#: segment-name prefixes of fixtures that outlive a test (a module's shared cluster): not a test's leak;
#: the fixture removes them at its own teardown
LONG_LIVED_PREFIXES: set[str] = set()


@pytest.fixture(autouse=True)
def _ring_path_left_as_found() -> Iterator[None]:
    """A test that chooses the ring path of this process's client connections must put the default back:
    the tests after it in the same process (one xdist worker runs many) expect it."""
    yield
    from pycorosync.ipc import client

    left = client.use_compiled_rings(None)
    assert left is None, f"the test left client connections on use_compiled_rings({left})"


@pytest.fixture(autouse=True)
def _no_leaked_segments() -> Iterator[None]:
    """Fails the test that leaves a /dev/shm/pcs-* segment behind (and removes it)."""
    before = _our_segments()
    yield
    leaked = {n for n in _our_segments() - before
              if not _made_elsewhere(n) and not n.startswith(tuple(LONG_LIVED_PREFIXES))}
    for name in leaked:
        with contextlib.suppress(OSError):
            (SHM_DIR / name).unlink()
    assert not leaked, f"test left shared-memory segments behind: {sorted(leaked)}"


def unique_prefix(tag: str) -> str:
    """A segment-name prefix no other test or node uses: /pcs-test-<pid>-<tag>."""
    return f"/{SHM_PREFIX}test-{os.getpid()}-{tag}"
