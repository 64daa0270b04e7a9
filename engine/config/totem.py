"""Totem settings in force: defaults, derived timers (corosync's totemconfig.c) and their validation.

The results are the frozen ``TotemConfig`` the runtime and transports read, and the ``runtime.config.totem.*``
keys corosync publishes in cmap.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .addresses import HOSTNAME, address_family, cluster_mcast_addr, is_multicast
from .errors import ConfigError
from .nodes import NodeEntry
from .schema import FlatConfig
from .types import Value, ValueType

__all__ = [
    "DEFAULT_PORT",
    "KNET_NETMTU",
    "TRANSPORTS",
    "UDP_NETMTU",
    "LinkConfig",
    "TotemConfig",
    "build_totem",
]

TRANSPORTS = ("udpu", "udp", "knet", "iba")
LINK_MODES = ("passive", "active", "rr")
HZ = 100
MINIMUM_TIMEOUT = (1000 // HZ) * 3  # 30 ms
MINIMUM_TIMEOUT_HOLD = int(MINIMUM_TIMEOUT * 0.8 - 1000 / HZ)  # 14 ms
DEFAULT_PORT = 5405
UDP_NETMTU = 1500
KNET_NETMTU = 65536
KNET_PONG_COUNT = 2
KNET_PING_PRECISION = 2048
TOTEM_PRIVATE_KEY_LEN_MIN = 128
TOTEM_PRIVATE_KEY_LEN_MAX = 4096
TOKEN_MAX = 2**32 - 1

# (key, default, zero allowed): corosync replaces a configured 0 by the default unless zero means "off"
_VOLATILE: tuple[tuple[str, int, bool], ...] = (
    ("token_retransmits_before_loss_const", 4, False),
    ("token", 3000, False),
    ("token_warning", 75, True),
    ("max_network_delay", 50, False),
    ("window_size", 50, False),
    ("max_messages", 17, False),
    ("miss_count_const", 5, False),
    ("knet_pmtud_interval", 30, False),
    ("knet_mtu", 0, True),
    ("join", 50, False),
    ("merge", 200, False),
    ("downcheck", 1000, False),
    ("fail_recv_const", 2500, False),
    ("seqno_unchanged_const", 30, False),
    ("send_join", 0, True),
    ("heartbeat_failures_allowed", 0, True),
    ("knet_compression_threshold", 0, True),
)


@dataclass(frozen=True)
class LinkConfig:
    """One link (``totem.interface.<linknumber>`` and/or ``ring<linknumber>_addr``) with defaults applied."""

    linknumber: int
    mcastport: int
    mcastaddr: str | None = None
    bindnetaddr: str | None = None
    broadcast: bool = False
    ttl: int = 1
    knet_link_priority: int = 1
    knet_ping_interval_ms: int = 0
    knet_ping_timeout_ms: int = 0
    knet_ping_precision: int = KNET_PING_PRECISION
    knet_pong_count: int = KNET_PONG_COUNT
    knet_transport: str = "udp"


@dataclass(frozen=True)
class TotemConfig:
    """Totem settings in force. Timers in ms, already effective (``token_ms`` includes the coefficient)."""

    version: int
    cluster_name: str | None
    transport: str
    ip_version: str
    link_mode: str
    config_version: int
    links: tuple[LinkConfig, ...]
    netmtu: int
    token_ms: int
    token_configured_ms: int
    token_coefficient_ms: int
    token_retransmit_ms: int
    hold_ms: int
    token_retransmits_before_loss_const: int
    token_warning: int
    join_ms: int
    send_join_ms: int
    consensus_ms: int
    merge_ms: int
    downcheck_ms: int
    fail_recv_const: int
    seqno_unchanged_const: int
    miss_count_const: int
    max_network_delay_ms: int
    heartbeat_failures_allowed: int
    window_size: int
    max_messages: int
    block_unlisted_ips: bool
    cancel_token_hold_on_retransmit: bool
    clear_node_high_bit: bool
    crypto_model: str
    crypto_cipher: str
    crypto_hash: str
    keyfile: str | None
    key: str | None
    ip_dscp: int | None
    knet_pmtud_interval_s: int
    knet_mtu: int
    knet_compression_model: str
    knet_compression_threshold: int
    knet_compression_level: int
    threads: int

    @property
    def mcastport(self) -> int:
        """Port of the lowest link (udp receives there, sends from port - 1; knet uses port + linknumber)."""
        return self.links[0].mcastport

    @property
    def crypto_enabled(self) -> bool:
        """True if frames are encrypted or authenticated (a key is needed)."""
        return self.crypto_cipher != "none" or self.crypto_hash != "none"

    @property
    def token_warning_ms(self) -> int:
        """Log "Token has not been received in N ms" after this long (0 = warnings off)."""
        return self.token_warning * self.token_ms // 100

    @property
    def heartbeat_timeout_ms(self) -> int:
        """totemsrp's heartbeat timeout, 0 when off (not configured, or not below the token timeout)."""
        if not self.heartbeat_failures_allowed:
            return 0
        timeout = self.heartbeat_failures_allowed * self.token_retransmit_ms + self.max_network_delay_ms
        return timeout if timeout < self.token_ms else 0

    def link(self, linknumber: int) -> LinkConfig | None:
        """The link with this number, or None."""
        for link in self.links:
            if link.linknumber == linknumber:
                return link
        return None


