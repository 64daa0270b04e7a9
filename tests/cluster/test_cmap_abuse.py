"""Bad and greedy clients of a real cmap service: the others keep being served, nothing grows unbounded."""

from __future__ import annotations

import random
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycorosync.cmap import (
    CMAP_MAP_STATS,
    CMAP_TRACK_ADD,
    CMAP_TRACK_MODIFY,
    CMAP_TRACK_PREFIX,
    CmapClient,
    CsError,
    CsErrorCode,
    ValueType,
)
from tests.cluster.test_cmap_service import cmap_service, wait_for


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    with cmap_service(tmp_path) as svc:
        yield svc


def test_a_watcher_that_never_reads_its_notifications_is_dropped_and_setters_never_wait(
    service: tuple[Path, Path],
) -> None:
    run_dir, _ = service
    with CmapClient(str(run_dir)) as deaf, CmapClient(str(run_dir)) as setter, \
            CmapClient(str(run_dir), CMAP_MAP_STATS) as stats:
        deaf.track_add("noisy.", CMAP_TRACK_ADD | CMAP_TRACK_MODIFY | CMAP_TRACK_PREFIX)
        value = b"v" * 2048  # each notification carries it: the deaf client's event ring fills fast
        slowest = 0.0
        for i in range(6000):  # > 1 MiB event ring + 4096 backlog records
            t0 = time.monotonic()
            setter.set("noisy.key", value + str(i).encode())
            slowest = max(slowest, time.monotonic() - t0)
        assert slowest < 2.0, f"a set waited {slowest:.2f}s on a client that does not read"
        wait_for(lambda: not deaf.service_alive(), timeout=10)  # dropped: its socket was closed
        assert setter.service_alive()
        assert stats.get_u64("stats.ipcs.global.active") == 2
        setter.set("after.drop", "ok")
        assert setter.get_string("after.drop") == "ok"


GREEDY = textwrap.dedent("""\
    import sys, time
    from pycorosync.cmap import CmapClient, ValueType
    with CmapClient(sys.argv[1]) as c:
        print("ready", flush=True)
        n = 0
        deadline = time.monotonic() + float(sys.argv[2])
        while time.monotonic() < deadline:
            c.set("greedy.key", n, ValueType.UINT64)
            n += 1
        print(n, flush=True)
    """)


def test_a_client_setting_as_fast_as_it_can_does_not_starve_another(service: tuple[Path, Path]) -> None:
    run_dir, _ = service
    procs = [subprocess.Popen([sys.executable, "-c", GREEDY, str(run_dir), "4"], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert select.select([proc.stdout], [], [], 60)[0] and proc.stdout.readline().strip() == "ready"
        with CmapClient(str(run_dir), local_reads=False) as victim:
            slowest = 0.0
            for i in range(200):
                t0 = time.monotonic()
                victim.set("victim.key", i, ValueType.UINT32)
                assert victim.get_u32("victim.key") == i
                slowest = max(slowest, time.monotonic() - t0)
        assert slowest < 1.0, f"a set+get pair took {slowest:.2f}s beside greedy clients"
        counts = []
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            counts.append(int(out.strip()))
        assert min(counts) > 100  # they really were setting all along
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            if proc.stdout:
                proc.stdout.close()


def test_thousands_of_keys_from_one_client_keep_every_clients_reads_exact(service: tuple[Path, Path]) -> None:
    run_dir, _ = service
    rng = random.Random(3)
    with CmapClient(str(run_dir)) as writer, CmapClient(str(run_dir)) as reader:
        model: dict[str, int] = {}
        for i in range(4000):
            key = f"bulk.{rng.randrange(3000)}"
            if key in model and rng.random() < 0.2:
                writer.delete(key)
                del model[key]
            else:
                model[key] = i
                writer.set(key, i, ValueType.UINT32)
        for key in [f"bulk.{n}" for n in range(3000)]:
            if key in model:
                assert reader.get_u32(key) == model[key], key
            else:
                with pytest.raises(CsError) as e:
                    reader.get(key)
                assert e.value.code == CsErrorCode.CS_ERR_NOT_EXIST
        assert reader._view is not None and reader._view.fallbacks == 0
        assert sorted(reader.keys("bulk.")) == sorted(model)
