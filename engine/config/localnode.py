"""Which nodelist entry is this machine: corosync's find_local_node, without reverse DNS.

Order: the host name equals a node's ``name`` or ``ring0_addr`` (also with domain parts cut off), then a node
address is a local IP literal, then (optionally) a node's name or address resolves to a local IP.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence

from .nodes import NodeEntry

__all__ = ["find_local_node", "local_addresses"]

_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ipv4_local_networks(fib_trie: str) -> list[_IPNetwork]:
    """``host LOCAL`` entries of /proc/net/fib_trie (the whole 127/8 is one of them)."""
    networks: list[_IPNetwork] = []
    last_address: str | None = None
    for raw in fib_trie.splitlines():
        line = raw.strip()
        if line.startswith("|-- "):
            last_address = line[4:]
        elif last_address is not None and line.endswith("host LOCAL") and line.startswith("/"):
            prefix = line.split()[0][1:]
            try:
                networks.append(ipaddress.ip_network(f"{last_address}/{prefix}", strict=False))
            except ValueError:
                continue
    return networks


def local_addresses() -> list[_IPNetwork]:
    """Networks whose addresses this host owns (IPv4 from the kernel's local table, IPv6 per interface)."""
    networks: list[_IPNetwork] = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
    try:
        with open("/proc/net/fib_trie", encoding="ascii", errors="replace") as handle:
            networks += _ipv4_local_networks(handle.read())
    except OSError:
        pass
    try:
        with open("/proc/net/if_inet6", encoding="ascii", errors="replace") as handle:
            for line in handle:
                hex_address = line.split()[0] if line.split() else ""
                if len(hex_address) == 32:
                    text = ":".join(hex_address[i : i + 4] for i in range(0, 32, 4))
                    networks.append(ipaddress.ip_network(f"{text}/128"))
    except (OSError, ValueError):
        pass
    return networks


def _is_local(address: str, networks: Sequence[_IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    return any(ip.version == net.version and ip in net for net in networks)


def _hostname_candidates(hostname: str) -> list[str]:
    names = [hostname]
    while "." in names[-1]:
        names.append(names[-1].rpartition(".")[0])
    return names


def find_local_node(
    nodes: Sequence[NodeEntry],
    hostname: str | None = None,
    addresses: Iterable[str] | None = None,
    resolve: bool = True,
) -> NodeEntry | None:
    """The entry describing this host, or None. ``addresses`` replaces the host's own (tests, containers)."""
    host = socket.gethostname() if hostname is None else hostname
    for candidate in _hostname_candidates(host):
        for node in nodes:
            if candidate and candidate in (node.name, node.addr(0)):
                return node
    networks: list[_IPNetwork]
    if addresses is None:
        networks = local_addresses()
    else:
        networks = [ipaddress.ip_network(a.split("%", 1)[0]) for a in addresses]
    for node in nodes:
        if any(_is_local(address, networks) for address in node.addrs):
            return node
    if not resolve:
        return None
    for node in nodes:
        for name in (node.name, node.addr(0)):
            if not name:
                continue
            try:
                infos = socket.getaddrinfo(name, None, type=socket.SOCK_DGRAM)
            except (OSError, UnicodeError):
                continue
            if any(_is_local(str(info[4][0]), networks) for info in infos):
                return node
    return None
