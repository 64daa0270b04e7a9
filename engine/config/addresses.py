"""Addresses in corosync.conf: literal IPs are checked at once, host names are kept for later resolution."""

from __future__ import annotations

import ipaddress
import re
import socket

__all__ = [
    "HOSTNAME",
    "address_family",
    "cluster_mcast_addr",
    "derive_nodeid",
    "is_multicast",
    "address_identity",
]

HOSTNAME = 0  # address_family() of a name that is not an IP literal

_HOST_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?")
_DIGITS_AND_DOTS = re.compile(r"[0-9.]+")


def address_family(text: str) -> int | None:
    """4 or 6 for an IP literal (IPv6 may carry a ``%scope``), HOSTNAME for a plausible name, None if neither."""
    if ":" in text:
        try:
            ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError:
            return None
        return 6
    if _DIGITS_AND_DOTS.fullmatch(text):
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            return None
        return 4
    return HOSTNAME if _HOST_RE.fullmatch(text) else None


def address_identity(text: str) -> str:
    """A form equal for two nodelist addresses naming the same endpoint (IPs by value, names case-insensitively)."""
    try:
        return str(ipaddress.ip_address(text.split("%", 1)[0]))
    except ValueError:
        return text.lower()


def is_multicast(text: str) -> bool:
    """True for an IPv4 or IPv6 multicast literal."""
    try:
        return ipaddress.ip_address(text.split("%", 1)[0]).is_multicast
    except ValueError:
        return False


def derive_nodeid(ring0_addr: str, clear_node_high_bit: bool) -> int | None:
    """udp/udpu node id from the ring0 IPv4 address (big-endian u32), as corosync's generate_nodeid.

    A host name is resolved (IPv4 only, like corosync); None when there is no IPv4 address to use.
    """
    family = address_family(ring0_addr)
    if family == 6 or family is None:
        return None
    if family == 4:
        packed = ipaddress.IPv4Address(ring0_addr).packed
    else:
        try:
            infos = socket.getaddrinfo(ring0_addr, None, socket.AF_INET, socket.SOCK_DGRAM)
        except (OSError, UnicodeError):
            return None
        if not infos:
            return None
        packed = ipaddress.IPv4Address(str(infos[0][4][0])).packed
    nodeid = int.from_bytes(packed, "big")
    if clear_node_high_bit:
        nodeid &= 0x7FFFFFFF
    return nodeid


def cluster_mcast_addr(cluster_name: str, linknumber: int, ipv6: bool) -> str:
    """The multicast address corosync derives from ``cluster_name`` (udp without ``mcastaddr``).

    Kept bit-for-bit, including corosync's ``% 0xFF`` for the last IPv4 byte.
    """
    value = 0
    for byte in cluster_name.encode("utf-8", "surrogateescape"):
        # C adds a (signed) char: bytes >= 0x80 count as negative
        value = (value << 1) + (byte - 256 if byte >= 0x80 else byte)
    clusterid = ((value & 0xFFFF) + linknumber) & 0xFFFF
    if ipv6:
        return f"ff15::{clusterid:x}"
    return f"239.192.{clusterid >> 8}.{clusterid % 0xFF}"
