"""Command-line tool calls: wall time of one ``pycorosync cmapctl`` run, plain rings against compiled ones.

An operator's script calls the tools many times (``corosync-cmapctl -g``, ``corosync-quorumtool -s``):
what counts is the time of a whole process, start to exit. The tools use plain-Python rings
(``ipc/plainring.py``) and never import numba; the baseline in the same run is the same tool with
the compiled rings (numba imported, its kernels loaded from the warm cache), and ``python -c pass``
is the floor of any Python process. With the real ``corosync-cmapctl`` installed and a corosync
running, it is timed too; otherwise a line says it was skipped.

Prints one JSON object per line:
    {"bench": "tools", "impl": "plain"|"compiled"|"python_startup"|"corosync", "command": ...,
     "runs": N, "p50_ms": ..., "mean_ms": ..., "min_ms": ...}
    {"bench": "tools", "impl": "ratio", "command": ..., "compiled_over_plain_p50": ...}

The calls of the cases are interleaved (plain, compiled, plain, ...), so a slow phase of the machine
hits both alike. A cmap service runs alone (no node) so that nothing else competes for the CPU.

    python bench/tools.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

CONF = textwrap.dedent("""\
    totem {
        version: 2
        cluster_name: benchtools
        transport: udpu
    }
    nodelist {
        node {
            nodeid: 1
            ring0_addr: 127.0.0.1
        }
    }
    """)

# the CLI as shipped, and the CLI with every connection forced onto the compiled rings (the path before plainring;
# not merely the tools' plain choice turned off: cmap's own default is plain too)
PLAIN = "import sys; from pycorosync.cli import main; sys.exit(main(sys.argv[1:]))"
COMPILED = ("import sys; from pycorosync import cli; from pycorosync.ipc import client; "
            "cli.PLAIN_RING_COMMANDS = frozenset(); client.use_compiled_rings(True); "
            "sys.exit(cli.main(sys.argv[1:]))")
COMMANDS = {
    "cmapctl -g totem.cluster_name": ["cmapctl", "-g", "totem.cluster_name"],
    "cmapctl -s bench.key u32 7": ["cmapctl", "-s", "bench.key", "u32", "7"],
    "cmapctl (whole dump)": ["cmapctl"],
}


def _time_call(argv: list[str]) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120)
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{argv} exited with {out.returncode}: {out.stderr[-500:]}")
    return elapsed


def _line(impl: str, command: str, times: list[float]) -> dict[str, object]:
    ms = [t * 1000 for t in times]
    row = {"bench": "tools", "impl": impl, "command": command, "runs": len(ms),
           "p50_ms": round(statistics.median(ms), 1), "mean_ms": round(statistics.fmean(ms), 1),
           "min_ms": round(min(ms), 1)}
    print(json.dumps(row), flush=True)
    return row


def _run_cases(run_dir: str, runs: int) -> None:
    floor = [_time_call([sys.executable, "-c", "pass"]) for _ in range(runs)]
    _line("python_startup", "python -c pass", floor)
    for command, words in COMMANDS.items():
        times: dict[str, list[float]] = {"plain": [], "compiled": []}
        for _ in range(runs):
            for impl, code in (("plain", PLAIN), ("compiled", COMPILED)):
                times[impl].append(_time_call([sys.executable, "-c", code, "--run-dir", run_dir, *words]))
        rows = {impl: _line(impl, command, t) for impl, t in times.items()}
        ratio = float(rows["compiled"]["p50_ms"]) / float(rows["plain"]["p50_ms"])  # type: ignore[arg-type]
        print(json.dumps({"bench": "tools", "impl": "ratio", "command": command,
                          "compiled_over_plain_p50": round(ratio, 2)}), flush=True)
    real = shutil.which("corosync-cmapctl")
    if real is None:
        print(json.dumps({"bench": "tools", "impl": "corosync", "skipped": "corosync-cmapctl is not installed"}))
        return
    try:
        _line("corosync", "corosync-cmapctl -g totem.cluster_name",
              [_time_call([real, "-g", "totem.cluster_name"]) for _ in range(runs)])
    except RuntimeError as exc:  # installed, but no corosync running here
        print(json.dumps({"bench": "tools", "impl": "corosync", "skipped": str(exc)[:200]}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15, help="calls per case")
    args = ap.parse_args()
    from pycorosync.localcluster import cmap_service

    tmp = Path(tempfile.mkdtemp(prefix="bench-tools-"))
    try:
        with cmap_service(tmp, CONF) as (run_dir_path, _conf):
            _run_cases(str(run_dir_path), args.runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
