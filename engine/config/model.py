"""The parsed configuration other components read: ``parse``/``load`` into a ``CorosyncConfig``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .grammar import parse_tree
from .localnode import find_local_node
from .nodes import NodeEntry, read_nodes
from .quorum import validate_quorum
from .schema import FlatConfig, flatten, flatten_uidgid_only
from .totem import (
    TOTEM_PRIVATE_KEY_LEN_MAX,
    TOTEM_PRIVATE_KEY_LEN_MIN,
    TotemConfig,
    build_totem,
    read_transport,
)
from .types import Value, ValueType

__all__ = ["DEFAULT_AUTHKEY", "CorosyncConfig", "load", "parse"]

DEFAULT_AUTHKEY = "/etc/corosync/authkey"


@dataclass(frozen=True)
class CorosyncConfig:
    """A valid corosync.conf as typed cmap keys plus the views the engine needs.

    ``keys`` holds every key from the file (typed as corosync types them), what corosync derives into the
    same namespace (generated ``nodeid``\\ s, udp ``mcastaddr``/``mcastport``) and the ``runtime.config.totem.*``
    values in force. Keys that depend on which node is local are in ``local_keys(node)``.
    """

    filename: str
    keys: dict[str, tuple[ValueType, Value]]
    nodes: tuple[NodeEntry, ...]
    totem: TotemConfig
    lines: dict[str, int]
    warnings: tuple[str, ...] = ()

    def get(self, key: str, default: Value | None = None) -> Value | None:
        """The value of ``key`` (without its type), or ``default``."""
        entry = self.keys.get(key)
        return default if entry is None else entry[1]

    @property
    def run_dir(self) -> str | None:
        """``system.run_dir`` if configured (resolve with ``pycorosync.paths.resolve_run_dir``)."""
        value = self.get("system.run_dir")
        return None if value is None else str(value)

    @property
    def quorum_provider(self) -> str | None:
        """``quorum.provider`` (``corosync_votequorum``) or None when quorum is not configured."""
        value = self.get("quorum.provider")
        return None if value is None else str(value)

    def node_by_id(self, nodeid: int) -> NodeEntry | None:
        """The nodelist entry with this node id, or None."""
        for node in self.nodes:
            if node.nodeid == nodeid:
                return node
        return None

    def local_node(
        self,
        nodeid: int | None = None,
        *,
        hostname: str | None = None,
        addresses: Iterable[str] | None = None,
        resolve: bool = True,
    ) -> NodeEntry:
        """This node's entry: by explicit ``nodeid``, else by host name / local addresses (corosync's rules).

        ``addresses`` (IP literals) replaces the host's own addresses; ``resolve=False`` never calls the resolver.
        ConfigError "No valid name found for local host" when nothing matches.
        """
        if nodeid is not None:
            node = self.node_by_id(nodeid)
            if node is None:
                raise ConfigError(f"nodeid {nodeid} is not in the nodelist", self.filename, self.lines.get("nodelist"))
            return node
        found = find_local_node(self.nodes, hostname=hostname, addresses=addresses, resolve=resolve)
        if found is None:
            raise ConfigError("No valid name found for local host", self.filename, None)
        return found

    def local_keys(self, node: NodeEntry) -> dict[str, tuple[ValueType, Value]]:
        """Keys corosync adds once it knows the local node: ``nodelist.local_node_pos`` and the bind addresses."""
        keys: dict[str, tuple[ValueType, Value]] = {"nodelist.local_node_pos": (ValueType.UINT32, node.pos)}
        for link, address in zip(node.links, node.addrs):
            keys[f"totem.interface.{link}.bindnetaddr"] = (ValueType.STRING, address)
        return keys

    def read_authkey(self, default_path: str | os.PathLike[str] = DEFAULT_AUTHKEY) -> bytes | None:
        """The cluster key when crypto is on (None when off): ``totem.keyfile``, else ``totem.key``, else
        ``default_path``. ConfigError in corosync's words for an unreadable or too short key file."""
        totem = self.totem
        if not totem.crypto_enabled:
            return None
        if totem.keyfile is None and totem.key is not None:
            return totem.key.encode("utf-8", "surrogateescape")
        path = Path(totem.keyfile if totem.keyfile is not None else default_path)
        line = self.lines.get("totem.keyfile")
        try:
            with open(path, "rb") as handle:
                data = handle.read(TOTEM_PRIVATE_KEY_LEN_MAX)
        except OSError as exc:
            raise ConfigError(f"Could not open {path}: {exc.strerror}", self.filename, line, "totem.keyfile") from None
        if len(data) < TOTEM_PRIVATE_KEY_LEN_MIN:
            raise ConfigError(
                f"Could only read {len(data) * 8} bits of minimum {TOTEM_PRIVATE_KEY_LEN_MIN * 8} bits from {path}.",
                self.filename,
                line,
                "totem.keyfile",
            )
        return data

    def all_keys(self, local: NodeEntry | None = None) -> dict[str, tuple[ValueType, Value]]:
        """``keys`` plus ``local_keys(local)``, sorted by name as cmap iterates them."""
        merged = dict(self.keys)
        if local is not None:
            merged.update(self.local_keys(local))
        return dict(sorted(merged.items()))


def _build(flat: FlatConfig, filename: str) -> CorosyncConfig:
    transport, ip_version, clear_high_bit = read_transport(flat, filename)
    nodes = read_nodes(flat, transport, ip_version, clear_high_bit, filename)
    totem, runtime_keys = build_totem(flat, nodes, filename)
    validate_quorum(flat, nodes, filename)
    keys = dict(flat.keys)
    keys.update(runtime_keys)
    lines = dict(flat.section_lines)
    lines.update(flat.lines)
    return CorosyncConfig(
        filename=filename, keys=keys, nodes=tuple(nodes), totem=totem, lines=lines, warnings=tuple(flat.warnings)
    )


def parse(text: str, filename: str = "corosync.conf") -> CorosyncConfig:
    """Parse and validate corosync.conf text; ConfigError (with ``file:line``) if corosync would refuse it."""
    return _build(flatten(parse_tree(text, filename), filename), filename)


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "surrogateescape")
    except OSError as exc:
        raise ConfigError(f"Can't read file {path}: {exc.strerror}", str(path)) from None


def load(path: str | os.PathLike[str], uidgid_dir: str | os.PathLike[str] | None = None) -> CorosyncConfig:
    """Read and validate a corosync.conf file, plus the ``uidgid { }`` files of ``uidgid_dir``.

    ``uidgid_dir`` defaults to ``uidgid.d`` beside the file (corosync reads ``/etc/corosync/uidgid.d``).
    """
    conf = Path(path)
    filename = str(conf)
    flat = flatten(parse_tree(_read_text(conf), filename), filename)
    extra = Path(uidgid_dir) if uidgid_dir is not None else conf.parent / "uidgid.d"
    if extra.is_dir():
        for entry in sorted(extra.iterdir()):
            if entry.is_file() and not entry.name.startswith("."):
                extra_flat = flatten_uidgid_only(parse_tree(_read_text(entry), str(entry)), str(entry))
                flat.keys.update(extra_flat.keys)
                flat.lines.update(extra_flat.lines)
    return _build(flat, filename)
