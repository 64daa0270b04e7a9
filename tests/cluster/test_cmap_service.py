"""The cmap service process over real IPC: clients, tracking, access, floods, dead clients, reload."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycorosync import localcluster
from pycorosync.cmap import (
    CMAP_MAP_STATS,
    CMAP_TRACK_ADD,
    CMAP_TRACK_DELETE,
    CMAP_TRACK_MODIFY,
    CMAP_TRACK_PREFIX,
    CS_DISPATCH_ONE,
    AsyncCmapClient,
    CmapClient,
    CmapTrackEvent,
    CsError,
    CsErrorCode,
    ValueType,
)
from pycorosync.ipc.client import connect
from pycorosync.ipc.conn import Welcome
from pycorosync.ipc.errors import cs_strerror
from pycorosync.ipc.framing import decode_response
from pycorosync.services.cmap import protocol as p

CONF = textwrap.dedent("""\
    totem {
        version: 2
        cluster_name: testcluster
        transport: udpu
        token: 1000
        crypto_cipher: none
        crypto_hash: none
    }

    logging {
        to_stderr: no
        to_syslog: no
        timestamp: hires
        debug: off
    }

    nodelist {
        node {
            name: node1
            nodeid: 1
            ring0_addr: 127.0.0.1
        }
        node {
            name: node2
            nodeid: 2
            ring0_addr: 127.0.0.2
        }
        node {
            name: node3
            nodeid: 3
            ring0_addr: 127.0.0.3
        }
    }

    quorum {
        provider: corosync_votequorum
    }
    """)
START_TIMEOUT_S = 30.0


def cmap_service(
    workdir: Path, conf_text: str = CONF, nodeid: int = 1, env: dict[str, str] | None = None
) -> contextlib.AbstractContextManager[tuple[Path, Path]]:
    """``localcluster.cmap_service`` with this module's config by default; yields (run_dir, config path)."""
    return localcluster.cmap_service(workdir, conf_text, nodeid, env)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    with cmap_service(tmp_path) as svc:
        yield svc


