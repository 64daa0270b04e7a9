"""The votequorum combinations corosync refuses at start (votequorum_readconfig); the algorithm is elsewhere."""

from __future__ import annotations

from .errors import ConfigError
from .nodes import NodeEntry
from .schema import FlatConfig

__all__ = ["VOTEQUORUM", "validate_quorum"]

VOTEQUORUM = "corosync_votequorum"


def validate_quorum(flat: FlatConfig, nodes: list[NodeEntry], filename: str) -> None:
    """Raise ConfigError for a quorum section votequorum would not start with."""

    def value(key: str) -> int | str | None:
        entry = flat.keys.get(key)
        return None if entry is None else entry[1]  # type: ignore[return-value]

    def fail(reason: str, key: str) -> ConfigError:
        return ConfigError(reason, filename, flat.line_of(key), key)

    provider = value("quorum.provider")
    if provider is None:
        return
    if provider != VOTEQUORUM:
        raise fail(f"Invalid quorum provider '{provider}' (only {VOTEQUORUM} is available)", "quorum.provider")
    expected = value("quorum.expected_votes")
    if not nodes and not expected:
        raise fail("configuration error: nodelist or quorum.expected_votes must be configured!", "quorum")

    def flag(name: str) -> bool:
        return bool(value(f"quorum.{name}"))

    qdevice = "quorum.device" in flat.section_lines
    if qdevice:
        if value("quorum.device.model") is None:
            raise fail("configuration error: quorum.device.model must be configured", "quorum.device")
        if flag("two_node"):
            raise fail(
                "configuration error: two_node and quorum device cannot be configured at the same time",
                "quorum.two_node",
            )
        for option in ("auto_tie_breaker", "last_man_standing", "allow_downscale"):
            if flag(option):
                raise fail(f"configuration error: quorum.device is not compatible with {option}", f"quorum.{option}")
        device_votes = value("quorum.device.votes")
        if device_votes is None and any(node.quorum_votes != 1 for node in nodes):
            raise fail(
                "configuration error: quorum.device.votes must be configured when not all nodes have 1 vote",
                "quorum.device",
            )
        if device_votes is not None and expected and int(device_votes) >= int(expected):
            raise fail(
                f"configuration error: quorum.device.votes ({device_votes}) is too high for expected_votes "
                f"({expected})",
                "quorum.device.votes",
            )
    wait_for_all = value("quorum.wait_for_all")
    wfa = bool(wait_for_all) if wait_for_all is not None else flag("two_node")
    if flag("auto_tie_breaker") and len(nodes) % 2 == 1 and not wfa and not flag("last_man_standing"):
        flat.warnings.append("auto_tie_breaker is disabled: an odd number of nodes needs wait_for_all")
    if flag("two_node") and len(nodes) > 2:
        flat.warnings.append("two_node is disabled: the nodelist has more than 2 nodes")
    if flag("auto_tie_breaker") and flag("last_man_standing") and len(nodes) % 2 == 1 and not wfa:
        raise fail(
            "configuration error: auto_tie_breaker and last_man_standing with an odd number of nodes "
            "require wait_for_all",
            "quorum.auto_tie_breaker",
        )