def _float32(value: float) -> float:
    # corosync computes consensus as (int)(float)(1.2 * token)
    result: float = struct.unpack("f", struct.pack("f", value))[0]
    return result


class _TotemReader:
    def __init__(self, flat: FlatConfig, filename: str) -> None:
        self.flat = flat
        self.filename = filename

    def get(self, key: str, default: Value | None = None) -> Value | None:
        entry = self.flat.keys.get(key)
        return entry[1] if entry is not None else default

    def optional_text(self, key: str) -> str | None:
        value = self.get(key)
        return None if value is None else str(value)

    def text(self, key: str, default: str) -> str:
        return str(self.get(key, default))

    def number(self, key: str, default: int, zero_allowed: bool = True) -> int:
        value = self.get(key)
        if value is None or (not zero_allowed and int(value) == 0):
            return default
        return int(value)

    def error(self, reason: str, key: str) -> ConfigError:
        return ConfigError(reason, self.filename, self.flat.line_of(key), key)


def read_transport(flat: FlatConfig, filename: str) -> tuple[str, str, bool]:
    """``(transport, ip_version, clear_node_high_bit)``: needed before the nodelist can be read."""
    reader = _TotemReader(flat, filename)
    transport = reader.text("totem.transport", "udpu")
    if transport not in TRANSPORTS:
        raise reader.error(f"Invalid transport type '{transport}'. Should be udpu, udp, knet or iba", "totem.transport")
    ip_version = reader.text("totem.ip_version", "ipv4" if transport == "udp" else "ipv6-4")
    return transport, ip_version, reader.text("totem.clear_node_high_bit", "no") == "yes"


