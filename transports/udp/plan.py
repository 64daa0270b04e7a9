"""What one node's UDP transport needs from corosync.conf, resolved once at start."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

from pycorosync.transports.crypto import CryptoSettings, settings_from_config
from pycorosync.transports.udp.addresses import DEFAULT_MCASTPORT, AddressError, default_mcastaddr, resolve

IPV4_UDP_HEADERS = 28
IPV6_UDP_HEADERS = 48
#: the longest UDP payload the kernel sends: IPv4's 16-bit total length counts its headers, IPv6's payload
#: length only the UDP header (so knet's default netmtu 65536 is capped here)
UDP_MAX_PAYLOAD = {socket.AF_INET: 65535 - IPV4_UDP_HEADERS, socket.AF_INET6: 65535 - 8}
DEFAULT_NETMTU = 1500
DEFAULT_TOKEN_MS = 3000


@dataclass(frozen=True)
class TransportPlan:
    """A node's link: transport kind, its own and its peers' addresses, MTU, crypto."""

    transport: str  # "udpu", "udp", or "iba" (verbs over IPoIB addresses: transports/iba, same frames)
    node_id: int
    nodes: tuple[tuple[int, str], ...]  # (nodeid, ring0 address), every nodelist member
    crypto: CryptoSettings
    mcastport: int = DEFAULT_MCASTPORT
    mcastaddr: str = ""
    ttl: int = 1
    netmtu: int = DEFAULT_NETMTU
    ip_version: str = "ipv6-4"
    token_ms: int = DEFAULT_TOKEN_MS
    family: int = field(default=socket.AF_INET)
    # per-node port (udpu only; not a corosync key): lets tests run several nodes on one address such as ::1
    ports: tuple[tuple[int, int], ...] = ()

    def port_of(self, node_id: int) -> int:
        """The UDP port ``node_id`` listens on: ``mcastport`` unless the plan overrides it."""
        for nid, port in self.ports:
            if nid == node_id:
                return port
        return self.mcastport

    @property
    def node_ids(self) -> list[int]:
        return sorted(n for n, _ in self.nodes)

    @property
    def local_addr(self) -> str:
        for nodeid, addr in self.nodes:
            if nodeid == self.node_id:
                return addr
        raise AddressError(f"node {self.node_id} is not in the nodelist")

    @property
    def max_datagram_bytes(self) -> int:
        """Largest UDP payload ``netmtu`` allows (IP and UDP headers taken off), at most what UDP can carry."""
        v6 = self.family == socket.AF_INET6
        return min(self.netmtu - (IPV6_UDP_HEADERS if v6 else IPV4_UDP_HEADERS),
                   UDP_MAX_PAYLOAD[socket.AF_INET6 if v6 else socket.AF_INET])

    @property
    def max_frame_bytes(self) -> int:
        """Largest Totem frame totem may put in the tx ring: netmtu minus headers and crypto overhead."""
        return self.max_datagram_bytes - self.crypto.overhead

    @property
    def max_large_frame_bytes(self) -> int:
        """Largest Totem frame the transport sends at all. A frame longer than ``max_frame_bytes`` (a commit
        token or join of a large cluster: 45 bytes per node) goes out whole in one UDP datagram and the IP
        layer fragments it, as corosync's udpu does. InfiniBand UD cannot fragment: there it is the frame limit."""
        if self.transport == "iba":
            return self.max_frame_bytes
        return UDP_MAX_PAYLOAD[self.family] - self.crypto.overhead

    @property
    def group(self) -> str:
        return self.mcastaddr or default_mcastaddr(self.crypto.cluster_name, self.family)


def make_plan(
    node_id: int, nodes: list[tuple[int, str]], crypto: CryptoSettings, transport: str = "udpu",
    ip_version: str = "ipv6-4", **kw: Any,
) -> TransportPlan:
    """Resolves every address (one family for the whole link, as corosync requires) and builds the plan."""
    if transport not in ("udpu", "udp", "iba"):
        raise ValueError(f"totem.transport: the plan serves udpu, udp and iba, not '{transport}'")
    if transport == "udp" and ip_version == "ipv6-4":
        ip_version = "ipv4"  # corosync's default for multicast
    resolved = []
    families = set()
    for nid, addr in nodes:
        fam, num = resolve(addr, ip_version, f"nodelist node {nid} ring0_addr")
        families.add(fam)
        resolved.append((int(nid), num))
    if len(families) > 1:
        raise AddressError("nodelist: ring0_addr mixes IPv4 and IPv6 addresses in one link")
    family = families.pop() if families else socket.AF_INET
    if node_id not in {n for n, _ in resolved}:
        raise AddressError(f"No valid name found for local host (node id {node_id} is not in the nodelist)")
    return TransportPlan(transport, node_id, tuple(resolved), crypto, ip_version=ip_version, family=family, **kw)


def plan_from_config(config: Any, node_id: int) -> TransportPlan:
    """Builds the plan from a parsed ``engine.config.CorosyncConfig`` (``.totem``, ``.nodes``).

    ``knet`` is served as udpu on link 0 (ARCHITECTURE.md §5); ``iba`` keeps its name (its nodelist
    addresses are IPoIB addresses, resolved like udpu's, and its frame limit is the same). The authkey is read (and its file mode
    checked) only when crypto is on.
    """
    totem = config.totem
    link = totem.links[0]
    transport = "udpu" if totem.transport == "knet" else str(totem.transport)
    nodes = [(int(n.nodeid), str(n.addrs[0])) for n in config.nodes]
    return make_plan(
        node_id, nodes, settings_from_config(config), transport=transport, ip_version=str(totem.ip_version),
        mcastport=int(link.mcastport), mcastaddr=str(link.mcastaddr or ""), ttl=int(link.ttl),
        netmtu=int(totem.netmtu), token_ms=int(totem.token_ms),
    )
