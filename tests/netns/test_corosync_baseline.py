"""The real-corosync baseline of bench/cpg.py: 3 corosync daemons in network namespaces, driven through
corosync's own libcpg, print the same JSON line as pycorosync, and leave nothing behind.

Skipped, with the reason, where real corosync can't run (not root, no corosync or libcpg installed, no
``ip``/``nft``); ``make test`` installs corosync through tools/sysdeps.sh as root.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from pycorosync.netlab import NETNS_DIR

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from _corosync_nodes import unavailable_reason  # noqa: E402
from _libcpg import find_libcpg  # noqa: E402


def _skip_reason() -> str | None:
    return unavailable_reason() or (None if find_libcpg() else "libcpg (corosync's client library) is not installed")


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


def _qb_segments() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("qb-*")}


def test_bench_measures_real_corosync() -> None:
    shm_before = _qb_segments()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "cpg.py"), "--impl", "corosync", "--sizes", "1024", "--senders", "1",
         "--seconds", "1", "--latency-count", "10", "--corosync-clients", "python,c"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, f"bench/cpg.py exited {proc.returncode}\n{err[-3000:]}"
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    cases = [x for x in lines if x.get("impl") == "corosync"]
    # one case driven by the Python workers (libcpg through ctypes), then one by the C worker; without a C
    # compiler the second is a line that says it skipped
    assert [c.get("client", "")[:1] for c in cases] == ["p", "c"], f"corosync cases:\n{out}\n{err[-3000:]}"
    measured = [c for c in cases if "skipped" not in c]
    assert measured and measured[0]["client"].startswith("python"), f"no measured corosync case in:\n{out}\n{err[-3000:]}"
    if shutil.which("cc") or shutil.which("gcc"):
        assert len(measured) == 2, cases[1]
    for case in measured:
        assert case["complete"] is True, case
        assert case["version"].startswith("3."), case
        assert case["sent"] > 0 and case["msgs_per_s"] > 0, case
        assert 0 < case["p50_us"] <= case["p99_us"], case
        assert case["cpu_us_per_msg"]["corosync"] > 0 and case["cpu_us_per_msg"]["clients"] > 0, case
    # nothing left: no daemon, no namespace of the bench's process, no libqb segment
    assert not [p.info for p in psutil.process_iter(["name", "cmdline"])
                if p.info["name"] == "corosync" and any("pycorosync-bench-corosync" in a for a in p.info["cmdline"] or [])]
    if NETNS_DIR.is_dir():
        assert not [e.name for e in NETNS_DIR.iterdir() if e.name.startswith(f"pcs-{proc.pid}-")]
    assert _qb_segments() <= shm_before, _qb_segments() - shm_before
