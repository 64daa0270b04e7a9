"""UDP transport throughput: ring -> transport -> loopback -> transport -> ring, against plain Python sockets.

Prints one JSON object per line:
  {"bench": "udp", "impl": ..., "size_bytes": ..., "msgs_per_s": ..., "mb_per_s": ..., "loss": ...}

impl ``python_sendto`` is the in-run baseline: a plain Python ``sendto`` loop in this process and a
``recvfrom`` loop in a child. ``transport`` (crypto off) and ``transport_aesgcm`` (aes256 + sha256) run two
transport processes; this process plays totem on both sides with small numba kernels (push sequence-numbered
frames into node 1's tx ring, check and count them out of node 2's rx ring). Like totem's flow control, at
most ``--window-bytes`` are in flight, so a receiver that keeps up loses nothing; ``loss`` is
1 - received/sent after the run drains.

    python bench/udp.py [--quick] [--seconds S] [--sizes 64,1024,8192]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
from numba import njit

from pycorosync.ipc.ring_kernels import (
    RECORD_HEADER_BYTES,
    ring_needs_wake,
    ring_publish,
    ring_publish_head,
    ring_scan,
    ring_write,
)

SIZES = (64, 1024, 8192)
NETMTU = 9000
IDLE_POLLS = 32  # empty passes of this harness's own producer/consumer loop before it sleeps


@njit(cache=True, nogil=True)
def produce(buf, base, cap, dest, size, first_seq, max_n, scratch):  # type: ignore[no-untyped-def]
    """Pushes up to ``max_n`` frames (seq in the first 8 bytes); returns (pushed, consumer needs a wake)."""
    k = 0
    while k < max_n:
        seq = first_seq + k
        for b in range(8):
            scratch[b] = np.uint8((seq >> (8 * b)) & 0xFF)
        if not ring_write(buf, base, cap, dest, scratch, 0, size):
            break
        k += 1
    wake = False
    if k > 0:
        ring_publish(buf, base)
        wake = ring_needs_wake(buf, base)
    return k, wake


@njit(cache=True, nogil=True)
def consume(buf, base, cap, out, state):  # type: ignore[no-untyped-def]
    """Takes every available record; state = [next expected seq, received, out of order, first seq of this run].

    Frames older than this run (late ones of an earlier run) are ignored."""
    total = 0
    while True:
        n = ring_scan(buf, base, cap, out)
        if n <= 0:
            break
        for i in range(n):
            p = out[i, 0] + RECORD_HEADER_BYTES
            seq = 0
            for b in range(7, -1, -1):
                seq = (seq << 8) | np.int64(buf[p + b])
            if seq < state[3]:
                continue
            if seq != state[0]:
                state[2] += 1
            state[0] = seq + 1
            state[1] += 1
        ring_publish_head(buf, base)
        total += n
    return total


def _warm_kernels() -> None:
    """Loads (or compiles) produce/consume before anything is timed."""
    from pycorosync.ipc.ring import Ring

    ring = Ring.create(np.zeros(Ring.layout_bytes(4096), np.uint8), 4096)
    produce(ring.array, ring.offset, ring.capacity, 2, 64, 0, 4, np.zeros(64, np.uint8))
    consume(ring.array, ring.offset, ring.capacity, np.zeros((256, 3), np.int64), np.zeros(4, np.int64))


def start_pair(cipher: str, hash_name: str) -> list:  # type: ignore[type-arg]
    """Two transport processes (nodes 1 and 2 on 127.0.0.1/.2), still starting: ``wait_ready()`` each."""
    from pycorosync.transports.crypto import CryptoSettings
    from pycorosync.transports.udp.node import TransportProcess
    from pycorosync.transports.udp.plan import make_plan

    crypto = CryptoSettings(cipher, hash_name, "bench", os.urandom(256) if cipher != "none" else b"")
    port = _free_port()
    members = [(1, "127.0.0.1"), (2, "127.0.0.2")]
    procs = []
    try:
        for nid in (1, 2):
            plan = make_plan(nid, members, crypto, mcastport=port, netmtu=NETMTU)
            procs.append(TransportProcess(plan, capacity=1 << 24, wait=False))
    except BaseException:
        for p in procs:
            p.stop()
        raise
    return procs


def _measure(impl: str, a, b, size: int, seconds: float, window_bytes: int) -> dict:  # type: ignore[no-untyped-def]
    tx, rx = a.seg.tx, b.seg.rx
    scratch = np.zeros(size, np.uint8)
    out = np.zeros((256, 3), np.int64)
    state = np.zeros(4, np.int64)
    window = max(64, min(8192, window_bytes // size))
    # sequence numbers continue across runs (a late frame of an earlier run is recognised and ignored)
    base_seq = sent = int(time.monotonic_ns() // 1000)
    state[:] = (base_seq, 0, 0, base_seq)
    t0 = time.monotonic()
    end = t0 + seconds
    idle = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        room = window - (sent - base_seq - int(state[1]))
        k = 0
        if room > 0:
            k, wake = produce(tx.array, tx.offset, tx.capacity, 2, size, sent, min(room, 512), scratch)
            sent += k
            if wake:
                a.tx_bell.ring()
        got = consume(rx.array, rx.offset, rx.capacity, out, state)
        if got or k:
            idle = 0
            continue
        idle += 1
        if idle >= IDLE_POLLS and rx.arm():  # the harness polls briefly, then sleeps (the transport: one pass)
            b.rx_bell.wait(0.001)
    elapsed = time.monotonic() - t0
    received_in_time = int(state[1])
    # drain what is still in flight (not counted in the rate, counted for loss)
    deadline = time.monotonic() + 2.0
    while int(state[1]) < sent - base_seq and time.monotonic() < deadline:
        if consume(rx.array, rx.offset, rx.capacity, out, state) == 0 and rx.arm():
            b.rx_bell.wait(0.01)
    total = sent - base_seq
    loss = 1.0 - int(state[1]) / total if total else 0.0
    return {
        "bench": "udp", "impl": impl, "size_bytes": size,
        "msgs_per_s": round(received_in_time / elapsed), "mb_per_s": round(received_in_time * size / elapsed / 1e6, 1),
        "loss": round(loss, 6), "out_of_order": int(state[2]), "window_frames": window,
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def python_sendto(size: int, seconds: float) -> dict:
    """The baseline: a Python sendto loop here, a Python recvfrom loop in a child process."""
    port = _free_port()
    child = subprocess.Popen(
        [sys.executable, __file__, "--role", "recv", "--port", str(port), "--seconds", str(seconds + 3)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        ready = child.stdout.readline()  # type: ignore[union-attr]
        assert ready.strip() == "ready", ready
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        s.bind(("127.0.0.1", 0))
        payload = bytes(size)
        dest = ("127.0.0.2", port)
        sent = 0
        t0 = time.monotonic()
        end = t0 + seconds
        sendto = s.sendto
        while time.monotonic() < end:
            for _ in range(64):
                sendto(payload, dest)
            sent += 64
        elapsed = time.monotonic() - t0
        sendto(b"", dest)  # end marker
        s.close()
        out, _ = child.communicate(timeout=seconds + 10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    received = json.loads(out.strip().splitlines()[-1])["received"]
    return {
        "bench": "udp", "impl": "python_sendto", "size_bytes": size,
        "msgs_per_s": round(received / elapsed), "mb_per_s": round(received * size / elapsed / 1e6, 1),
        "loss": round(1.0 - received / sent, 6) if sent else 0.0,
    }


def _recv_role(port: int, seconds: float) -> None:
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        r.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE, as the transport does
    except OSError:
        r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    r.bind(("127.0.0.2", port))
    r.settimeout(seconds)
    print("ready", flush=True)
    received = 0
    recv = r.recv
    try:
        while True:
            if not recv(65536):
                break
            received += 1
    except TimeoutError:
        pass
    print(json.dumps({"received": received}), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short runs (whole bench well under 30 s)")
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--window-bytes", type=int, default=8 << 20, help="bytes in flight at most (flow control)")
    ap.add_argument("--role", default="bench")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    if args.role == "recv":
        _recv_role(args.port, args.seconds)
        return 0
    from pycorosync import jitcache

    jitcache.configure()
    if not jitcache.is_warm():  # transport processes must not compile inside a measurement
        from pycorosync.warm import warm_all

        warm_all()
    seconds = args.seconds or (0.5 if args.quick else 2.0)
    _warm_kernels()
    sizes = [int(s) for s in args.sizes.split(",")]
    pairs: dict[str, list] = {}  # type: ignore[type-arg]
    try:
        pairs["transport"] = start_pair("none", "none")
        pairs["transport_aesgcm"] = start_pair("aes256", "sha256")
        for a, b in pairs.values():  # all four started in parallel
            a.wait_ready()
            b.wait_ready()
        for a, b in pairs.values():
            _measure("warm-up", a, b, 8192, min(0.3, seconds), args.window_bytes)  # page faults, caches
        # per size, the baseline and both transports back to back: the machine's load is shared, so the
        # ratios are read within one size
        for size in sizes:
            print(json.dumps(python_sendto(size, seconds)), flush=True)
            for impl, (a, b) in pairs.items():
                row = _measure(impl, a, b, size, seconds, args.window_bytes)
                row.update(gso=a.info["gso"], gro=b.info["gro"])
                print(json.dumps(row), flush=True)
    finally:
        for procs in pairs.values():
            for p in procs:
                p.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
