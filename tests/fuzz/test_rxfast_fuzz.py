"""Mutated frames against the totem process's compiled receive path (engine/runtime/rxfast.py): a
node with the path on and one with it off get the same stream, in which copies of frames with random
bytes changed in their entries come ahead of the intact ones (as a peer's retransmission would follow
a corrupted frame). Both must deliver the same records and count the same; neither may raise."""

from __future__ import annotations

import random

import pytest

from pycorosync.engine.runtime import records as rec
from pycorosync.engine.totem.wire import KIND_FIRST, KIND_LAST, KIND_MIDDLE, KIND_WHOLE, MCAST_HEADER_BYTES
from tests.unit.test_rxfast import COUNTED, SID, _deliveries, _feed, _formed, _Peer

ROUNDS = 20


def _round(rng: random.Random, peer: _Peer) -> list[tuple[int, bytes]]:
    """Frames of whole and fragmented messages, each preceded now and then by a mutated copy."""
    frames: list[tuple[int, bytes]] = []
    head = rec.service_header(SID)
    for _ in range(rng.randint(5, 25)):
        if rng.random() < 0.3:
            msg = head + rng.randbytes(rng.randint(1500, 4000))
            cut = sorted(rng.sample(range(64, len(msg) - 1), rng.randint(1, 3)))
            pieces = [msg[a:b] for a, b in zip([0, *cut], [*cut, len(msg)], strict=True)]
            kinds = [KIND_FIRST, *[KIND_MIDDLE] * (len(pieces) - 2), KIND_LAST]
            for kind, piece in zip(kinds, pieces, strict=True):
                frames.append(peer.frame([(kind, 1, piece, len(msg) if kind == KIND_FIRST else 0)]))
        else:
            n = rng.randint(1, 6)
            frames.append(peer.frame([(KIND_WHOLE, rng.randint(0, 3), head + rng.randbytes(rng.randint(0, 200)), 0)
                                      for _ in range(n)]))
    out: list[tuple[int, bytes]] = []
    for seq, frame in frames:
        if rng.random() < 0.35:
            bad = bytearray(frame)
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(MCAST_HEADER_BYTES - 2, len(bad))  # the entry count and the entries
                bad[at] = rng.randrange(256)
            if rng.random() < 0.2:
                bad = bad[:rng.randrange(MCAST_HEADER_BYTES, len(bad))]
            out.append((seq, bytes(bad)))
        out.append((seq, frame))
    return out


@pytest.mark.parametrize("seed", range(1, 21))
def test_mutated_frames_get_the_same_treatment_from_both_receive_paths(seed: int) -> None:
    rng = random.Random(seed)
    runs = {fast: _formed(fast) for fast in (True, False)}
    peers = {fast: _Peer(rt) for fast, rt in runs.items()}
    before = {fast: {k: rt.core.stats[k] for k in COUNTED} for fast, rt in runs.items()}
    for r in range(ROUNDS):
        state = rng.getstate()
        streams: dict[bool, list[tuple[int, bytes]]] = {}
        for fast in (True, False):
            rng.setstate(state)  # the same round for both
            streams[fast] = _round(rng, peers[fast])
        assert streams[True] == streams[False]
        got: dict[bool, list[tuple[int, bytes]]] = {}
        for fast, rt in runs.items():
            _feed(rt, streams[fast], rng.choice([1, 3, 50]) if fast else 1)
            got[fast] = _deliveries(rt)
        assert got[True] == got[False], f"seed {seed} round {r}: the paths delivered differently"
        stats = {fast: {k: rt.core.stats[k] - before[fast][k] for k in COUNTED} for fast, rt in runs.items()}
        assert stats[True] == stats[False], f"seed {seed} round {r}: the paths counted differently"
        for fast, rt in runs.items():
            store = rt.core.store
            assert store.high_seq == store.my_aru == store.delivered == peers[fast].seq, (seed, r, fast)
    assert runs[True].counters["frames_rx_compiled"] > 0
