"""Starting ``tests.unit.ring_peers`` programs around one shared ring, and always reaping them."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycorosync.ipc.doorbell import Doorbell
from pycorosync.ipc.ring import Ring
from pycorosync.ipc.segment import Segment, SegmentKind
from tests.unit.ring_peers import ACK_CAPACITY

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class SharedRing:
    """A memfd segment holding a data ring (and the ack ring of tests.unit.ring_peers), and the two doorbells of its consumer and producer.

    A memfd, not a named segment: nothing another test run on the machine could list or remove.
    """

    segment: Segment
    ring: Ring
    consumer_bell: Doorbell
    producer_bell: Doorbell
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def spawn(self, role: str, **opts: Any) -> subprocess.Popen[str]:
        """Starts a peer and waits (bounded) until it says it is attached."""
        argv = [sys.executable, "-m", "tests.unit.ring_peers", role, "--memfd", str(self.segment.fileno())]
        argv += ["--capacity", str(self.ring.capacity)]
        argv += ["--consumer-fd", str(self.consumer_bell.fileno()), "--producer-fd", str(self.producer_bell.fileno())]
        for key, value in opts.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        fds = (self.segment.fileno(), self.consumer_bell.fileno(), self.producer_bell.fileno())
        proc = subprocess.Popen(argv, cwd=ROOT, pass_fds=fds, stdout=subprocess.PIPE, text=True)
        self.procs.append(proc)
        wait_line(proc, "ready", timeout=60.0)
        return proc


def wait_line(proc: subprocess.Popen[str], want: str, timeout: float) -> str:
    """Reads the peer's stdout until a line equal to ``want``; fails after ``timeout`` seconds."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"peer {proc.args} did not print {want!r} within {timeout}s"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            line = proc.stdout.readline()
            assert line, f"peer {proc.args} exited with {proc.wait()} before printing {want!r}"
            if line.strip() == want:
                return line


def result(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """The peer's JSON result line, after it exits (bounded)."""
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"peer exited with {proc.returncode}: {out[-2000:]}"
    parsed: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return parsed


@contextmanager
def shared_ring(name: str, capacity: int) -> Iterator[SharedRing]:
    """Creates the segment and bells; on exit kills and reaps every peer and closes everything."""
    ack_offset = Ring.layout_bytes(capacity)
    seg = Segment.create_anonymous(ack_offset + Ring.layout_bytes(ACK_CAPACITY), SegmentKind.RINGS, 1, label=name)
    arr = seg.array()
    Ring.create(arr, ACK_CAPACITY, offset=ack_offset, label=name + " ack").close()
    shared = SharedRing(seg, Ring.create(arr, capacity, label=name), Doorbell(), Doorbell())
    del arr
    try:
        yield shared
    finally:
        for proc in shared.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
            if proc.stdout:
                proc.stdout.close()
        shared.ring.close()
        shared.consumer_bell.close()
        shared.producer_bell.close()
        seg.close()