def wait_for(predicate: object, timeout: float = 10.0, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def dispatch_until(client: CmapClient, predicate: object, timeout: float = 10.0) -> None:
    """Runs the client's callbacks until ``predicate()`` holds (CS_DISPATCH_ONE with a deadline)."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"notifications did not arrive within {timeout}s")
        with contextlib.suppress(CsError):  # CS_ERR_TIMEOUT: checked by the deadline above
            client.dispatch(CS_DISPATCH_ONE, timeout=remaining)


def code(exc: pytest.ExceptionInfo[CsError]) -> CsErrorCode:
    return CsErrorCode(exc.value.code)


def test_config_file_keys_and_runtime_defaults_are_served(service: tuple[Path, Path]) -> None:
    run_dir, _ = service
    with CmapClient(str(run_dir)) as cmap:
        assert cmap.get("totem.token") == (1000, ValueType.UINT32)
        assert cmap.get_u32("runtime.config.totem.token") == 1650  # 1000 + (3-2)*650 effective
        assert cmap.get_u32("nodelist.local_node_pos") == 0
        assert cmap.get_string("internal_configuration.service.0.name") == "corosync_cmap"
        assert cmap.get_u16("runtime.services.votequorum.service_id") == 5
        with pytest.raises(CsError) as e:
            cmap.get("no.such.key")
        assert code(e) == CsErrorCode.CS_ERR_NOT_EXIST
        with pytest.raises(CsError) as e:
            cmap.get_string("totem.token")
        assert code(e) == CsErrorCode.CS_ERR_INVALID_PARAM


def test_an_application_using_only_cmap_never_loads_numba(service: tuple[Path, Path]) -> None:
    """The cmap library's connections use plain rings by default: a set, an RPC get and a view get work
    in a process where numba was never imported."""
    run_dir, _ = service
    script = (
        "import sys\n"
        "from pycorosync.cmap import CmapClient, ValueType\n"
        f"with CmapClient({str(run_dir)!r}) as c:\n"
        "    c.set('app.key', 41, ValueType.UINT32)\n"
        "    got = c.get('app.key')[0]\n"
        f"with CmapClient({str(run_dir)!r}, local_reads=False) as c:\n"
        "    rpc = c.get('totem.cluster_name')[0]\n"
        "print(got, rpc, 'numba' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["41", "testcluster", "False"]


def test_a_set_by_one_client_is_seen_and_notified_to_another(service: tuple[Path, Path]) -> None:
    run_dir, _ = service
    with CmapClient(str(run_dir)) as writer, CmapClient(str(run_dir)) as watcher:
        seen: list[CmapTrackEvent] = []
        watcher.track_add("resources.app.", CMAP_TRACK_ADD | CMAP_TRACK_MODIFY | CMAP_TRACK_DELETE | CMAP_TRACK_PREFIX,
                          seen.append, user_data="ctx")
        writer.set("resources.app.state", "starting")
        writer.set("resources.app.state", "running")
        writer.set("resources.app.count", 1, ValueType.UINT32)
        writer.inc("resources.app.count")
        writer.delete("resources.app.count")
        assert watcher.get_string("resources.app.state") == "running"
        dispatch_until(watcher, lambda: len(seen) >= 5)
        assert [(e.event, e.key, e.new_value, e.old_value, e.user_data) for e in seen] == [
            (CMAP_TRACK_ADD, "resources.app.state", "starting", None, "ctx"),
            (CMAP_TRACK_MODIFY, "resources.app.state", "running", "starting", "ctx"),
            (CMAP_TRACK_ADD, "resources.app.count", 1, None, "ctx"),
            (CMAP_TRACK_MODIFY, "resources.app.count", 2, 1, "ctx"),
            (CMAP_TRACK_DELETE, "resources.app.count", None, 2, "ctx"),
        ]
        assert seen[0].new_type == ValueType.STRING and seen[-1].new_type is None


def test_read_only_keys_refuse_clients_but_accept_engine_connections(service: tuple[Path, Path]) -> None:
    run_dir, _ = service
    with CmapClient(str(run_dir)) as cmap:
        for key in ("totem.cluster_name", "runtime.services.cpg.service_id", "nodelist.node.0.name"):
            with pytest.raises(CsError) as e:
                cmap.set(key, "x")
            assert code(e) == CsErrorCode.CS_ERR_ACCESS
            with pytest.raises(CsError) as e:
                cmap.delete(key)
            assert code(e) == CsErrorCode.CS_ERR_ACCESS
        assert cmap.get_string("totem.cluster_name") == "testcluster"
    with CmapClient(str(run_dir), engine=True) as engine:
        engine.set("runtime.services.cpg.0.tx", 5, ValueType.UINT64)
        assert engine.get_u64("runtime.services.cpg.0.tx") == 5


def connect_as(run_dir: Path, uid: int, gid: int) -> str:
    """Connects from a forked child running as uid:gid; returns 'OK' or the cs_error name it got."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, try, report, never return into pytest
        result = b"?"
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            # a refusal is sent at accept, before any HELLO: read it on a raw socket (a client that
            # sends HELLO first can lose it to the reset of a socket closed with unread data)
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as raw:
                raw.connect(str(run_dir / "cmap.sock"))
                if select.select([raw], [], [], 1.5)[0]:
                    data = raw.recv(256)  # empty: admitted, then dropped for sending no HELLO
                    if data:
                        result = cs_strerror(Welcome.unpack(data, "test").error).encode()
            if result == b"?":
                try:
                    CmapClient(str(run_dir)).close()
                    result = b"OK"
                except CsError as exc:
                    result = exc.name.encode()
        except BaseException as exc:
            result = repr(exc).encode()
        finally:
            os.write(w, result)
            os._exit(0)
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], 30)
        return os.read(r, 200).decode() if ready else "no answer"
    finally:
        os.close(r)
        os.waitpid(pid, 0)


