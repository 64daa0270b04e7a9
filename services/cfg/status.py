"""What the cfg service reports about nodes and links: addresses from the config, health from the
transport's link table (``transports.links``, segment ``/pcs-<cluster>-<nodeid>-links``) and the
current membership.

A peer's link counts as connected when the transport heard it within the token timeout, or when it is
a member of the current ring. The second rule is corosync's own for udp/udpu (a member is an active
link), and it is needed here too: with a unicast token a node hears only its ring predecessor while the
ring is idle, so last-heard alone would call healthy members disconnected. A dead member is dropped
from the ring within the token and consensus timeouts, and its last-heard time is stale after one
token timeout, so it shows disconnected then.

Only link 0 is run (knet configurations are served as udpu on link 0), so only link 0 is enabled.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from pycorosync.services.cfg.protocol import CFG_MAX_LINKS, CFG_NODE_STATUS_V1, CfgLinkStatus, CfgNodeStatus

log = logging.getLogger("CFG")



@dataclass(frozen=True)
class NodeLinks:
    """What the service knows of the cluster's links from the config (resolved, numeric addresses)."""

    local_nodeid: int
    transport: str  # totem.transport as configured: knet, udpu, udp
    addrs: Mapping[int, tuple[str, ...]]  # nodeid -> address per link (nodelist order of links)
    mtu: int

    def node_ids(self) -> list[int]:
        return sorted(self.addrs)

    @property
    def local_addr(self) -> str:
        own = self.addrs.get(self.local_nodeid, ())
        return own[0] if own else ""


def node_status(links: NodeLinks, nodeid: int, heard: Mapping[int, bool] | None,
                members: Collection[int]) -> CfgNodeStatus | None:
    """``corosync_cfg_node_status_get`` for ``nodeid`` (None: not in the nodelist).

    ``heard``: node id -> heard within the token timeout, from the link table (None when it cannot be
    read); ``members``: the current ring.
    """
    if nodeid not in links.addrs:
        return None
    addrs = links.addrs[nodeid]
    local = nodeid == links.local_nodeid
    connected = local or nodeid in members or bool(heard and heard.get(nodeid, False))
    knet = links.transport == "knet"
    peer = addrs[0] if addrs else ""
    link0 = CfgLinkStatus(
        enabled=True, connected=connected, mtu=links.mtu,
        # udp/udpu print one address per link (the peer's); knet prints local->peer
        src_ipaddr=links.local_addr if knet else "", dst_ipaddr=peer,
    )
    others = (CfgLinkStatus(),) * (CFG_MAX_LINKS - 1)
    return CfgNodeStatus(CFG_NODE_STATUS_V1, nodeid, reachable=connected, link_status=(link0, *others))


def brief_status(links: NodeLinks, heard: Mapping[int, bool] | None, members: Collection[int]) -> str:
    """The legacy ring status string of link 0: a character per nodelist node, ``n`` for this one,
    else ``'0' + (enabled | connected << 1)`` (corosync-cfgtool -b)."""
    chars = []
    for nid in links.node_ids():
        st = node_status(links, nid, heard, members)
        if nid == links.local_nodeid or st is None:
            chars.append("n" if nid == links.local_nodeid else "0")
            continue
        ln = st.link(0)
        chars.append(chr(ord("0") + (int(ln.enabled) | int(ln.connected) << 1)))
    return "".join(chars)


class LinkTableReader:
    """Reads the transport's link table; maps it afresh each time, because a restarted transport
    makes a new table (the old mapping would keep a dead process's numbers)."""

    def __init__(self, cluster: str, nodeid: int) -> None:
        from pycorosync.ipc.segment import segment_name

        self.name = segment_name(cluster, nodeid, "links")
        self._warned = False

    def heard(self) -> dict[int, bool] | None:
        """node id -> heard within the token timeout (the transport's ``connected`` column); None when
        there is no table (transport not started, or an older build)."""
        from pycorosync.ipc.segment import Segment, SegmentKind
        from pycorosync.transports import links

        try:
            seg = Segment.attach(self.name, SegmentKind.RAW, links.SEGMENT_LAYOUT_VERSION)
        except (FileNotFoundError, ValueError, OSError) as exc:
            if not self._warned:
                self._warned = True
                log.warning("link table %s cannot be read (%s): link status falls back on the membership",
                            self.name, exc)
            return None
        try:
            table = links.LinkTable.attach(seg.array())
            rows = table.table.copy()
            del table
        except ValueError as exc:
            log.warning("link table %s: %s", self.name, exc)
            rows = None
        finally:
            with contextlib.suppress(BufferError):
                seg.close()
        if rows is None:
            return None
        return {int(r[links.COL_NODEID]): bool(r[links.COL_CONNECTED]) for r in rows}


def links_from_config(config: object, nodeid: int) -> NodeLinks:
    """``NodeLinks`` from a parsed ``engine.config`` config: addresses resolved as the transport resolves
    them, the MTU the transport allows a Totem frame."""
    from pycorosync.transports.udp.addresses import AddressError, resolve
    from pycorosync.transports.udp.plan import plan_from_config

    totem = config.totem  # type: ignore[attr-defined]
    ip_version = str(totem.ip_version)
    addrs: dict[int, tuple[str, ...]] = {}
    for node in config.nodes:  # type: ignore[attr-defined]
        resolved = []
        for addr in node.addrs:
            try:
                resolved.append(resolve(str(addr), ip_version, f"nodelist node {node.nodeid}")[1])
            except AddressError:
                resolved.append(str(addr))
        addrs[int(node.nodeid)] = tuple(resolved)
    try:
        mtu = int(plan_from_config(config, nodeid).max_frame_bytes)
    except (OSError, ValueError) as exc:
        log.warning("cannot work out the link MTU (%s); reporting totem.netmtu", exc)
        mtu = int(totem.netmtu)
    return NodeLinks(nodeid, str(totem.transport), addrs, mtu)