def build_totem(
    flat: FlatConfig, nodes: list[NodeEntry], filename: str
) -> tuple[TotemConfig, dict[str, tuple[ValueType, Value]]]:
    """Validate the totem section against the nodelist; return the settings and the ``runtime.config.*`` keys.

    For udp, the generated ``totem.interface.<n>.mcastaddr``/``mcastport`` are written back into ``flat``
    (as corosync does).
    """
    reader = _TotemReader(flat, filename)
    transport, ip_version, clear_high_bit = read_transport(flat, filename)
    version = reader.number("totem.version", 0)
    if version != 2:
        raise reader.error("This totem parser can only parse version 2 configurations.", "totem.version")
    link_mode = reader.text("totem.link_mode", "passive")
    if link_mode not in LINK_MODES:
        raise reader.error(
            f'The Knet link mode "{link_mode}" specified is invalid.  It must be active, passive or rr.',
            "totem.link_mode",
        )
    cipher, hash_name, model = _crypto(reader)
    flat.warnings.extend(_ignored_settings(flat, bool(nodes)))

    values = {name: reader.number(f"totem.{name}", default, zero) for name, default, zero in _VOLATILE}
    configured_token = values["token"]
    coefficient = reader.number("totem.token_coefficient", 650)
    token = configured_token
    if len(nodes) > 2:
        token += (len(nodes) - 2) * coefficient
    if token > TOKEN_MAX:
        raise reader.error(
            f"The effective token timeout ({configured_token} ms + {len(nodes) - 2} x {coefficient} ms) is too large",
            "totem.token_coefficient",
        )
    values["token"] = token
    values["token_retransmit"] = reader.number(
        "totem.token_retransmit", int(token / (values["token_retransmits_before_loss_const"] + 0.2)), False
    )
    values["hold"] = reader.number("totem.hold", int(values["token_retransmit"] * 0.8 - 1000 / HZ), False)
    values["consensus"] = reader.number("totem.consensus", int(_float32(1.2 * token)), False)
    _validate_timers(reader, values)

    links = _links(reader, nodes, transport, token)
    netmtu = reader.number("totem.netmtu", 0)
    if not netmtu:
        netmtu = KNET_NETMTU if transport == "knet" else UDP_NETMTU
    _check_frame_room(reader, nodes, transport, netmtu, ip_version, cipher, hash_name)
    dscp = reader.get("totem.ip_dscp")
    totem = TotemConfig(
        version=version,
        cluster_name=reader.optional_text("totem.cluster_name"),
        transport=transport,
        ip_version=ip_version,
        link_mode=link_mode,
        config_version=reader.number("totem.config_version", 0),
        links=links,
        netmtu=netmtu,
        token_ms=token,
        token_configured_ms=configured_token,
        token_coefficient_ms=coefficient,
        token_retransmit_ms=values["token_retransmit"],
        hold_ms=values["hold"],
        token_retransmits_before_loss_const=values["token_retransmits_before_loss_const"],
        token_warning=values["token_warning"],
        join_ms=values["join"],
        send_join_ms=values["send_join"],
        consensus_ms=values["consensus"],
        merge_ms=values["merge"],
        downcheck_ms=values["downcheck"],
        fail_recv_const=values["fail_recv_const"],
        seqno_unchanged_const=values["seqno_unchanged_const"],
        miss_count_const=values["miss_count_const"],
        max_network_delay_ms=values["max_network_delay"],
        heartbeat_failures_allowed=values["heartbeat_failures_allowed"],
        window_size=values["window_size"],
        max_messages=values["max_messages"],
        block_unlisted_ips=reader.text("totem.block_unlisted_ips", "yes") == "yes",
        cancel_token_hold_on_retransmit=reader.text("totem.cancel_token_hold_on_retransmit", "no") == "yes",
        clear_node_high_bit=clear_high_bit,
        crypto_model=model,
        crypto_cipher=cipher,
        crypto_hash=hash_name,
        keyfile=reader.optional_text("totem.keyfile"),
        key=reader.optional_text("totem.key"),
        ip_dscp=None if dscp is None else int(dscp),
        knet_pmtud_interval_s=values["knet_pmtud_interval"],
        knet_mtu=values["knet_mtu"],
        knet_compression_model=reader.text("totem.knet_compression_model", "none"),
        knet_compression_threshold=values["knet_compression_threshold"],
        knet_compression_level=reader.number("totem.knet_compression_level", 0),
        threads=reader.number("totem.threads", 0),
    )
    return totem, _runtime_keys(totem, values)


