"""Addresses of a UDP link: nodelist resolution, corosync's default multicast group, raw sockaddr bytes."""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

DEFAULT_MCASTPORT = 5405


class AddressError(ValueError):
    """A nodelist or interface address cannot be used; the message names the node and the value."""


def cluster_id(cluster_name: str) -> int:
    """corosync's 16-bit cluster id: ``value = (value << 1) + c`` over the name's (signed) chars, 32-bit int."""
    value = 0
    for b in cluster_name.encode():
        c = b - 256 if b > 127 else b  # char is signed on the platforms corosync ships for
        value = ((value << 1) + c) & 0xFFFFFFFF
    return value & 0xFFFF


def default_mcastaddr(cluster_name: str, family: int = socket.AF_INET) -> str:
    """The group corosync picks when ``mcastaddr`` is not set: 239.192.x.y or ff15::x (COROSYNC.md §3)."""
    cid = cluster_id(cluster_name)
    if family == socket.AF_INET6:
        return f"ff15::{cid:x}"
    return f"239.192.{cid >> 8}.{cid % 0xFF}"  # corosync divides by 255, not 256: kept for compatibility


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