def test_unprivileged_uid_is_refused_until_uidgid_key_allows_it() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another uid")
    workdir = Path(tempfile.mkdtemp(prefix="cmap-uidgid-"))
    try:
        os.chmod(workdir, 0o755)  # the unprivileged client must reach the socket
        with cmap_service(workdir) as (run_dir, _):
            assert connect_as(run_dir, 65534, 65534) == "CS_ERR_ACCESS"
            with CmapClient(str(run_dir)) as cmap:
                cmap.set("uidgid.uid.65534", 1, ValueType.UINT8)
                assert connect_as(run_dir, 65534, 65534) == "OK"
                cmap.delete("uidgid.uid.65534")
                assert connect_as(run_dir, 65534, 65534) == "CS_ERR_ACCESS"
                cmap.set("uidgid.gid.65534", 1, ValueType.UINT8)
                assert connect_as(run_dir, 65534, 65534) == "OK"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_malformed_and_oversized_requests_get_error_codes_and_the_service_keeps_serving(
    service: tuple[Path, Path],
) -> None:
    run_dir, _ = service
    with connect(str(run_dir), "cmap") as raw, CmapClient(str(run_dir)) as other:
        for rtype, payload in [(999, b"junk"), (p.CmapMsg.SET, b"\x01"), (p.CmapMsg.ITER_NEXT, b"123"),
                               (p.CmapMsg.GET, b"\xff\xfe"), (p.CmapMsg.TRACK_ADD, b"\x00" * 12 + b"k.k"),
                               (p.CmapMsg.SET, p.encode_set("k.key", ValueType.UINT32, 1)[:-1])]:
            _, response = raw.request(rtype, payload, timeout=10)
            err, _ = decode_response(response)
            assert err in (CsErrorCode.CS_ERR_INVALID_PARAM, CsErrorCode.CS_ERR_NAME_TOO_LONG), (rtype, err)
        with pytest.raises(CsError) as e:
            other.set("big.value", b"x" * (300 * 1024))
        assert code(e) == CsErrorCode.CS_ERR_TOO_BIG
        with pytest.raises(CsError) as e:
            other.set("huge.value", b"x" * (2 << 20))  # larger than the ring: refused before sending
        assert code(e) == CsErrorCode.CS_ERR_TOO_BIG
        other.set("still.works", "yes")
        assert other.get_string("still.works") == "yes"
    with CmapClient(str(run_dir), CMAP_MAP_STATS) as stats:
        assert any(k.endswith(".invalid_request") for k in stats.keys("stats.ipcs.service0."))


def test_a_flooding_client_gets_try_again_while_another_is_served(service: tuple[Path, Path]) -> None:
    run_dir, _ = service
    with connect(str(run_dir), "cmap") as flooder, CmapClient(str(run_dir)) as victim:
        payload = p.encode_set("flood.key", ValueType.BINARY, b"x" * 4096)
        sent = 0
        with pytest.raises(CsError) as e:
            for _ in range(100_000):  # never reads its responses: its rings fill up
                flooder.send(p.CmapMsg.SET, payload)
                sent += 1
        assert code(e) == CsErrorCode.CS_ERR_TRY_AGAIN
        assert sent > 100
        t0 = time.monotonic()
        for i in range(50):
            victim.set("victim.key", i, ValueType.UINT32)
            assert victim.get_u32("victim.key") == i
        assert time.monotonic() - t0 < 5.0


