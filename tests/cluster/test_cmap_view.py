"""Clients of a real cmap service read icmap from its shared view: same answers, no stale reads."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycorosync.cmap import CMAP_MAP_STATS, CmapClient, CsError, CsErrorCode, ValueType
from pycorosync.ipc.client import connect
from pycorosync.ipc.framing import decode_response
from pycorosync.services.cmap import protocol as p
from tests.cluster.test_cmap_service import cmap_service


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    with cmap_service(tmp_path) as svc:
        yield svc


def test_gets_are_answered_locally_with_the_results_a_request_gives(service: tuple[Path, Path]) -> None:
    run_dir, _ = service
    with CmapClient(str(run_dir)) as local, CmapClient(str(run_dir), local_reads=False) as remote:
        assert local._view is not None and remote._view is None
        keys = ["totem.token", "runtime.config.totem.token", "totem.cluster_name", "nodelist.node.1.ring0_addr",
                "internal_configuration.service.2.name", "no.such.key", "x", "k\0ey"]
        local.set("float.key", 1.5)
        local.set("bin.key", b"\x00\x01")
        keys += ["float.key", "bin.key"]
        for key in keys:
            results = []
            for client in (local, remote):
                try:
                    results.append(client.get(key))
                except CsError as exc:
                    results.append(CsErrorCode(exc.code))
            assert results[0] == results[1], key
        hits = local._view.local_hits
        assert local.get_u32("totem.token") == 1000
        assert local._view.local_hits == hits + 1


def test_a_set_acknowledged_to_one_client_is_seen_by_the_next_get_of_every_client(
    service: tuple[Path, Path],
) -> None:
    run_dir, _ = service
    with CmapClient(str(run_dir)) as writer, CmapClient(str(run_dir)) as reader:
        for i in range(300):
            writer.set("seen.key", i, ValueType.UINT32)
            assert reader.get_u32("seen.key") == i
            assert writer.get_u32("seen.key") == i
            if i % 3 == 0:
                writer.delete("seen.key")
                with pytest.raises(CsError) as e:
                    reader.get("seen.key")
                assert e.value.code == CsErrorCode.CS_ERR_NOT_EXIST
        writer.set("big.key", b"y" * 100_000)  # above the mirror limit: fetched by a request
        assert reader.get_binary("big.key") == b"y" * 100_000
        assert reader._view is not None and reader._view.local_hits > 300


def test_stats_map_clients_get_no_view_and_still_read_stats(service: tuple[Path, Path]) -> None:
    run_dir, _ = service
    with CmapClient(str(run_dir), CMAP_MAP_STATS) as stats:
        assert stats._view is None
        assert stats.get_u64("stats.ipcs.global.active") >= 1


def test_after_the_service_is_killed_gets_fail_within_the_lease(service: tuple[Path, Path]) -> None:
    run_dir, _ = service
    with CmapClient(str(run_dir)) as cmap:
        assert cmap.get_u32("totem.token") == 1000  # local, and cached
        os.kill(cmap._conn.server_pid, signal.SIGKILL)
        deadline = time.monotonic() + 10.0
        while True:
            try:
                cmap.get_u32("totem.token")
            except CsError as exc:
                assert exc.code == CsErrorCode.CS_ERR_LIBRARY
                break
            assert time.monotonic() < deadline, "gets still answered 10 s after the service died"
            time.sleep(0.05)
        assert not cmap.service_alive()


def test_a_stopped_service_closes_its_view_at_once(tmp_path: Path) -> None:
    with cmap_service(tmp_path) as (run_dir, _):
        cmap = CmapClient(str(run_dir))
        assert cmap.get_u32("totem.token") == 1000
    try:
        with pytest.raises(CsError) as e:  # SIGTERM: the service marked its view closed on the way out
            cmap.get_u32("totem.token")
        assert e.value.code == CsErrorCode.CS_ERR_LIBRARY
    finally:
        cmap.close()


def test_a_connection_gets_the_view_once_and_a_client_asking_again_is_refused(service: tuple[Path, Path]) -> None:
    run_dir, _ = service
    with connect(str(run_dir), "cmap") as raw, CmapClient(str(run_dir)) as other:
        answers = [decode_response(raw.request(p.MSG_VIEW, b"", timeout=10)[1])[0] for _ in range(50)]
        assert answers[0] == CsErrorCode.CS_OK  # its descriptor waits, unread, on the raw socket
        assert set(answers[1:]) == {CsErrorCode.CS_ERR_EXIST}
        other.set("still.served", "yes")
        assert other.get_string("still.served") == "yes"
