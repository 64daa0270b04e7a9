"""Run a piece of a test in a forked child (another uid, a changed scheduling) and get back its report."""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Callable


def forked_report(body: Callable[[], str], timeout: float) -> str:
    """Runs ``body`` in a forked child and returns the text it returned; "CRASH <type>" if it raised,
    "HUNG" if it said nothing within ``timeout`` seconds (the child is then killed). The child leaves
    through ``os._exit``, never back into pytest."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            try:
                report = body()
            except BaseException as exc:
                report = f"CRASH {type(exc).__name__}: {exc}"
            os.write(write_end, report.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    ready: list[int] = []
    try:
        ready, _, _ = select.select([read_end], [], [], timeout)
        chunks = []
        while ready:
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode() if ready else "HUNG"
    finally:
        os.close(read_end)
        if not ready:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
