"""The votequorum options of one node, read from a parsed corosync.conf (corosync's votequorum_readconfig)."""

from __future__ import annotations

from dataclasses import dataclass

from pycorosync.engine.config.model import CorosyncConfig

__all__ = ["ATB_HIGHEST", "ATB_LIST", "ATB_LOWEST", "ATB_NONE", "QuorumSettings"]

ATB_NONE = "none"
ATB_LOWEST = "lowest"
ATB_HIGHEST = "highest"
ATB_LIST = "list"

DEFAULT_LMS_WINDOW_MS = 10000


@dataclass(frozen=True)
class QuorumSettings:
    """What votequorum needs to know about the configuration, with corosync's implied options already applied.

    ``expected_votes`` is ``quorum.expected_votes`` or the sum of the nodelist votes; ``node_votes`` is this node's
    ``quorum_votes``. ``wait_for_all`` is already on when ``two_node`` implies it; ``two_node`` is already off when the
    nodelist has more than 2 nodes or auto_tie_breaker is on; ``auto_tie_breaker`` is ``ATB_NONE`` when an odd
    node count lacks wait_for_all.
    """

    expected_votes: int
    node_votes: int = 1
    node_count: int = 0
    two_node: bool = False
    wait_for_all: bool = False
    last_man_standing: bool = False
    last_man_standing_window_ms: int = DEFAULT_LMS_WINDOW_MS
    auto_tie_breaker: str = ATB_NONE
    auto_tie_breaker_nodes: tuple[int, ...] = ()
    allow_downscale: bool = False
    expected_votes_tracking: bool = False

    @classmethod
    def build(
        cls,
        expected_votes: int,
        *,
        node_votes: int = 1,
        node_count: int = 0,
        two_node: bool = False,
        wait_for_all: bool | None = None,
        last_man_standing: bool = False,
        last_man_standing_window_ms: int = DEFAULT_LMS_WINDOW_MS,
        auto_tie_breaker: bool = False,
        auto_tie_breaker_node: str = "lowest",
        allow_downscale: bool = False,
        expected_votes_tracking: bool = False,
    ) -> QuorumSettings:
        """Apply corosync's implications between options (the raw values are what the file says)."""
        wfa = two_node if wait_for_all is None else wait_for_all
        atb, atb_nodes = _parse_atb_node(auto_tie_breaker_node) if auto_tie_breaker else (ATB_NONE, ())
        if atb != ATB_NONE and node_count % 2 == 1 and not wfa:
            # an odd cluster can split into two sides that each hold half of the votes only with WFA's guarantee
            atb, atb_nodes = ATB_NONE, ()
        if two_node and (node_count > 2 or atb != ATB_NONE):
            two_node = False
        return cls(
            expected_votes=expected_votes,
            node_votes=node_votes,
            node_count=node_count,
            two_node=two_node,
            wait_for_all=wfa,
            last_man_standing=last_man_standing,
            last_man_standing_window_ms=last_man_standing_window_ms,
            auto_tie_breaker=atb,
            auto_tie_breaker_nodes=atb_nodes,
            allow_downscale=allow_downscale,
            expected_votes_tracking=expected_votes_tracking or allow_downscale,
        )

    @classmethod
    def from_config(cls, config: CorosyncConfig, nodeid: int) -> QuorumSettings:
        """The settings of node ``nodeid`` (which may be absent from the nodelist: it then has ``quorum.votes``)."""

        def number(key: str, default: int | None = None) -> int | None:
            value = config.get(key)
            return default if value is None else int(str(value))

        def flag(name: str) -> bool:
            return bool(number(f"quorum.{name}", 0))

        node = config.node_by_id(nodeid)
        default_votes = number("quorum.votes", 1) or 1
        node_votes = node.quorum_votes if node is not None else default_votes
        expected = number("quorum.expected_votes")
        if expected is None:
            expected = sum(entry.quorum_votes for entry in config.nodes)
        wfa_value = number("quorum.wait_for_all")
        atb_node = config.get("quorum.auto_tie_breaker_node")
        return cls.build(
            expected,
            node_votes=node_votes,
            node_count=len(config.nodes),
            two_node=flag("two_node"),
            wait_for_all=None if wfa_value is None else bool(wfa_value),
            last_man_standing=flag("last_man_standing"),
            last_man_standing_window_ms=number("quorum.last_man_standing_window", DEFAULT_LMS_WINDOW_MS)
            or DEFAULT_LMS_WINDOW_MS,
            auto_tie_breaker=flag("auto_tie_breaker"),
            auto_tie_breaker_node="lowest" if atb_node is None else str(atb_node),
            allow_downscale=flag("allow_downscale"),
            expected_votes_tracking=flag("expected_votes_tracking"),
        )


def _parse_atb_node(text: str) -> tuple[str, tuple[int, ...]]:
    text = text.strip()
    if text in (ATB_LOWEST, ""):
        return ATB_LOWEST, ()
    if text == ATB_HIGHEST:
        return ATB_HIGHEST, ()
    ids: list[int] = []
    for word in text.split():
        try:
            ids.append(int(word))
        except ValueError:
            # corosync falls back to "lowest" when the list does not parse
            return ATB_LOWEST, ()
    return ATB_LIST, tuple(ids)
