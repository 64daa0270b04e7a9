"""``pycorosync cmapctl`` end to end against a cmap service, compared with real corosync-cmapctl output."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycorosync.cmap import CmapClient, ValueType
from tests.cluster.test_cmap_service import cmap_service

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference" / "tools"
# the configuration the reference dumps were taken with (node 1 of 3, udpu)
REFERENCE_CONF = textwrap.dedent("""\
    totem {
        version: 2
        cluster_name: refcluster
        transport: udpu
        token: 1000
        crypto_cipher: none
        crypto_hash: none
    }
    logging {
        to_logfile: yes
        logfile: /var/log/cluster/corosync.log
        to_stderr: no
        to_syslog: no
        timestamp: hires
        debug: off
    }
    nodelist {
        node {
            name: node1
            nodeid: 1
            ring0_addr: 10.77.0.1
        }
        node {
            name: node2
            nodeid: 2
            ring0_addr: 10.77.0.2
        }
        node {
            name: node3
            nodeid: 3
            ring0_addr: 10.77.0.3
        }
    }
    quorum {
        provider: corosync_votequorum
    }
    """)
# written by other processes of a node (totem runtime, votequorum, mon, wd), not by the cmap service itself
OTHER_WRITERS = ("runtime.members.", "runtime.votequorum.", "resources.")
LINE = re.compile(r"^[A-Za-z0-9._/:-]+ \((i8|u8|i16|u16|i32|u32|i64|u64|flt|dbl|str)\) = .*$|^[A-Za-z0-9._/:-]+ \(bin\)$")


@pytest.fixture
def ref_service(tmp_path: Path) -> Iterator[Path]:
    with cmap_service(tmp_path, REFERENCE_CONF, nodeid=1) as (run_dir, _):
        yield run_dir


def cmapctl(run_dir: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pycorosync", "--run-dir", str(run_dir), "cmapctl", *args],
        input=None if stdin is None else stdin.decode(), capture_output=True, text=True, timeout=120,
    )
    return proc


def normalized(names: list[str]) -> set[str]:
    return {re.sub(r"\.(\d+)(?=\.)", ".N", n) for n in names}


def test_dump_matches_the_reference_line_for_line_for_the_keys_this_service_owns(ref_service: Path) -> None:
    out = cmapctl(ref_service)
    assert out.returncode == 0, out.stderr
    ours = out.stdout.splitlines()
    assert all(LINE.match(line) for line in ours), [line for line in ours if not LINE.match(line)]
    assert ours == sorted(ours, key=lambda line: line.split(" ", 1)[0])
    reference = (REFERENCE / "cmapctl.txt").read_text().splitlines()
    # rx/tx counters are traffic-dependent; every other line of a key we own must be identical
    counters = re.compile(r"^runtime\.services\.\w+\.\d+\.(rx|tx) ")
    expected = [line for line in reference if not line.startswith(OTHER_WRITERS) and not counters.match(line)]
    assert [line for line in ours if not counters.match(line)] == expected
    assert normalized([line.split(" ")[0] for line in ours]) == normalized(
        [line.split(" ")[0] for line in reference if not line.startswith(OTHER_WRITERS)])


def test_dump_with_prefixes_prints_only_those_keys(ref_service: Path) -> None:
    out = cmapctl(ref_service, "totem.", "quorum")
    assert out.stdout.splitlines() == [
        "totem.cluster_name (str) = refcluster", "totem.crypto_cipher (str) = none", "totem.crypto_hash (str) = none",
        "totem.interface.0.bindnetaddr (str) = 10.77.0.1", "totem.token (u32) = 1000", "totem.transport (str) = udpu",
        "totem.version (u32) = 2", "quorum.provider (str) = corosync_votequorum",
    ]


def test_stats_dump_has_the_reference_layout_and_ipc_key_names(ref_service: Path) -> None:
    out = cmapctl(ref_service, "-m", "stats")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert all(LINE.match(line) for line in lines)
    names = [line.split(" ")[0] for line in lines]
    ipc = {re.sub(r"^stats\.ipcs\.service0\.\d+\.0x[0-9a-f]+\.", "stats.ipcs.service0.N.X.", n)
           for n in names if n.startswith("stats.ipcs.")}
    ref = {n for n in (REFERENCE / "cmap_stats_key_names.txt").read_text().split() if n.startswith("stats.ipcs.")}
    assert ipc == ref
    mine = [line for line in lines if ".procname " in line]
    assert mine and all(re.search(r"\.procname \(str\) = \S+", line) for line in mine)


def test_get_quiet_get_and_missing_key_error_line(ref_service: Path) -> None:
    out = cmapctl(ref_service, "-g", "totem.token", "runtime.config.totem.token")
    assert (out.returncode, out.stdout) == (0, "totem.token (u32) = 1000\nruntime.config.totem.token (u32) = 1650\n")
    out = cmapctl(ref_service, "-q", "-g", "totem.cluster_name")
    assert out.stdout == "refcluster\n"
    out = cmapctl(ref_service, "-g", "no.such.key", "totem.token")  # stops at the first missing key
    assert (out.returncode, out.stdout, out.stderr) == (1, "", "Can't get key no.such.key. Error CS_ERR_NOT_EXIST\n")
    out = cmapctl(ref_service, "-g")
    assert (out.returncode, out.stderr) == (1, "Expected key after options\n")
    out = cmapctl(ref_service, "no.such.prefix.")
    assert (out.returncode, out.stdout) == (1, "")


def test_set_every_type_then_read_back(ref_service: Path, tmp_path: Path) -> None:
    values = [("i8", "-128"), ("u8", "255"), ("i16", "-2"), ("u16", "65535"), ("i32", "-5"), ("u32", "7"),
              ("i64", "-9223372036854775808"), ("u64", "18446744073709551615"), ("flt", "1.5"), ("dbl", "2.25"),
              ("str", "hello world")]
    for type_name, text in values:
        out = cmapctl(ref_service, "-s", f"test.{type_name}", type_name, text)
        assert out.returncode == 0, out.stderr
    blob = tmp_path / "blob"
    blob.write_bytes(b"a\\b\x00\xff")
    assert cmapctl(ref_service, "-s", "test.bin", "bin", str(blob)).returncode == 0
    assert cmapctl(ref_service, "-s", "test.stdin", "bin", "-", stdin=b"").returncode == 0
    out = cmapctl(ref_service, "test.")
    assert out.stdout.splitlines() == [
        "test.bin (bin)", "test.dbl (dbl) = 2.250000", "test.flt (flt) = 1.500000", "test.i16 (i16) = -2",
        "test.i32 (i32) = -5", "test.i64 (i64) = -9223372036854775808", "test.i8 (i8) = -128",
        "test.stdin (bin)", "test.str (str) = hello world", "test.u16 (u16) = 65535",
        "test.u32 (u32) = 7", "test.u64 (u64) = 18446744073709551615", "test.u8 (u8) = 255",
    ]
    out = cmapctl(ref_service, "-b", "test.bin", "test.stdin")
    assert out.stdout.splitlines() == ["test.bin (bin) = a\\\\b\\x00\\xFF", "test.stdin (bin) = *empty*"]
    # corosync-cmapctl's -q drops "key (" and the type, but prints "bin)" for a binary value
    assert cmapctl(ref_service, "-q", "-g", "test.u8", "test.bin").stdout == "255\nbin)\n"


def test_set_errors_use_corosync_wording(ref_service: Path) -> None:
    out = cmapctl(ref_service, "-s", "totem.cluster_name", "str", "other")
    assert (out.returncode, out.stderr) == (1, "Failed to set key totem.cluster_name. Error CS_ERR_ACCESS\n")
    out = cmapctl(ref_service, "-s", "test.x", "u8", "256")
    assert out.returncode == 1 and "256 is not valid u8 integer" in out.stderr
    out = cmapctl(ref_service, "-s", "test.x", "u99", "1")
    assert out.returncode == 1 and "Unknown type u99" in out.stderr
    out = cmapctl(ref_service, "-s", "bad key", "u8", "1")
    assert out.stderr == "Failed to set key bad key. Error CS_ERR_NAME_TOO_LONG\n"
    out = cmapctl(ref_service, "-s", "test.x", "u8")
    assert (out.returncode, out.stderr) == (1, "At least 3 parameters are expected for set\n")
    out = cmapctl(ref_service, "-m", "nope")
    assert (out.returncode, out.stderr) == (1, "invalid map name, must be 'default', 'icmap' or 'stats'\n")


def test_delete_keys_and_prefixes(ref_service: Path) -> None:
    with CmapClient(str(ref_service)) as cmap:
        for key in ("del.a.1", "del.a.2", "del.b", "keep.c"):
            cmap.set(key, 1, ValueType.UINT8)
    assert cmapctl(ref_service, "-d", "del.b").returncode == 0
    out = cmapctl(ref_service, "-d", "del.b", "keep.c")  # stops at the first failure
    assert (out.returncode, out.stderr) == (1, "Can't delete key del.b. Error CS_ERR_NOT_EXIST\n")
    assert cmapctl(ref_service, "-D", "del.").returncode == 0
    assert cmapctl(ref_service, "del.", "keep.").stdout == "keep.c (u8) = 1\n"


def test_load_file_sets_and_deletes(ref_service: Path, tmp_path: Path) -> None:
    with CmapClient(str(ref_service)) as cmap:
        for key in ("file.old.1", "file.old.2", "file.one"):
            cmap.set(key, 1, ValueType.UINT8)
    ops = tmp_path / "ops"
    ops.write_text("file.new u32 42\n  # a comment\nfile.text str two words\n^file.one\n^^file.old.\n\n^file.none\n")
    out = cmapctl(ref_service, "-p", str(ops))
    assert (out.returncode, out.stderr) == (0, "Can't delete key file.none. Error CS_ERR_NOT_EXIST\n")
    # a value is one word, as corosync-cmapctl's strtok reads the line
    assert cmapctl(ref_service, "file.").stdout == "file.new (u32) = 42\nfile.text (str) = two\n"
    ops.write_text("file.half u32\n")
    out = cmapctl(ref_service, "-p", str(ops))
    assert (out.returncode, out.stderr) == (1, "Both type and value for key file.half are required\n")


def test_clear_stats_and_unreachable_service(ref_service: Path, tmp_path: Path) -> None:
    assert cmapctl(ref_service, "-C", "all").returncode == 0
    out = cmapctl(ref_service, "-C", "disk")
    assert (out.returncode, out.stderr) == (
        1, "argument to -C should be 'knet', 'totem', 'ipc', 'schedmiss' or 'all'\n")
    out = cmapctl(tmp_path / "nothing-here", "-g", "totem.token")
    assert (out.returncode, out.stderr) == (1, "Failed to initialize the cmap API. Error CS_ERR_LIBRARY\n")


def read_line(stream: object, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    fd = stream.fileno()  # type: ignore[attr-defined]
    buf = b""
    while not buf.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise AssertionError(f"no line within {timeout}s (got {buf!r})")
        chunk = os.read(fd, 1)
        if not chunk:
            raise AssertionError(f"end of output (got {buf!r})")
        buf += chunk
    return buf.decode()


@pytest.mark.parametrize(("flag", "key"), [("-T", "track."), ("-t", "track.key")])
def test_track_prints_create_modify_delete_lines_until_q(ref_service: Path, flag: str, key: str) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "pycorosync", "--run-dir", str(ref_service), "cmapctl", flag, key],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert read_line(proc.stdout) == 'Type "q" to finish\n'
        with CmapClient(str(ref_service)) as cmap:
            cmap.set("track.key", 1, ValueType.UINT32)
            cmap.set("track.key", "two")
            cmap.delete("track.key")
        assert [read_line(proc.stdout) for _ in range(3)] == [
            "create> track.key (u32) = 1\n", "modify> track.key (str) = two\n", "delete> track.key (str) = two\n"]
        assert proc.stdin is not None
        proc.stdin.write(b"q\n")
        proc.stdin.flush()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f:
                f.close()


def test_the_tool_never_imports_numba_and_reads_and_writes_through_plain_rings(ref_service: Path) -> None:
    """The command-line tools talk to the services through ``ipc.plainring``: no numba import, no kernel load."""
    script = (
        "import sys\n"
        "from pycorosync.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "print('numba loaded' if 'numba' in sys.modules else 'numba not loaded')\n"
        "sys.exit(rc)\n"
    )
    base = [sys.executable, "-c", script, "--run-dir", str(ref_service), "cmapctl"]
    for args in (["-s", "plain.ring", "u32", "7"], ["-g", "plain.ring"]):
        out = subprocess.run([*base, *args], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[-1] == "numba not loaded", out.stdout
    assert out.stdout.splitlines()[0] == "plain.ring (u32) = 7"
