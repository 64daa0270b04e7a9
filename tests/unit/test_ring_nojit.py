"""The ring's kernels hold as plain Python too: the ring tests again, in a process with NUMBA_DISABLE_JIT=1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RING_TESTS = ["test_ring.py", "test_ring_model.py", "test_ring_fuzz.py"]


def test_ring_tests_pass_with_the_jit_disabled() -> None:
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(str(HERE / t) for t in RING_TESTS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=HERE.parent.parent,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
