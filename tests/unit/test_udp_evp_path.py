"""With AES-GCM on and libcrypto present, the UDP transport's receive side runs the zero-copy EVP path
(``evp.open_accept``: decrypt straight into reserved rx ring records), and its send side seals straight
out of the tx ring (``evp.drain_seal``); only a sender incarnation's first batch takes the two-step path."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from pycorosync.transports.udp import evp, frames
from tests.unit.test_udp_transport import AES, Node, free_port, run_until, seq_payload

pytestmark = pytest.mark.timeout(120)


class Spy:
    """Counts the calls of a kernel and the frames delivered into the rx ring during them."""

    def __init__(self, fn: Callable[..., Any], ctr_arg: int | None = None) -> None:
        self.fn = fn
        self.ctr_arg = ctr_arg  # position of the counter array among the kernel's arguments
        self.calls = 0
        self.delivered = 0

    def __call__(self, *args: Any) -> Any:
        ctr = args[self.ctr_arg] if self.ctr_arg is not None else None
        before = int(ctr[frames.C_RX_DELIVERED]) if ctr is not None else 0
        out = self.fn(*args)
        self.calls += 1
        if ctr is not None:
            self.delivered += int(ctr[frames.C_RX_DELIVERED]) - before
        return out


def test_aes_gcm_frames_are_opened_into_the_rx_ring_by_the_fused_evp_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    if not evp.available():
        pytest.skip("libcrypto (OpenSSL EVP) cannot be loaded here: the transport uses 'cryptography' instead")
    fused = Spy(evp.open_accept, ctr_arg=16)
    two_step = Spy(frames.rx_accept, ctr_arg=16)
    sealed_from_ring = Spy(evp.drain_seal)
    copied_out = Spy(frames.tx_drain)
    monkeypatch.setattr(evp, "open_accept", fused)
    monkeypatch.setattr(frames, "rx_accept", two_step)
    monkeypatch.setattr(evp, "drain_seal", sealed_from_ring)
    monkeypatch.setattr(frames, "tx_drain", copied_out)
    port = free_port()
    nodes = [(1, "127.0.0.1"), (2, "127.0.0.2")]
    from pycorosync.transports.udp.plan import make_plan

    a = Node(make_plan(1, nodes, AES, mcastport=port))
    b = Node(make_plan(2, nodes, AES, mcastport=port))
    try:
        assert a.t.evp and b.t.evp
        total = 3000
        sent = 0
        deadline = time.monotonic() + 60
        while len(b.got) < total:
            assert time.monotonic() < deadline
            while sent < total and a.tx.push(2, seq_payload(sent, 1024)):
                sent += 1
            run_until([a, b], lambda: True)
            a.pump()
            b.pump()
            b.got.extend(b.rx.pop_batch(256))
        assert [p for _, p in b.got] == [seq_payload(i, 1024) for i in range(total)]
        # the first batch of a new sender incarnation goes through 'cryptography' and the two-step push;
        # everything after it is decrypted straight into the ring
        assert two_step.calls == 1 and two_step.delivered > 0
        assert fused.delivered == total - two_step.delivered
        assert fused.delivered >= total - 2048  # at most one receive batch (RX_SEGMENTS) took the slow path
        assert sealed_from_ring.calls > 0 and copied_out.calls == 0
    finally:
        a.t.close()
        b.t.close()
