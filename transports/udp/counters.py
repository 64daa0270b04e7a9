"""Names of the transport's counters, in the order of its local counter array (the kernels' indices).

The transport adds to a local int64 array from its kernels and copies it into its stats-table row every
housekeeping tick, so the table layout can change without touching a kernel.
"""

from __future__ import annotations

from pycorosync.transports.udp import batch, frames

DROP_NAMES = (
    "too_short", "bad_header", "wrong_cluster", "unknown_node", "replay", "bad_auth", "oversized", "own",
)

COUNTER_NAMES: tuple[str, ...] = (
    "tx_packets",
    "tx_bytes",
    "tx_batches",
    "tx_gso_segments",
    "socket_errors",
    "rx_packets",
    "rx_bytes",
    "rx_batches",
    "rx_gro_segments",
    *(f"rx_drop_{name}" for name in DROP_NAMES),
    "tx_drop_oversized",
    "tx_drop_unknown_dest",
    "rx_delivered",
    "rx_ring_full",
    "rx_wakes",
    "tx_large_frames",
)

assert len(COUNTER_NAMES) == frames.N_COUNTERS
assert COUNTER_NAMES[batch.C_RX_GRO_SEGMENTS] == "rx_gro_segments"
assert COUNTER_NAMES[frames.C_DROP_BASE + frames.R_BAD_AUTH] == "rx_drop_bad_auth"
assert COUNTER_NAMES[frames.C_RX_RING_FULL] == "rx_ring_full"
assert COUNTER_NAMES[frames.C_TX_LARGE] == "tx_large_frames"
