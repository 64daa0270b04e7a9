"""Which sections and keys corosync.conf may hold, their cmap types, and the flattening into dotted keys.

Mirrors coroparse's main_config_parser_cb: numeric keys become typed cmap values, everything else a string;
``interface`` sections are keyed by ``linknumber``, ``node`` sections by position, ``logger_subsys`` by
``subsys``, ``uidgid`` items become ``uidgid.config.uid.<n>``. Unlike corosync, an unknown section or key is
an error: a typo must never be ignored.
"""

from __future__ import annotations

import grp
import pwd
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import ConfigError
from .grammar import Item, Section
from .types import INTEGER_RANGES, Value, ValueType, check_range, parse_int

__all__ = ["INTERFACE_MAX", "LOGGER_SUBSYSTEMS", "FlatConfig", "Spec", "flatten", "flatten_uidgid_only"]

INTERFACE_MAX = 8

LOGGER_SUBSYSTEMS = (
    "TOTEM", "KNET", "MAIN", "SYNC", "CPG", "CMAP", "CFG", "QUORUM", "VOTEQ", "SERV", "QB", "STATS", "MON", "WD",
)  # fmt: skip


@dataclass(frozen=True)
class Spec:
    """How one key's value is read: its cmap type, a unit for messages, allowed words for strings."""

    vtype: ValueType
    unit: str = ""
    choices: tuple[str, ...] = ()
    invalid: str = ""  # corosync's own message for a word outside ``choices``
    convert: Callable[[str], Value] | None = None  # custom reader: raises ValueError(reason)


def _u32(unit: str = "") -> Spec:
    return Spec(ValueType.UINT32, unit)


def _words(*choices: str, invalid: str = "") -> Spec:
    return Spec(ValueType.STRING, choices=choices, invalid=invalid)


STR = Spec(ValueType.STRING)
U8 = Spec(ValueType.UINT8)
U16 = Spec(ValueType.UINT16)
U32 = _u32()
MS = _u32("ms")
U64 = Spec(ValueType.UINT64)
YES_NO = _words("yes", "no")
ON_OFF = _words("on", "off")

_DSCP_NAMES = {f"cs{i}": i * 8 for i in range(8)} | {"ef": 46}
_DSCP_NAMES |= {f"af{c}{p}": c * 8 + p * 2 for c in range(1, 5) for p in range(1, 4)}


def _ip_dscp(text: str) -> Value:
    number = parse_int(text)
    if number is None:
        number = _DSCP_NAMES.get(text.lower())
    if number is None or not 0 <= number <= 63:
        raise ValueError("must be 0..63 or one of cs0..cs7, af11..af43, ef")
    return number


def _priority(text: str) -> Value:
    number = parse_int(text)
    if text in ("max", "min") or (number is not None and -20 <= number <= 19):
        return text
    raise ValueError("must be max, min or a nice level -20..19")


def _tie_breaker_node(text: str) -> Value:
    if text in ("lowest", "highest"):
        return text
    ids = text.split()
    if ids and all(parse_int(i) is not None and 0 < int(i) < 2**32 for i in ids):
        return text
    raise ValueError("must be lowest, highest or a list of node ids")


def _address_port(text: str) -> Value:
    if text == "off":
        return text
    host, sep, port = text.rpartition(":")
    number = parse_int(port)
    if not sep or not host or number is None or not 0 < number < 65536:
        raise ValueError("must be off or ADDRESS:PORT (e.g. 127.0.0.1:9405)")
    return text