def _check_frame_room(
    reader: _TotemReader, nodes: list[NodeEntry], transport: str, netmtu: int, ip_version: str, cipher: str,
    hash_name: str,
) -> None:
    """A frame must hold a token with a full retransmit list, and the commit token (one entry per node) must
    go out at all: over UDP a control frame longer than netmtu is sent whole and fragmented by IP, up to
    UDP's largest datagram; InfiniBand cannot fragment, so there it must fit one frame. A transport drops
    a longer frame, and the ring could then never form. IPv6 headers are assumed unless every address is IPv4."""
    from pycorosync.engine.totem.config import MIN_FRAME_BYTES
    from pycorosync.engine.totem.wire import COMMIT_BODY, COMMIT_ENTRY, HEADER
    from pycorosync.transports.crypto import CryptoSettings
    from pycorosync.transports.udp.plan import IPV4_UDP_HEADERS, IPV6_UDP_HEADERS

    ipv4 = ip_version == "ipv4" or (bool(nodes) and all(address_family(a) == 4 for n in nodes for a in n.addrs))
    overhead = CryptoSettings(cipher, hash_name, "", b"").overhead
    room = netmtu - (IPV4_UDP_HEADERS if ipv4 else IPV6_UDP_HEADERS) - overhead
    key = "totem.netmtu" if reader.get("totem.netmtu") is not None else "totem.transport"
    where = f"with netmtu {netmtu} (crypto_cipher {cipher}, crypto_hash {hash_name})"
    if room < MIN_FRAME_BYTES:
        raise reader.error(f"{max(0, room)} bytes per frame {where}: at least {MIN_FRAME_BYTES} are needed; set "
                           f"totem.netmtu to at least {netmtu + MIN_FRAME_BYTES - room}", key)
    fixed = HEADER.size + COMMIT_BODY.size
    need = fixed + len(nodes) * COMMIT_ENTRY.size
    if transport == "iba" and need > room:
        raise reader.error(
            f"{len(nodes)} nodes need a commit token of {need} bytes, more than the {room} bytes one frame carries "
            f"{where}, and InfiniBand cannot fragment a frame: at most {(room - fixed) // COMMIT_ENTRY.size} nodes "
            f"fit; set totem.netmtu to at least {netmtu + need - room}",
            key,
        )
    # over UDP the largest commit token (384 nodes, the nodelist limit: 17,314 bytes) fits one datagram


def _ignored_settings(flat: FlatConfig, have_nodelist: bool) -> list[str]:
    """corosync's start-up warnings for settings it accepts but does not use."""
    interface_keys = [key for key in flat.lines if key.startswith("totem.interface.")]
    warnings: list[str] = []
    if have_nodelist and "totem.nodeid" in flat.keys:
        warnings.append("nodeid appears both in totem section and nodelist. Nodelist one is used.")
    if have_nodelist and any(key.endswith(".bindnetaddr") for key in interface_keys):
        warnings.append(
            "interface section bindnetaddr is used together with nodelist. Nodelist one is going to be used."
        )
    if any(".member." in key for key in interface_keys):
        warnings.append(
            "member section is used together with nodelist. Members ignored."
            if have_nodelist
            else "member section is deprecated."
        )
    return warnings


def _crypto(reader: _TotemReader) -> tuple[str, str, str]:
    cipher, hash_name = "none", "none"
    if reader.get("totem.secauth") == "on":
        cipher, hash_name = "aes256", "sha256"
    cipher = reader.text("totem.crypto_cipher", cipher)
    hash_name = reader.text("totem.crypto_hash", hash_name)
    if cipher != "none" and hash_name == "none":
        raise reader.error("crypto_cipher requires crypto_hash with value other than none", "totem.crypto_cipher")
    key = reader.get("totem.key")
    if (cipher != "none" or hash_name != "none") and key is not None and reader.get("totem.keyfile") is None:
        length = len(str(key).encode("utf-8", "surrogateescape"))
        if length < TOTEM_PRIVATE_KEY_LEN_MIN:
            raise reader.error("key is too short", "totem.key")
        if length > TOTEM_PRIVATE_KEY_LEN_MAX:
            raise reader.error("key is too long", "totem.key")
    # pycorosync encrypts in its own transport, so crypto is accepted on udp/udpu/iba too
    return cipher, hash_name, reader.text("totem.crypto_model", "nss")