def test_a_killed_client_leaves_no_trackers_iterators_or_connection_behind(service: tuple[Path, Path]) -> None:
    run_dir, _ = service
    script = textwrap.dedent("""\
        import sys
        from pycorosync.cmap import CmapClient, CMAP_TRACK_ADD, CMAP_TRACK_PREFIX
        c = CmapClient(sys.argv[1])
        for i in range(50):
            c.track_add("", CMAP_TRACK_ADD | CMAP_TRACK_PREFIX)
        it = c.iter("")
        next(it)
        print("ready", flush=True)
        sys.stdin.read()
        """)
    proc = subprocess.Popen([sys.executable, "-c", script, str(run_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready and proc.stdout.readline() == b"ready\n"
        with CmapClient(str(run_dir), CMAP_MAP_STATS) as stats:
            assert stats.get_u64("stats.ipcs.global.active") == 2
            proc.kill()
            proc.wait(10)
            wait_for(lambda: stats.get_u64("stats.ipcs.global.active") == 1)
        with CmapClient(str(run_dir)) as cmap:
            for i in range(20):  # would notify the dead client's 50 trackers if they were left
                cmap.set(f"after.kill.{i}", i, ValueType.UINT32)
            assert len(cmap.keys("after.kill.")) == 20
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for f in (proc.stdin, proc.stdout):
            if f:
                f.close()


def test_stats_map_shows_this_services_connections(service: tuple[Path, Path]) -> None:
    run_dir, _ = service
    with CmapClient(str(run_dir), CMAP_MAP_STATS) as stats:
        keys = stats.keys("stats.ipcs.")
        assert "stats.ipcs.global.active" in keys
        mine = [k for k in keys if k.startswith(f"stats.ipcs.service0.{os.getpid()}.")]
        suffixes = sorted(k.rsplit(".", 1)[1] for k in mine)
        assert suffixes == sorted(["dispatched", "flow_control", "flow_control_count", "invalid_request", "overload",
                                   "procname", "queued", "queueing", "recv_retries", "requests", "responses",
                                   "send_retries", "sent"])
        with pytest.raises(CsError) as e:
            stats.set("stats.ipcs.global.active", 5, ValueType.UINT64)
        assert code(e) == CsErrorCode.CS_ERR_ACCESS
        stats.set("stats.clear.ipc", 1, ValueType.UINT8)


def test_config_reload_applies_changes_with_notifications_and_refuses_unchangeable_keys(
    service: tuple[Path, Path],
) -> None:
    run_dir, conf = service
    new_conf = (CONF.replace("token: 1000", "token: 2000").replace("    debug: off\n", "")
                .replace("cluster_name: testcluster", "cluster_name: renamed"))
    conf.write_text(new_conf)
    with CmapClient(str(run_dir)) as watcher, CmapClient(str(run_dir), engine=True) as cfg:
        seen: list[CmapTrackEvent] = []
        for prefix in ("totem.", "logging.", "runtime.config.totem.token", "config."):
            watcher.track_add(prefix, CMAP_TRACK_ADD | CMAP_TRACK_MODIFY | CMAP_TRACK_DELETE | CMAP_TRACK_PREFIX,
                              seen.append)
        messages = cfg.reload()
        assert "Modified entry 'totem.cluster_name' in corosync.conf cannot be changed at run-time" in messages
        assert watcher.get_u32("totem.token") == 2000
        assert watcher.get_u32("runtime.config.totem.token") == 2650
        assert watcher.get_string("totem.cluster_name") == "testcluster"
        assert watcher.get_u8("config.reload_in_progress") == 0
        wanted = {(CMAP_TRACK_MODIFY, "totem.token"), (CMAP_TRACK_MODIFY, "runtime.config.totem.token"),
                  (CMAP_TRACK_DELETE, "logging.debug"), (CMAP_TRACK_MODIFY, "config.reload_in_progress")}
        dispatch_until(watcher, lambda: wanted <= {(e.event, e.key) for e in seen})
        assert not any(e.key == "totem.cluster_name" for e in seen)
        flags = [(e.event, e.new_value) for e in seen if e.key == "config.reload_in_progress"]
        assert flags == [(CMAP_TRACK_ADD, 1), (CMAP_TRACK_MODIFY, 0)]
        conf.write_text("totem {\n")
        with pytest.raises(CsError) as e:
            cfg.reload()
        assert code(e) == CsErrorCode.CS_ERR_INVALID_PARAM
        assert "Missing closing brace" in str(e.value)  # the reason reaches the caller (cfgtool -R prints it)
        assert "Missing closing brace" in watcher.get_string("config.reload_error_message")
        assert watcher.get_u32("totem.token") == 2000
        with pytest.raises(CsError) as e:
            watcher.reload()  # not an engine connection
        assert code(e) == CsErrorCode.CS_ERR_ACCESS


def test_asyncio_client_sets_gets_iterates_and_receives_notifications(service: tuple[Path, Path]) -> None:
    run_dir, _ = service

    async def scenario() -> None:
        async with AsyncCmapClient(str(run_dir)) as cmap:
            await cmap.track_add("async.", CMAP_TRACK_ADD | CMAP_TRACK_MODIFY | CMAP_TRACK_PREFIX)
            await cmap.set("async.a", 1, ValueType.INT16)
            await cmap.inc("async.a")
            assert await cmap.get("async.a") == (2, ValueType.INT16)
            assert [k async for k, _, _ in cmap.iter("async.")] == ["async.a"]
            events = []
            async for ev in cmap.notifications():
                events.append((ev.event, ev.new_value))
                if len(events) == 2:
                    break
            assert events == [(CMAP_TRACK_ADD, 1), (CMAP_TRACK_MODIFY, 2)]

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_publisher_republishes_its_keys_after_a_cmap_service_restart(tmp_path: Path) -> None:
    from pycorosync.services.cmap.publisher import CmapPublisher

    pub = CmapPublisher(str(tmp_path / "run"))
    try:
        assert pub.publish("runtime.votequorum.this_node_id", 1, ValueType.UINT32) is False  # no service yet
        with cmap_service(tmp_path) as (run_dir, _):
            assert pub.resync() is True
            assert pub.publish("resources.process.7.state", "running") is True
            assert pub.withdraw("resources.process.7.state") is True
            pub.publish("resources.process.8.state", "waiting for quorum")
            with CmapClient(str(run_dir)) as cmap:
                assert cmap.get_u32("runtime.votequorum.this_node_id") == 1
                assert cmap.keys("resources.process.") == ["resources.process.8.state"]
        assert pub.resync() is False  # service gone
        assert pub.publish("runtime.votequorum.two_node", 0, ValueType.UINT8) is False
        with cmap_service(tmp_path) as (run_dir, _):  # a restarted cmap starts from the file only
            assert pub.resync() is True
            with CmapClient(str(run_dir)) as cmap:
                assert cmap.get_u32("runtime.votequorum.this_node_id") == 1
                assert cmap.get_u8("runtime.votequorum.two_node") == 0
                assert cmap.get_string("resources.process.8.state") == "waiting for quorum"
                with pytest.raises(CsError):
                    pub.publish("totem.cluster_name", "x")  # read-only: a real error, raised
    finally:
        pub.close()


def test_inside_a_node_the_service_reads_the_node_stats_table(tmp_path: Path) -> None:
    import json

    from pycorosync.ipc.stats import StatsTable
    from tests.conftest import unique_prefix

    name = unique_prefix("cmapstats")
    table = StatsTable.create(name, 4)
    try:
        table.set_slot(0, "cpg", os.getpid())
        table.row(0).set("ipcs.active", 7)
        node = {"config": str(tmp_path / "corosync.conf"), "nodeid": 1, "cluster": "testcluster",
                "run_dir": str(tmp_path / "run"), "segment": "", "stats": name, "services": [], "bells": {}}
        with cmap_service(tmp_path, env={"PYCOROSYNC_NODE": json.dumps(node)}) as (run_dir, _), \
                CmapClient(str(run_dir), CMAP_MAP_STATS) as stats:
            assert stats.get_u64("stats.ipcs.global.active") == 8  # cpg's 7 + this connection
    finally:
        table.close()
        table.unlink()


def test_asyncio_engine_client_reloads_the_config(service: tuple[Path, Path]) -> None:
    run_dir, conf = service
    conf.write_text(CONF.replace("token: 1000", "token: 3000"))

    async def scenario() -> None:
        async with AsyncCmapClient(str(run_dir), engine=True) as cfg:
            assert await cfg.reload() == ""
            assert await cfg.get("totem.token") == (3000, ValueType.UINT32)
        async with AsyncCmapClient(str(run_dir)) as plain:
            with pytest.raises(CsError) as e:
                await plain.reload()
            assert code(e) == CsErrorCode.CS_ERR_ACCESS

    asyncio.run(asyncio.wait_for(scenario(), 30))