TOTEM_KEYS: dict[str, Spec] = {
    "version": U32,
    "nodeid": U32,
    "threads": U32,
    "token": MS,
    "token_coefficient": MS,
    "token_retransmit": MS,
    "token_warning": _u32("percent"),
    "hold": MS,
    "token_retransmits_before_loss_const": U32,
    "join": MS,
    "send_join": MS,
    "consensus": MS,
    "merge": MS,
    "downcheck": MS,
    "fail_recv_const": U32,
    "seqno_unchanged_const": U32,
    "seqno_unchanged_ms": MS,  # pycorosync: also hold the token of a ring idle this long (0 = count only)
    "heartbeat_failures_allowed": U32,
    "max_network_delay": MS,
    "window_size": U32,
    "max_messages": U32,
    "miss_count_const": U32,
    "knet_pmtud_interval": _u32("s"),
    "knet_mtu": _u32("bytes"),
    "knet_compression_threshold": _u32("bytes"),
    "knet_compression_level": Spec(ValueType.INT32),
    "knet_compression_model": _words("none", "zlib", "lz4", "lz4hc", "lzo2", "lzma", "bzip2", "zstd"),
    "netmtu": _u32("bytes"),
    "config_version": U64,
    "cluster_name": STR,
    "transport": STR,  # checked with the whole picture (model.py): corosync's message names all transports
    "link_mode": STR,  # likewise
    "ip_version": _words("ipv4", "ipv6", "ipv4-6", "ipv6-4", invalid="Invalid ip_version type"),
    "ip_dscp": Spec(ValueType.UINT8, convert=_ip_dscp),
    "crypto_model": _words("nss", "openssl", invalid="Invalid crypto model. Should be nss or openssl"),
    "crypto_cipher": _words("none", "aes256", "aes192", "aes128", invalid="Invalid cipher type"),
    "crypto_hash": _words("none", "md5", "sha1", "sha256", "sha384", "sha512", invalid="Invalid hash type"),
    "crypto_type": _words("nss", "aes256", "aes192", "aes128", invalid="Invalid crypto type"),
    "secauth": ON_OFF,
    "keyfile": STR,
    "key": STR,
    "clear_node_high_bit": YES_NO,
    "block_unlisted_ips": YES_NO,
    "cancel_token_hold_on_retransmit": YES_NO,
    "vsftype": STR,
}

INTERFACE_KEYS: dict[str, Spec] = {
    "bindnetaddr": STR,
    "mcastaddr": STR,
    "broadcast": YES_NO,
    "mcastport": U16,
    "ttl": U8,
    "knet_link_priority": U8,
    "knet_ping_interval": MS,
    "knet_ping_timeout": MS,
    "knet_ping_precision": U32,
    "knet_pong_count": U32,
    "knet_transport": _words("udp", "sctp", invalid="Unrecognised knet_transport. expected 'udp' or 'sctp'"),
}

NODE_KEYS: dict[str, Spec] = {"name": STR, "nodeid": U32, "quorum_votes": U32}
RING_ADDR = re.compile(r"ring([0-9]+)_addr")

QUORUM_KEYS: dict[str, Spec] = {
    "provider": STR,
    "expected_votes": U32,
    "votes": U32,
    "last_man_standing_window": MS,
    "leaving_timeout": MS,
    "two_node": U8,
    "expected_votes_tracking": U8,
    "allow_downscale": U8,
    "wait_for_all": U8,
    "auto_tie_breaker": U8,
    "last_man_standing": U8,
    "auto_tie_breaker_node": Spec(ValueType.STRING, convert=_tie_breaker_node),
}
DEVICE_KEYS: dict[str, Spec] = {"model": STR, "votes": U32, "timeout": MS, "sync_timeout": MS, "master_wins": U8}
HEURISTICS_KEYS: dict[str, Spec] = {
    "mode": _words("on", "sync", "off"),
    "timeout": MS,
    "sync_timeout": MS,
    "interval": MS,
}

_PRIORITIES = ("emerg", "alert", "crit", "err", "error", "warning", "warn", "notice", "info", "debug", "trace")
_FACILITIES = ("daemon", "user", "auth", "authpriv", "cron", "ftp", "kern", "lpr", "mail", "news", "syslog", "uucp")
LOGGING_KEYS: dict[str, Spec] = {
    "timestamp": _words("on", "off", "hires"),
    "fileline": ON_OFF,
    "function_name": ON_OFF,
    "blackbox": ON_OFF,
    "to_stderr": _words("yes", "no", "on", "off"),
    "to_logfile": _words("yes", "no", "on", "off"),
    "to_syslog": _words("yes", "no", "on", "off"),
    "logfile": STR,
    "logfile_priority": _words(*_PRIORITIES),
    "syslog_priority": _words(*_PRIORITIES),
    "syslog_facility": _words(*_FACILITIES, *(f"local{i}" for i in range(8))),
    "debug": _words("on", "off", "trace"),
    "tags": STR,
}

