"""Per-peer link health: last heard, connected or not, packets and bytes each way.

The table is ``int64[n, 8]`` indexed by the peer's position in the sorted nodelist, written by the
transport's kernels and readable by any process when it lives in shared memory (cfg's
``corosync-cfgtool -s`` view). Columns:

    0 last_heard_ns (CLOCK_MONOTONIC)  1 rx_packets  2 rx_bytes  3 tx_packets  4 tx_bytes
    5 boot_id of the peer's current incarnation  6 connected (0/1, refreshed every tick)  7 node id

A shared table starts with a 64-byte header: magic u32, version u32, rows i64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LINK_MAGIC = 0x4B4E4C50  # "PLNK"
#: layout version of the segment the shared table lives in (``/pcs-<cluster>-<nodeid>-links``), as its readers check it
SEGMENT_LAYOUT_VERSION = 1
LINK_VERSION = 1
HEADER_BYTES = 64
COLUMNS = 8
COL_LAST_HEARD_NS, COL_RX_PACKETS, COL_RX_BYTES, COL_TX_PACKETS, COL_TX_BYTES, COL_BOOT_ID, COL_CONNECTED, COL_NODEID = (
    range(8)
)


def table_bytes(n_nodes: int) -> int:
    """Size of a shared link table for ``n_nodes`` nodelist members."""
    return HEADER_BYTES + n_nodes * COLUMNS * 8


@dataclass(frozen=True)
class LinkStatus:
    """One peer as cfgtool shows it."""

    nodeid: int
    connected: bool
    last_heard_ms_ago: float | None
    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int


class LinkTable:
    """The health table of one link (a view over local or shared memory)."""

    def __init__(self, table: np.ndarray) -> None:
        assert table.dtype == np.int64 and table.ndim == 2 and table.shape[1] == COLUMNS
        self.table = table
        # send kernel's (packets, bytes) per peer
        self.tx_view = table[:, COL_TX_PACKETS : COL_TX_BYTES + 1]

    @classmethod
    def local(cls, node_ids: np.ndarray | list[int]) -> LinkTable:
        t = np.zeros((len(node_ids), COLUMNS), dtype=np.int64)
        t[:, COL_NODEID] = sorted(int(n) for n in node_ids)
        return cls(t)

    @classmethod
    def create(cls, buf: np.ndarray, node_ids: np.ndarray | list[int]) -> LinkTable:
        """Lays a fresh table into ``buf`` (uint8, at least ``table_bytes(n)``)."""
        head = buf[:HEADER_BYTES].view(np.int64)
        head[:] = 0
        buf[:8].view(np.uint32)[:] = (LINK_MAGIC, LINK_VERSION)
        head[1] = len(node_ids)
        lt = cls._view(buf, len(node_ids))
        lt.table[:] = 0
        lt.table[:, COL_NODEID] = sorted(int(n) for n in node_ids)
        return lt

    @classmethod
    def attach(cls, buf: np.ndarray) -> LinkTable:
        """Opens a table another process created; refuses another layout version."""
        magic, version = (int(v) for v in buf[:8].view(np.uint32))
        if magic != LINK_MAGIC or version != LINK_VERSION:
            raise ValueError(f"link table: magic {magic:#x} version {version}, expected {LINK_MAGIC:#x} v{LINK_VERSION}")
        return cls._view(buf, int(buf[:HEADER_BYTES].view(np.int64)[1]))

    @classmethod
    def _view(cls, buf: np.ndarray, n: int) -> LinkTable:
        body = buf[HEADER_BYTES : HEADER_BYTES + n * COLUMNS * 8].view(np.int64).reshape(n, COLUMNS)
        return cls(body)

    def update_connected(self, now_ns: int, timeout_ns: int) -> None:
        """A peer is connected when heard within the token timeout."""
        heard = self.table[:, COL_LAST_HEARD_NS]
        self.table[:, COL_CONNECTED] = (heard > 0) & (now_ns - heard <= timeout_ns)

    def statuses(self, now_ns: int) -> list[LinkStatus]:
        out = []
        for row in self.table.copy():
            heard = int(row[COL_LAST_HEARD_NS])
            out.append(LinkStatus(
                int(row[COL_NODEID]), bool(row[COL_CONNECTED]), (now_ns - heard) / 1e6 if heard else None,
                int(row[COL_RX_PACKETS]), int(row[COL_RX_BYTES]), int(row[COL_TX_PACKETS]), int(row[COL_TX_BYTES]),
            ))
        return out


def format_cfgtool_s(local_id: int, transport: str, local_addr: str, statuses: list[LinkStatus]) -> str:
    """``corosync-cfgtool -s`` for a udp/udpu link (one link, id 0)."""
    lines = [f"Local node ID {local_id}, transport {transport}", "LINK ID 0 ", f"\taddr\t= {local_addr}", "\tstatus:"]
    for st in statuses:
        state = "localhost" if st.nodeid == local_id else ("connected" if st.connected else "disconnected")
        lines.append(f"\t\tnodeid: {st.nodeid:>10}:\t{state}")
    return "\n".join(lines) + "\n"
