"""The nodelist: node entries, node ids (explicit or derived) and corosync's nodelist checks."""

from __future__ import annotations

from dataclasses import dataclass

from .addresses import HOSTNAME, address_family, address_identity, derive_nodeid
from .errors import ConfigError
from .schema import INTERFACE_MAX, FlatConfig
from .types import ValueType

__all__ = ["KNET_MAX_HOST", "PROCESSOR_COUNT_MAX", "NodeEntry", "read_nodes"]

KNET_MAX_HOST = 65536
PROCESSOR_COUNT_MAX = 384


@dataclass(frozen=True)
class NodeEntry:
    """One ``nodelist { node { } }``: position in the file, node id, name, one address per configured link.

    ``addrs[i]`` is the address of link ``links[i]`` (links ascending; usually ``links == (0,)``).
    ``name`` is the ``name`` key, or None when the node has none.
    """

    pos: int
    nodeid: int
    name: str | None
    addrs: tuple[str, ...]
    quorum_votes: int = 1
    links: tuple[int, ...] = (0,)
    nodeid_derived: bool = False

    def addr(self, linknumber: int) -> str | None:
        """``ring<linknumber>_addr`` of this node, or None."""
        for link, address in zip(self.links, self.addrs):
            if link == linknumber:
                return address
        return None

    @property
    def display_name(self) -> str:
        """``name``, else the first address: what the tools print for a node."""
        return self.name if self.name is not None else (self.addrs[0] if self.addrs else str(self.nodeid))


def _fail(flat: FlatConfig, filename: str, reason: str, key: str) -> ConfigError:
    return ConfigError(reason, filename, flat.line_of(key), key)


def read_nodes(
    flat: FlatConfig, transport: str, ip_version: str, clear_node_high_bit: bool, filename: str
) -> list[NodeEntry]:
    """Build the node entries from ``nodelist.node.*`` keys, deriving udp/udpu node ids into ``flat``.

    Raises ConfigError for the nodelist mistakes corosync refuses (§11.3).
    """
    positions = sorted(
        {int(k.split(".")[2]) for k in flat.keys if k.startswith("nodelist.node.")}
        | {int(k.split(".")[2]) for k in flat.section_lines if k.startswith("nodelist.node.")}
    )
    nodes: list[NodeEntry] = []
    for pos in positions:
        prefix = f"nodelist.node.{pos}."
        links: list[int] = []
        addrs: list[str] = []
        for link in range(INTERFACE_MAX):
            key = f"{prefix}ring{link}_addr"
            if key in flat.keys:
                address = str(flat.keys[key][1])
                family = address_family(address)
                if family is None or (family == 4 and ip_version == "ipv6") or (family == 6 and ip_version == "ipv4"):
                    raise _fail(flat, filename, f"failed to parse node address '{address}'", key)
                links.append(link)
                addrs.append(address)
        if not addrs:
            raise _fail(
                flat, filename, f"nodelist node {pos} has no ring0_addr (or other ringX_addr)", f"nodelist.node.{pos}"
            )
        name_value = flat.keys.get(prefix + "name")
        name = str(name_value[1]) if name_value is not None else None
        votes_value = flat.keys.get(prefix + "quorum_votes")
        votes = int(votes_value[1]) if votes_value is not None else 1
        nodeid_value = flat.keys.get(prefix + "nodeid")
        nodeid = int(nodeid_value[1]) if nodeid_value is not None else 0
        derived = False
        if not nodeid:
            if transport == "knet":
                raise _fail(
                    flat,
                    filename,
                    f"Knet requires an explicit nodeid to be specified for address '{addrs[0]}'.",
                    prefix + "nodeid",
                )
            ring0 = flat.keys.get(prefix + "ring0_addr")
            generated = derive_nodeid(str(ring0[1]), clear_node_high_bit) if ring0 is not None else None
            if not generated:
                raise _fail(
                    flat,
                    filename,
                    f"An IPV6 network requires that a node ID be specified for address '{addrs[0]}'.",
                    prefix + "nodeid",
                )
            nodeid, derived = generated, True
            # corosync puts the generated id back into the nodelist so that the tools show it
            flat.keys[prefix + "nodeid"] = (ValueType.UINT32, nodeid)
        if transport == "knet" and nodeid >= KNET_MAX_HOST:
            raise _fail(
                flat,
                filename,
                f"Knet requires nodeid to be less than {KNET_MAX_HOST} for address '{addrs[0]}'.",
                prefix + "nodeid",
            )
        nodes.append(NodeEntry(pos, nodeid, name, tuple(addrs), votes, tuple(links), derived))
    if len(nodes) > PROCESSOR_COUNT_MAX:
        raise _fail(
            flat,
            filename,
            f"too many nodes in the nodelist ({len(nodes)}, at most {PROCESSOR_COUNT_MAX})",
            f"nodelist.node.{nodes[PROCESSOR_COUNT_MAX].pos}",
        )
    _check_nodelist(flat, nodes, filename)
    return nodes


def _check_nodelist(flat: FlatConfig, nodes: list[NodeEntry], filename: str) -> None:
    seen_ids: dict[int, NodeEntry] = {}
    for node in nodes:
        prefix = f"nodelist.node.{node.pos}."
        if node.nodeid in seen_ids:
            origin = f"(autogenerated from {node.addrs[0]})" if node.nodeid_derived else ""
            raise _fail(
                flat, filename, f"Nodeid {node.nodeid}{origin} appears twice in corosync.conf", prefix + "nodeid"
            )
        seen_ids[node.nodeid] = node
    all_links = sorted({link for node in nodes for link in node.links})
    for link in all_links:
        first_literal: tuple[str, int] | None = None
        seen: set[str] = set()
        for node in nodes:
            address = node.addr(link)
            if address is None:
                continue
            key = f"nodelist.node.{node.pos}.ring{link}_addr"
            identity = address_identity(address)
            if identity in seen:
                raise _fail(flat, filename, f"Address {address} appears twice on link {link} in corosync.conf", key)
            seen.add(identity)
            family = address_family(address)
            if family is None or family == HOSTNAME:
                continue
            if first_literal is None:
                first_literal = (address, family)
            elif family != first_literal[1]:
                raise _fail(
                    flat,
                    filename,
                    f"Nodes for link {link} have different IP families (compared {address} with {first_literal[0]})",
                    key,
                )
    if len(all_links) > 1:
        for node in nodes:
            if node.name is None:
                raise _fail(
                    flat,
                    filename,
                    "for a multi-link configuration, all nodes must have a 'name' attribute",
                    f"nodelist.node.{node.pos}.name",
                )
        for node in nodes:
            if len(node.links) != len(nodes[0].links):
                raise _fail(flat, filename, "Not all nodes have the same number of links", f"nodelist.node.{node.pos}")