SYSTEM_KEYS: dict[str, Spec] = {
    "qb_ipc_type": _words("native", "shm", "socket"),
    "sched_rr": YES_NO,
    "sched_batch": YES_NO,  # pycorosync: SCHED_BATCH when not realtime (engine/supervisor/sched.py)
    "priority": Spec(ValueType.STRING, convert=_priority),
    "move_to_root_cgroup": _words("yes", "no", "auto"),
    "allow_knet_handle_fallback": YES_NO,
    "state_dir": STR,
    "run_dir": STR,  # pycorosync: unix sockets and pid file
}
NOZZLE_KEYS: dict[str, Spec] = {"name": STR, "ipaddr": STR, "ipprefix": STR, "macaddr": STR}
MONITORING_KEYS: dict[str, Spec] = {"prometheus": Spec(ValueType.STRING, convert=_address_port)}
RESOURCES_TYPED: dict[str, Spec] = {"watchdog_timeout": _u32("s"), "poll_period": Spec(ValueType.UINT64, "ms")}


@dataclass
class FlatConfig:
    """Dotted keys with their types and values, and where each came from (for later error messages)."""

    keys: dict[str, tuple[ValueType, Value]] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    section_lines: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def line_of(self, key: str) -> int | None:
        """The line that set ``key``, else the line of the closest enclosing section that exists."""
        if key in self.lines:
            return self.lines[key]
        path = key
        while path:
            if path in self.section_lines:
                return self.section_lines[path]
            path = path.rpartition(".")[0]
        return None


def _integer_message(key: str, spec: Spec, value: str) -> str:
    low, high = INTEGER_RANGES[spec.vtype]
    unit = f" in {spec.unit}" if spec.unit in ("ms", "s", "bytes") else ""
    if parse_int(value) is None:
        return f"{key} must be an integer{unit}, got '{value}'"
    return f"{key} must be an integer{unit} in range {low}..{high}, got '{value}'"


