"""corosync.conf: parser, typed cmap keys, defaults and validation (COROSYNC.md §11, ARCHITECTURE.md §5).

Public surface::

    cfg = load("/etc/corosync/corosync.conf")     # or parse(text, filename="corosync.conf")
    cfg.keys["totem.token"]                        # (ValueType.UINT32, 3000)
    cfg.get("runtime.config.totem.token")          # effective token in ms
    cfg.totem.consensus_ms, cfg.totem.netmtu       # TotemConfig: values in force
    me = cfg.local_node(nodeid=None)               # NodeEntry; ConfigError if no entry matches this host
    cfg.all_keys(me)                               # every key incl. nodelist.local_node_pos, sorted
    cfg.nodes, cfg.totem.links, cfg.warnings       # NodeEntry tuple, LinkConfig tuple, accepted-but-ignored notes
    cfg.read_authkey()                             # key bytes when crypto is on, else None
    format_entry("totem.token", ValueType.UINT32, 3000)  # 'totem.token (u32) = 3000'

Every refusal is a ``ConfigError`` whose text is ``file:line: reason``.
"""

from .errors import ConfigError
from .model import CorosyncConfig, load, parse
from .nodes import NodeEntry
from .totem import LinkConfig, TotemConfig
from .types import (
    SHORT_NAMES,
    Value,
    ValueType,
    check_range,
    format_binary,
    format_entry,
    format_value,
    parse_value,
    type_from_short_name,
)

__all__ = [
    "SHORT_NAMES",
    "ConfigError",
    "CorosyncConfig",
    "LinkConfig",
    "NodeEntry",
    "TotemConfig",
    "Value",
    "ValueType",
    "check_range",
    "format_binary",
    "format_entry",
    "format_value",
    "load",
    "parse",
    "parse_value",
    "type_from_short_name",
]
