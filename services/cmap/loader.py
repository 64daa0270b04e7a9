"""What icmap holds at start (config file keys plus corosync's runtime defaults) and config reload.

Reload follows corosync's (COROSYNC.md §7.4): flags up, keys gone from ``logging.``, ``totem.``,
``nodelist.``, ``quorum.`` (and ``uidgid.config.``) deleted, the new file's keys copied with
add/modify notifications, unchangeable keys kept with corosync's log line, flags down. A file that
does not parse changes nothing and leaves its message in ``config.reload_error_message``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from pycorosync.engine.config.types import Value, ValueType
from pycorosync.services.cmap.engine import Entry, Icmap

log = logging.getLogger("CMAP")

# (service id, name, number of exec (ring) message handlers): corosync 3.1 with mon and wd built
SERVICE_ENGINES: tuple[tuple[int, str, int], ...] = (
    (0, "cmap", 1),
    (1, "cfg", 5),
    (2, "cpg", 7),
    (3, "quorum", 0),
    (4, "pload", 2),
    (5, "votequorum", 4),
    (6, "mon", 0),
    (7, "wd", 0),
)

RELOAD_DELETE_PREFIXES = ("logging.", "totem.", "nodelist.", "quorum.", "uidgid.config.")
# keys the reload never changes (corosync: totem_volatile_config / totemconfig_commit_new_params)
UNCHANGEABLE_KEYS = frozenset(
    [f"totem.{k}" for k in ("version", "threads", "ip_version", "ip_dscp", "netmtu", "transport", "cluster_name",
                            "crypto_cipher", "crypto_hash", "crypto_model", "keyfile", "key", "secauth")]
    + ["quorum.provider"]
)
UNCHANGEABLE_INTERFACE_KEYS = frozenset(["bindnetaddr", "mcastaddr", "broadcast", "mcastport", "ttl"])
# computed by the engine from the file, never copied back as file keys
ENGINE_OWNED = ("nodelist.local_node_pos",)

RELOAD_FLAG = "config.reload_in_progress"
TOTEM_RELOAD_FLAG = "config.totemconfig_reload_in_progress"
RELOAD_ERROR_KEY = "config.reload_error_message"


def is_unchangeable(key: str) -> bool:
    """True for a key corosync refuses to change on reload."""
    if key in UNCHANGEABLE_KEYS or key.startswith("system."):
        return True
    parts = key.split(".")
    return len(parts) == 4 and parts[:2] == ["totem", "interface"] and parts[3] in UNCHANGEABLE_INTERFACE_KEYS


def default_runtime_keys() -> dict[str, Entry]:
    """Keys corosync creates at start whatever the file says (services, blackbox and gather triggers)."""
    keys: dict[str, Entry] = {}
    for sid, name, handlers in SERVICE_ENGINES:
        keys[f"internal_configuration.service.{sid}.name"] = (ValueType.STRING, f"corosync_{name}")
        keys[f"internal_configuration.service.{sid}.ver"] = (ValueType.UINT32, 0)
        keys[f"runtime.services.{name}.service_id"] = (ValueType.UINT16, sid)
        for fn in range(handlers):
            keys[f"runtime.services.{name}.{fn}.tx"] = (ValueType.UINT64, 0)
            keys[f"runtime.services.{name}.{fn}.rx"] = (ValueType.UINT64, 0)
    keys["runtime.blackbox.dump_flight_data"] = (ValueType.STRING, "no")
    keys["runtime.blackbox.dump_state"] = (ValueType.STRING, "no")
    keys["runtime.force_gather"] = (ValueType.STRING, "no")
    return keys


def local_node_pos(keys: Mapping[str, tuple[ValueType, Value]], node_id: int | None) -> int | None:
    """Position of ``node_id`` in the nodelist (``nodelist.node.<pos>.nodeid``), or None."""
    if node_id is None:
        return None
    for key, (_, value) in keys.items():
        if key.startswith("nodelist.node.") and key.endswith(".nodeid") and value == node_id:
            pos = key[len("nodelist.node."):-len(".nodeid")]
            if pos.isdigit():
                return int(pos)
    return None


def file_keys(keys: Mapping[str, tuple[ValueType, Value]], node_id: int | None) -> dict[str, Entry]:
    """The parsed config's keys as icmap entries, plus ``nodelist.local_node_pos`` when found."""
    out: dict[str, Entry] = {k: (ValueType(t), v) for k, (t, v) in keys.items()}
    if "nodelist.local_node_pos" not in out:
        pos = local_node_pos(keys, node_id)
        if pos is not None:
            out["nodelist.local_node_pos"] = (ValueType.UINT32, pos)
    return out


def load_initial(icmap: Icmap, keys: Mapping[str, tuple[ValueType, Value]], node_id: int | None) -> None:
    """Fills a fresh icmap: runtime defaults, then the file's keys (which win where both exist)."""
    for key, (vtype, value) in default_runtime_keys().items():
        icmap.set(key, vtype, value, internal=True)
    for key, (vtype, value) in file_keys(keys, node_id).items():
        icmap.set(key, vtype, value, internal=True)


def apply_reload(icmap: Icmap, keys: Mapping[str, tuple[ValueType, Value]], node_id: int | None) -> list[str]:
    """Applies a re-read config to a live icmap; returns the refusal messages (also logged)."""
    new = file_keys(keys, node_id)
    refused: list[str] = []

    def refuse(key: str) -> None:
        msg = f"Modified entry '{key}' in corosync.conf cannot be changed at run-time"
        log.error(msg)
        refused.append(msg)

    icmap.set(TOTEM_RELOAD_FLAG, ValueType.UINT8, 1, internal=True)
    icmap.set(RELOAD_FLAG, ValueType.UINT8, 1, internal=True)
    try:
        for key, _ in icmap.items():
            if not key.startswith(RELOAD_DELETE_PREFIXES) or key in new or key in ENGINE_OWNED:
                continue
            if is_unchangeable(key):
                refuse(key)
                continue
            icmap.delete(key, internal=True)
        for key in sorted(new):
            vtype, value = new[key]
            if is_unchangeable(key):
                if key not in icmap or icmap.get(key) != (vtype, value):
                    refuse(key)
                continue
            icmap.set(key, vtype, value, internal=True)
        if RELOAD_ERROR_KEY in icmap:
            icmap.delete(RELOAD_ERROR_KEY, internal=True)
    finally:
        icmap.set(TOTEM_RELOAD_FLAG, ValueType.UINT8, 0, internal=True)
        icmap.set(RELOAD_FLAG, ValueType.UINT8, 0, internal=True)
    return refused


def record_reload_error(icmap: Icmap, message: str) -> None:
    """A reload whose file did not parse: nothing changes but ``config.reload_error_message``."""
    log.error("Unable to reload configuration: %s", message)
    icmap.set(RELOAD_ERROR_KEY, ValueType.STRING, message.replace("\0", " "), internal=True)