def _validate_timers(reader: _TotemReader, values: dict[str, int]) -> None:
    minimums = (
        ("max_network_delay", "The max_network_delay parameter", MINIMUM_TIMEOUT),
        ("token", "The token timeout parameter", MINIMUM_TIMEOUT),
    )
    for name, label, minimum in minimums:
        if values[name] < minimum:
            raise reader.error(f"{label} ({values[name]} ms) may not be less than ({minimum} ms).", f"totem.{name}")
    if values["token_warning"] > 100:
        raise reader.error(
            f"The token warning parameter ({values['token_warning']}%) must be between 0 (disabled) and 100.",
            "totem.token_warning",
        )
    if values["token_retransmit"] < MINIMUM_TIMEOUT:
        if reader.get("totem.token_retransmit") is not None:
            raise reader.error(
                f"The token retransmit timeout parameter ({values['token_retransmit']} ms) may not be less than "
                f"({MINIMUM_TIMEOUT} ms).",
                "totem.token_retransmit",
            )
        raise reader.error(
            "Not appropriate token or token_retransmits_before_loss_const value set",
            "totem.token_retransmits_before_loss_const",
        )
    checks = (
        ("hold", "The token hold timeout parameter", MINIMUM_TIMEOUT_HOLD),
        ("join", "The join timeout parameter", MINIMUM_TIMEOUT),
        ("consensus", "The consensus timeout parameter", MINIMUM_TIMEOUT),
    )
    for name, label, minimum in checks:
        if values[name] < minimum:
            raise reader.error(f"{label} ({values[name]} ms) may not be less than ({minimum} ms).", f"totem.{name}")
    if values["consensus"] < values["join"]:
        raise reader.error(
            f"The consensus timeout parameter ({values['consensus']} ms) may not be less than join timeout "
            f"({values['join']} ms).",
            "totem.consensus",
        )
    for name, label in (("merge", "The merge timeout parameter"), ("downcheck", "The downcheck timeout parameter")):
        if values[name] < MINIMUM_TIMEOUT:
            raise reader.error(
                f"{label} ({values[name]} ms) may not be less than ({MINIMUM_TIMEOUT} ms).", f"totem.{name}"
            )


