"""The UDP sockets of one node: bind rules, multicast membership, buffer sizes, GSO/GRO detection.

corosync's rules: ``udpu`` binds one socket to the local node's ring0 address, port ``mcastport``, and
sends to every member's ring0 address on that port. ``udp`` receives on ``mcastaddr:mcastport`` (group
joined on the local ring0 address's interface) and sends from ``ring0_addr:mcastport-1``; tokens and
other unicasts go to the member's ring0 address, port ``mcastport``, where the receive socket listens too.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
from dataclasses import dataclass, field

from pycorosync.transports.udp.addresses import sockaddr_bytes

log = logging.getLogger("TOTEM")

SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
WANT_RCVBUF_BYTES = 32 << 20
WANT_SNDBUF_BYTES = 8 << 20
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104


@dataclass
class LinkSockets:
    """The sockets of a link and what the kernel granted them."""

    rx: socket.socket
    tx: socket.socket
    family: int
    rcvbuf_bytes: int = 0
    gso: bool = False
    gro: bool = False
    extra: list[socket.socket] = field(default_factory=list)

    def close(self) -> None:
        for s in {id(s): s for s in (self.rx, self.tx, *self.extra)}.values():
            with contextlib.suppress(OSError):
                s.close()


def _set_buffer(sock: socket.socket, force: int, plain: int, want: int) -> int:
    """SO_*BUFFORCE when privileged (root ignores rmem_max), else the plain option; returns the effective size."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, want)
    except OSError:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, plain, want)
    return int(sock.getsockopt(socket.SOL_SOCKET, plain))


def probe_gso(sock: socket.socket) -> bool:
    """True if the kernel accepts UDP_SEGMENT on this socket (Linux >= 4.18)."""
    try:
        sock.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
        return True
    except OSError as exc:
        log.info("UDP GSO not available (%s): one datagram per frame", exc.strerror)
        return False


def enable_gro(sock: socket.socket) -> bool:
    """Asks for UDP_GRO on the receive socket (Linux >= 5.0); False means one datagram per entry."""
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
        return True
    except OSError as exc:
        log.info("UDP GRO not available (%s): one datagram per receive entry", exc.strerror)
        return False


def open_udpu(family: int, bind_addr: str, port: int, use_gso: bool = True, use_gro: bool = True) -> LinkSockets:
    """One socket bound to ``bind_addr:port`` that sends and receives (corosync's udpu)."""
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        s.bind((bind_addr, port))
    except OSError as exc:
        s.close()
        raise OSError(exc.errno, f"cannot bind UDP {bind_addr} port {port}: {exc.strerror}") from None
    link = LinkSockets(rx=s, tx=s, family=family)
    _tune(link, use_gso, use_gro)
    return link


def open_udp_multicast(
    family: int, bind_addr: str, group: str, port: int, ttl: int = 1, loop: bool = True,
    use_gso: bool = True, use_gro: bool = True,
) -> LinkSockets:
    """corosync's udp: a receive socket on ``group:port`` joined on the local interface, and a send socket
    bound to ``bind_addr:port-1``; a third socket on ``bind_addr:port`` takes unicasts (tokens)."""
    rx = socket.socket(family, socket.SOCK_DGRAM)
    tx = socket.socket(family, socket.SOCK_DGRAM)
    uni = socket.socket(family, socket.SOCK_DGRAM)
    link = LinkSockets(rx=rx, tx=tx, family=family, extra=[uni])
    try:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET:
            rx.bind((group, port))
        else:
            # a scoped group (ff02:: link-local, ff12:: ...) binds only with the interface as scope id
            rx.bind((group, port, 0, _ifindex_of(bind_addr)))
        if family == socket.AF_INET:
            mreq = socket.inet_aton(group) + socket.inet_aton(bind_addr)
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(bind_addr))
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(loop))
        else:
            ifindex = _ifindex_of(bind_addr)
            mreq6 = socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", ifindex)
            rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq6)
            tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
            tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
            tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, int(loop))
        tx.bind((bind_addr, port - 1))
        uni.bind((bind_addr, port))
    except OSError as exc:
        link.close()
        raise OSError(exc.errno, f"cannot set up multicast {group} port {port} on {bind_addr}: {exc.strerror}") from None
    _tune(link, use_gso, use_gro)
    with contextlib.suppress(OSError):
        enable_gro(uni) if link.gro else None
        _set_buffer(uni, SO_RCVBUFFORCE, socket.SO_RCVBUF, WANT_RCVBUF_BYTES)
    return link


def _ifindex_of(addr: str) -> int:
    """Interface index holding ``addr`` (IPv6 multicast needs it); 0 lets the kernel choose."""
    if "%" in addr:
        with contextlib.suppress(OSError):
            return socket.if_nametoindex(addr.split("%", 1)[1])
    if addr in ("::1",):
        with contextlib.suppress(OSError):
            return socket.if_nametoindex("lo")
    try:
        want = socket.inet_pton(socket.AF_INET6, addr).hex()
        with open("/proc/net/if_inet6") as f:  # "<address hex> <ifindex hex> <prefix> <scope> <flags> <name>"
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == want:
                    return int(parts[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def _tune(link: LinkSockets, use_gso: bool, use_gro: bool) -> None:
    link.rcvbuf_bytes = _set_buffer(link.rx, SO_RCVBUFFORCE, socket.SO_RCVBUF, WANT_RCVBUF_BYTES)
    _set_buffer(link.tx, SO_SNDBUFFORCE, socket.SO_SNDBUF, WANT_SNDBUF_BYTES)
    link.gso = use_gso and probe_gso(link.tx)
    link.gro = use_gro and enable_gro(link.rx)


def peer_sockaddr(family: int, addr: str, port: int) -> bytes:
    """Raw sockaddr of a peer (for sendmmsg's msg_name)."""
    if family == socket.AF_INET6:
        info = socket.getaddrinfo(addr, port, socket.AF_INET6, socket.SOCK_DGRAM)[0][4]
        return sockaddr_bytes(info)
    return sockaddr_bytes((addr, port))
