"""Addresses of a UDP link: nodelist resolution, corosync's default multicast group, raw sockaddr bytes."""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

from pycorosync.engine.config.addresses import cluster_mcast_addr

DEFAULT_MCASTPORT = 5405


class AddressError(ValueError):
    """A nodelist or interface address cannot be used; the message names the node and the value."""


def default_mcastaddr(cluster_name: str, family: int = socket.AF_INET) -> str:
    """The group corosync picks when ``mcastaddr`` is not set: 239.192.x.y or ff15::x (COROSYNC.md §3)."""
    return cluster_mcast_addr(cluster_name, 0, family == socket.AF_INET6)


def _family_order(ip_version: str) -> list[int]:
    return {
        "ipv4": [socket.AF_INET],
        "ipv6": [socket.AF_INET6],
        "ipv4-6": [socket.AF_INET, socket.AF_INET6],
        "ipv6-4": [socket.AF_INET6, socket.AF_INET],
    }.get(ip_version, [socket.AF_INET6, socket.AF_INET])


def resolve(addr: str, ip_version: str, where: str) -> tuple[int, str]:
    """(family, numeric address) of an IP literal or a host name, honouring ``totem.ip_version``."""
    addr = addr.strip()
    try:
        ip = ipaddress.ip_address(addr.split("%")[0])
        return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), addr
    except ValueError:
        pass
    for family in _family_order(ip_version):
        try:
            infos = socket.getaddrinfo(addr, None, family, socket.SOCK_DGRAM)
        except OSError:
            continue
        if infos:
            return family, str(infos[0][4][0])
    raise AddressError(f"{where}: cannot resolve '{addr}' for ip_version {ip_version}")


def sockaddr_bytes(sockaddr: tuple[Any, ...]) -> bytes:
    """The raw ``struct sockaddr_in``/``sockaddr_in6`` of a Python socket address tuple."""
    host, port = sockaddr[0], int(sockaddr[1])
    ip = ipaddress.ip_address(str(host).split("%")[0])
    if ip.version == 4:
        return struct.pack("<H", socket.AF_INET) + struct.pack("!H", port) + ip.packed + bytes(8)
    flowinfo = int(sockaddr[2]) if len(sockaddr) > 2 else 0
    scope = int(sockaddr[3]) if len(sockaddr) > 3 else 0
    return (
        struct.pack("<H", socket.AF_INET6) + struct.pack("!H", port) + struct.pack("!I", flowinfo) + ip.packed
        + struct.pack("<I", scope)
    )


def is_multicast(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr.split("%")[0]).is_multicast
    except ValueError:
        return False