def _links(reader: _TotemReader, nodes: list[NodeEntry], transport: str, token: int) -> tuple[LinkConfig, ...]:
    flat = reader.flat
    numbers = {link for node in nodes for link in node.links}
    numbers |= {int(key.split(".")[2]) for key in flat.section_lines if key.startswith("totem.interface.")}
    if not numbers:
        raise reader.error("No interfaces defined", "totem")
    for number in sorted(numbers):
        if nodes and not any(number in node.links for node in nodes):
            raise reader.error(
                f"Not all nodes have the same number of links (link {number} is configured but no node has "
                f"ring{number}_addr)",
                f"totem.interface.{number}",
            )
    if transport != "knet" and len(numbers) > 1:
        culprit = f"totem.interface.{max(numbers)}"
        if culprit not in flat.section_lines:
            culprit = next(f"nodelist.node.{n.pos}.ring{max(numbers)}_addr" for n in nodes if max(numbers) in n.links)
        raise reader.error(f"{len(numbers)} is too many configured interfaces for non-Knet transport.", culprit)
    links: list[LinkConfig] = []
    for number in sorted(numbers):
        prefix = f"totem.interface.{number}."
        broadcast = reader.text(prefix + "broadcast", "no") == "yes"
        port = reader.number(prefix + "mcastport", DEFAULT_PORT + (2 * number if broadcast else number))
        if port == 0:
            raise reader.error("No multicast port specified", prefix + "mcastport")
        ttl = reader.number(prefix + "ttl", 1)
        if transport != "udp" and ttl != 1:
            raise reader.error("Can only set ttl on multicast transport types", prefix + "ttl")
        priority = reader.number(prefix + "knet_link_priority", 1)
        if transport != "knet" and priority != 1:
            raise reader.error("Can only set link priority on knet transport type", prefix + "knet_link_priority")
        bindnet = reader.optional_text(prefix + "bindnetaddr")
        if bindnet is not None and address_family(str(bindnet)) is None:
            raise reader.error(f"failed to parse bindnet address '{bindnet}'", prefix + "bindnetaddr")
        mcast = reader.optional_text(prefix + "mcastaddr")
        if transport == "udp":
            mcast = _udp_mcast(reader, number, broadcast, bindnet, mcast, nodes)
            if reader.get(prefix + "mcastaddr") is None and not broadcast:
                flat.keys[prefix + "mcastaddr"] = (ValueType.STRING, str(mcast))
            if reader.get(prefix + "mcastport") is None:
                flat.keys[prefix + "mcastport"] = (ValueType.UINT16, port)
        elif mcast is not None and address_family(mcast) is None:
            raise reader.error(f"failed to parse mcast address '{mcast}'", prefix + "mcastaddr")
        pong = reader.number(prefix + "knet_pong_count", KNET_PONG_COUNT, zero_allowed=False)
        links.append(
            LinkConfig(
                linknumber=number,
                mcastport=port,
                mcastaddr=mcast,
                bindnetaddr=bindnet,
                broadcast=broadcast,
                ttl=ttl,
                knet_link_priority=priority,
                knet_ping_interval_ms=reader.number(prefix + "knet_ping_interval", token // (pong * 2), False),
                knet_ping_timeout_ms=reader.number(prefix + "knet_ping_timeout", token // pong, False),
                knet_ping_precision=reader.number(prefix + "knet_ping_precision", KNET_PING_PRECISION, False),
                knet_pong_count=pong,
                knet_transport=reader.text(prefix + "knet_transport", "udp"),
            )
        )
    return tuple(links)


def _udp_mcast(
    reader: _TotemReader, number: int, broadcast: bool, bindnet: str | None, mcast: str | None, nodes: list[NodeEntry]
) -> str:
    """The multicast group of a udp link: configured (and checked) or derived from cluster_name."""
    prefix = f"totem.interface.{number}."
    if broadcast:
        return "255.255.255.255"
    bind_family = address_family(bindnet) if bindnet is not None else None
    if mcast is None:
        cluster_name = reader.get("totem.cluster_name")
        if cluster_name is None:
            raise reader.error("No multicast address specified", prefix + "mcastaddr")
        families = {address_family(a) for node in nodes for a in node.addrs}
        ipv6 = bind_family == 6 or (bind_family in (None, HOSTNAME) and families == {6})
        return cluster_mcast_addr(str(cluster_name), number, ipv6)
    text = mcast
    family = address_family(text)
    if family is None or family == HOSTNAME:
        raise reader.error(f"failed to parse mcast address '{text}'", prefix + "mcastaddr")
    if bind_family in (4, 6) and bind_family != family:
        raise reader.error("Multicast address family does not match bind address family", prefix + "mcastaddr")
    if not is_multicast(text):
        raise reader.error("mcastaddr is not a correct multicast address.", prefix + "mcastaddr")
    return text


# runtime.config.totem.* as corosync 3.1 publishes them (u32 unless noted)
_RUNTIME_U32 = (
    "block_unlisted_ips", "cancel_token_hold_on_retransmit", "consensus", "downcheck", "fail_recv_const",
    "heartbeat_failures_allowed", "hold", "join", "knet_compression_threshold", "knet_mtu", "knet_pmtud_interval",
    "max_messages", "max_network_delay", "merge", "miss_count_const", "send_join", "seqno_unchanged_const", "token",
    "token_retransmit", "token_retransmits_before_loss_const", "token_warning", "window_size",
)  # fmt: skip


def _runtime_keys(totem: TotemConfig, values: dict[str, int]) -> dict[str, tuple[ValueType, Value]]:
    numbers = dict(values)
    numbers["block_unlisted_ips"] = int(totem.block_unlisted_ips)
    numbers["cancel_token_hold_on_retransmit"] = int(totem.cancel_token_hold_on_retransmit)
    prefix = "runtime.config.totem."
    keys: dict[str, tuple[ValueType, Value]] = {
        prefix + name: (ValueType.UINT32, numbers[name]) for name in _RUNTIME_U32
    }
    keys[prefix + "knet_compression_level"] = (ValueType.INT32, totem.knet_compression_level)
    keys[prefix + "knet_compression_model"] = (ValueType.STRING, totem.knet_compression_model)
    for link in totem.links:
        interface = f"{prefix}interface.{link.linknumber}."
        keys[interface + "knet_ping_interval"] = (ValueType.UINT32, link.knet_ping_interval_ms)
        keys[interface + "knet_ping_timeout"] = (ValueType.UINT32, link.knet_ping_timeout_ms)
    return keys