class _Flattener:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.out = FlatConfig()
        self.node_count = 0
        self.links_seen: dict[int, int] = {}

    # -- helpers ---------------------------------------------------------------------------------------------

    def error(self, reason: str, line: int, key: str | None = None) -> ConfigError:
        return ConfigError(reason, self.filename, line, key)

    def convert(self, key: str, spec: Spec, item: Item) -> Value:
        text = item.value
        if spec.convert is not None:
            try:
                return spec.convert(text)
            except ValueError as exc:
                raise self.error(f"{key} {exc}, got '{text}'", item.line, key) from None
        if spec.vtype in INTEGER_RANGES:
            number = parse_int(text)
            if number is None or not check_range(spec.vtype, number):
                raise self.error(_integer_message(key, spec, text), item.line, key)
            return number
        if spec.choices and text not in spec.choices:
            allowed = ", ".join(spec.choices)
            if spec.invalid:
                reason = f"{spec.invalid}: {key} = '{text}' (expected one of {allowed})"
            else:
                reason = f"{key} must be one of {allowed}, got '{text}'"
            raise self.error(reason, item.line, key)
        return text

    def store(self, key: str, vtype: ValueType, value: Value, line: int) -> None:
        self.out.keys[key] = (vtype, value)
        self.out.lines[key] = line

    def typed(self, prefix: str, item: Item, spec: Spec) -> None:
        key = prefix + item.key
        self.store(key, spec.vtype, self.convert(key, spec, item), item.line)

    def unknown_key(self, item: Item, section: Section) -> ConfigError:
        return self.error(f"unknown key '{item.key}' in section '{section.path}'", item.line, item.key)

    def unknown_section(self, child: Section, parent: Section | None) -> ConfigError:
        where = f" in section '{parent.path}'" if parent is not None and parent.path else ""
        return self.error(f"unknown section '{child.name}'{where}", child.line)

    def plain(
        self,
        section: Section,
        prefix: str,
        specs: dict[str, Spec],
        subsections: dict[str, Callable[[Section], None]] | None = None,
    ) -> None:
        """Items typed by ``specs`` under ``prefix``; subsections dispatched by name."""
        self.out.section_lines.setdefault(prefix.rstrip("."), section.line)
        for entry in section.entries:
            if isinstance(entry, Item):
                spec = specs.get(entry.key)
                if spec is None:
                    raise self.unknown_key(entry, section)
                self.typed(prefix, entry, spec)
            else:
                handler = (subsections or {}).get(entry.name)
                if handler is None:
                    raise self.unknown_section(entry, section)
                handler(entry)

    # -- sections --------------------------------------------------------------------------------------------

    def root(self, root: Section) -> None:
        top: dict[str, Callable[[Section], None]] = {
            "totem": lambda s: self.plain(s, "totem.", TOTEM_KEYS, {"interface": self.interface}),
            "nodelist": self.nodelist,
            "quorum": lambda s: self.plain(s, "quorum.", QUORUM_KEYS, {"device": self.device}),
            "logging": lambda s: self.plain(s, "logging.", LOGGING_KEYS, {"logger_subsys": self.logger_subsys}),
            "system": lambda s: self.plain(s, "system.", SYSTEM_KEYS),
            "resources": lambda s: self.open_section(s, "resources.", RESOURCES_TYPED),
            "uidgid": self.uidgid,
            "nozzle": lambda s: self.plain(s, "nozzle.", NOZZLE_KEYS),
            "monitoring": lambda s: self.plain(s, "monitoring.", MONITORING_KEYS),
        }
        for entry in root.entries:
            if isinstance(entry, Item):
                raise self.error(f"key '{entry.key}' outside any section", entry.line, entry.key)
            handler = top.get(entry.name)
            if handler is None:
                raise self.unknown_section(entry, None)
            handler(entry)

    def interface(self, section: Section) -> None:
        linknumber = 0
        for item in section.items:
            if item.key in ("linknumber", "ringnumber"):
                linknumber = int(self.convert(f"totem.interface.{item.key}", U8, item))
                if linknumber >= INTERFACE_MAX:
                    raise self.error(
                        f"interface ring number {linknumber} is bigger than allowed maximum {INTERFACE_MAX - 1}",
                        item.line,
                        "totem.interface.linknumber",
                    )
        if linknumber in self.links_seen:
            raise self.error(
                f"interface section for link {linknumber} appears twice (first on line {self.links_seen[linknumber]})",
                section.line,
            )
        self.links_seen[linknumber] = section.line
        prefix = f"totem.interface.{linknumber}."
        self.out.section_lines[prefix.rstrip(".")] = section.line
        members = 0
        for entry in section.entries:
            if isinstance(entry, Item):
                if entry.key in ("linknumber", "ringnumber"):
                    continue
                spec = INTERFACE_KEYS.get(entry.key)
                if spec is None:
                    raise self.unknown_key(entry, section)
                self.typed(prefix, entry, spec)
            elif entry.name == "member":
                # corosync 1.x/2.x static member list: accepted (and ignored beside a nodelist), like corosync
                for item in entry.items:
                    if item.key != "memberaddr":
                        raise self.unknown_key(item, entry)
                    self.store(f"{prefix}member.{members}", ValueType.STRING, item.value, item.line)
                    members += 1
                for sub in entry.sections:
                    raise self.unknown_section(sub, entry)
            else:
                raise self.unknown_section(entry, section)

    def nodelist(self, section: Section) -> None:
        self.out.section_lines.setdefault("nodelist", section.line)
        for entry in section.entries:
            if isinstance(entry, Item):
                raise self.unknown_key(entry, section)
            if entry.name != "node":
                raise self.unknown_section(entry, section)
            self.node(entry)

    def node(self, section: Section) -> None:
        prefix = f"nodelist.node.{self.node_count}."
        self.node_count += 1
        self.out.section_lines[prefix.rstrip(".")] = section.line
        for entry in section.entries:
            if isinstance(entry, Section):
                raise self.unknown_section(entry, section)
            ring = RING_ADDR.fullmatch(entry.key)
            if ring is not None:
                if int(ring.group(1)) >= INTERFACE_MAX:
                    raise self.error(
                        f"interface ring number {int(ring.group(1))} is bigger than allowed maximum "
                        f"{INTERFACE_MAX - 1}",
                        entry.line,
                        prefix + entry.key,
                    )
                self.typed(prefix, entry, STR)
                continue
            spec = NODE_KEYS.get(entry.key)
            if spec is None:
                raise self.unknown_key(entry, section)
            self.typed(prefix, entry, spec)

    def device(self, section: Section) -> None:
        self.out.section_lines["quorum.device"] = section.line
        for entry in section.entries:
            if isinstance(entry, Item):
                spec = DEVICE_KEYS.get(entry.key)
                if spec is None:
                    raise self.unknown_key(entry, section)
                self.typed("quorum.device.", entry, spec)
            elif entry.name == "heuristics":
                self.heuristics(entry)
            else:
                # model options (quorum.device.net.host ...) belong to the qdevice daemon: kept as strings
                self.open_section(entry, f"quorum.device.{entry.name}.", {})

    def heuristics(self, section: Section) -> None:
        for entry in section.entries:
            if isinstance(entry, Section):
                raise self.unknown_section(entry, section)
            if entry.key.startswith("exec_") and len(entry.key) > len("exec_"):
                self.typed("quorum.device.heuristics.", entry, STR)
                continue
            spec = HEURISTICS_KEYS.get(entry.key)
            if spec is None:
                raise self.unknown_key(entry, section)
            self.typed("quorum.device.heuristics.", entry, spec)

    def logger_subsys(self, section: Section) -> None:
        subsys_items = [i for i in section.items if i.key == "subsys"]
        if not subsys_items:
            raise self.error("No subsys key in logger_subsys directive", section.line)
        subsys_item = subsys_items[-1]
        subsys = subsys_item.value
        if subsys not in LOGGER_SUBSYSTEMS:
            raise self.error(
                f"unknown subsys '{subsys}' in logger_subsys (known: {' '.join(LOGGER_SUBSYSTEMS)})",
                subsys_item.line,
                "logging.logger_subsys.subsys",
            )
        prefix = f"logging.logger_subsys.{subsys}."
        self.out.section_lines[prefix.rstrip(".")] = section.line
        for entry in section.entries:
            if isinstance(entry, Section):
                raise self.unknown_section(entry, section)
            if entry.key == "subsys":
                self.store(prefix + "subsys", ValueType.STRING, subsys, entry.line)
                continue
            spec = LOGGING_KEYS.get(entry.key)
            if spec is None:
                raise self.unknown_key(entry, section)
            self.typed(prefix, entry, spec)

    def open_section(self, section: Section, prefix: str, typed: dict[str, Spec]) -> None:
        """A namespace corosync leaves open (resources, qdevice model options): any key, strings by default."""
        for entry in section.entries:
            if isinstance(entry, Item):
                self.typed(prefix, entry, typed.get(entry.key, STR))
            else:
                self.open_section(entry, f"{prefix}{entry.name}.", typed)

    def uidgid(self, section: Section) -> None:
        for entry in section.entries:
            if isinstance(entry, Section):
                raise self.unknown_section(entry, section)
            if entry.key not in ("uid", "gid"):
                raise self.error("uidgid: Only uid and gid are allowed items", entry.line, entry.key)
            number = _uid_or_gid(entry.value, entry.key)
            if isinstance(number, str):
                raise self.error(number, entry.line, f"uidgid.{entry.key}")
            self.store(f"uidgid.config.{entry.key}.{number}", ValueType.UINT8, 1, entry.line)


def _uid_or_gid(text: str, kind: str) -> int | str:
    """The numeric id for a user/group name or number, or corosync's error text."""
    what, database = ("user", "/etc/passwd") if kind == "uid" else ("group", "/etc/group")
    number = parse_int(text)
    if number is not None:
        return number if 0 <= number < 2**32 else f"{what} id {text} is out of range"
    try:
        return pwd.getpwnam(text).pw_uid if kind == "uid" else grp.getgrnam(text).gr_gid
    except (KeyError, ValueError):
        # ValueError: names with NUL bytes and the like
        return f"The '{text}' {what} is not found in {database}, please read the documentation."


def flatten(root: Section, filename: str = "corosync.conf") -> FlatConfig:
    """Typed dotted keys from a parsed tree; ConfigError naming file, line and key for anything unknown or bad."""
    flattener = _Flattener(filename)
    flattener.root(root)
    return flattener.out


def flatten_uidgid_only(root: Section, filename: str) -> FlatConfig:
    """A ``uidgid.d`` file: nothing but ``uidgid { uid: ... gid: ... }`` sections."""
    flattener = _Flattener(filename)
    for entry in root.entries:
        if isinstance(entry, Item):
            raise flattener.error(f"key '{entry.key}' outside any section", entry.line, entry.key)
        if entry.name != "uidgid":
            raise flattener.error(f"unknown section '{entry.name}' (only uidgid is allowed here)", entry.line)
        flattener.uidgid(entry)
    return flattener.out
