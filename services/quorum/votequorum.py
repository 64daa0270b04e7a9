"""votequorum as a pure state machine: membership, vote messages and virtual time in; actions out.

One ``Votequorum`` object is the votequorum state of one node. It does no I/O and reads no clock: the daemon's
service process and ``pycorosync vqsim`` drive the same object. The calling order after every membership change
is corosync's sync: ``sync_init`` (returns the node's own ``NodeInfo`` to multicast), ``deliver`` of every
``NodeInfo`` the members sent (in Totem order, own included), then ``sync_activate``. ``tick(now_ms)`` fires the
last_man_standing timer, ``next_deadline_ms()`` says when it is due.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .settings import ATB_HIGHEST, ATB_LIST, ATB_LOWEST, ATB_NONE, QuorumSettings

__all__ = [
    "FLAG_NAMES",
    "Action",
    "ExpectedVotesNotification",
    "InfoFlag",
    "Multicast",
    "NodeInfo",
    "NodeState",
    "NodelistNotification",
    "QuorumNotification",
    "Reconfigure",
    "StoreExpectedVotes",
    "VoteError",
    "VoteInfo",
    "Votequorum",
]


class NodeState(enum.IntEnum):
    """votequorum's node states as getinfo reports them."""

    MEMBER = 1
    DEAD = 2
    LEAVING = 3


class InfoFlag(enum.IntFlag):
    """``VOTEQUORUM_INFO_*`` flags of getinfo."""

    TWONODE = 1
    QUORATE = 2
    WAIT_FOR_ALL = 4
    LAST_MAN_STANDING = 8
    AUTO_TIE_BREAKER = 16
    ALLOW_DOWNSCALE = 32
    QDEVICE_REGISTERED = 64
    QDEVICE_ALIVE = 128
    QDEVICE_CAST_VOTE = 256
    QDEVICE_MASTER_WINS = 512


# the words corosync-quorumtool prints on its Flags: line, in its order
FLAG_NAMES: tuple[tuple[InfoFlag, str], ...] = (
    (InfoFlag.TWONODE, "2Node"),
    (InfoFlag.QUORATE, "Quorate"),
    (InfoFlag.WAIT_FOR_ALL, "WaitForAll"),
    (InfoFlag.LAST_MAN_STANDING, "LastManStanding"),
    (InfoFlag.AUTO_TIE_BREAKER, "AutoTieBreaker"),
    (InfoFlag.ALLOW_DOWNSCALE, "AllowDownscale"),
    (InfoFlag.QDEVICE_REGISTERED, "Qdevice"),
)

# flags a node sends about itself in its NodeInfo (corosync's NODE_FLAGS_*)
NODE_FLAG_QUORATE = 1
NODE_FLAG_LEAVING = 2
NODE_FLAG_WFASTATUS = 4


class VoteError(enum.Enum):
    """Why setexpected / setvotes refused (mapped to cs_error_t by the service)."""

    INVALID_PARAM = "CS_ERR_INVALID_PARAM"
    NAME_NOT_FOUND = "CS_ERR_NAME_NOT_FOUND"


@dataclass(frozen=True)
class NodeInfo:
    """The cluster message each node multicasts about itself during sync: {votes, expected_votes, flags}."""

    nodeid: int
    votes: int
    expected_votes: int
    flags: int


@dataclass(frozen=True)
class Reconfigure:
    """A cluster message that changes expected votes (``nodeid`` 0) or one node's votes for every member, or,
    with ``cancel_wait_for_all``, ends the wait for all nodes on every member (``nodeid``: who asked)."""

    nodeid: int
    expected_votes: int = 0
    votes: int = -1
    cancel_wait_for_all: bool = False


@dataclass(frozen=True)
class Multicast:
    """Send ``message`` to every member (Totem agreed order); deliver it back with ``deliver``."""

    message: NodeInfo | Reconfigure


@dataclass(frozen=True)
class QuorumNotification:
    """Quorum state after a change: what quorum and votequorum trackers are told."""

    quorate: bool
    ring_id: tuple[int, int]
    members: tuple[int, ...]
    nodes: tuple[tuple[int, NodeState], ...]


@dataclass(frozen=True)
class NodelistNotification:
    """The membership of a new ring (votequorum ``nodelist_notify``)."""

    ring_id: tuple[int, int]
    members: tuple[int, ...]


@dataclass(frozen=True)
class ExpectedVotesNotification:
    """Expected votes changed (votequorum ``expectedvotes_notify``)."""

    expected_votes: int


@dataclass(frozen=True)
class StoreExpectedVotes:
    """expected_votes_tracking: persist this new highest expected votes (``<state_dir>/ev_tracking``)."""

    expected_votes: int


Action = Multicast | QuorumNotification | NodelistNotification | ExpectedVotesNotification | StoreExpectedVotes


@dataclass(frozen=True)
class VoteInfo:
    """The answer of votequorum_getinfo for one node."""

    node_id: int
    node_state: NodeState
    node_votes: int
    node_expected_votes: int
    highest_expected: int
    total_votes: int
    quorum: int
    flags: InfoFlag
    qdevice_votes: int = 0
    qdevice_name: str = ""


@dataclass
class _Node:
    nodeid: int
    votes: int
    expected_votes: int
    state: NodeState = NodeState.MEMBER
    flags: int = 0


@dataclass
class Votequorum:
    """The votequorum state of node ``nodeid`` (see the module docstring for the calling order)."""

    nodeid: int
    settings: QuorumSettings
    ev_barrier: int = 0
    nodes: dict[int, _Node] = field(default_factory=dict)
    quorum: int = 0
    quorate: bool = False
    ring_id: tuple[int, int] = (0, 0)
    members: tuple[int, ...] = ()
    previous_members: tuple[int, ...] = ()
    activated_members: tuple[int, ...] = ()  # the membership of the last sync that reached activation
    # corosync's ev_barrier: the configured expected votes, or the last setexpected; allow_downscale's floor
    configured_expected_votes: int = 0
    wait_for_all_status: bool = False
    lowest_node_id: int = -1
    highest_node_id: int = -1
    lms_deadline_ms: int | None = None
    leaving: bool = False

    def __post_init__(self) -> None:
        expected = max(self.settings.expected_votes, self.ev_barrier if self.settings.expected_votes_tracking else 0)
        self.nodes[self.nodeid] = _Node(self.nodeid, self.settings.node_votes, expected)
        self.members = self.activated_members = (self.nodeid,)
        self.configured_expected_votes = self.settings.expected_votes
        self.wait_for_all_status = self.settings.wait_for_all
        self.quorum = self._calculate_quorum(allow_decrease=True, max_expected=0)[0]

    # ---- views

    @property
    def us(self) -> _Node:
        """This node's own entry."""
        return self.nodes[self.nodeid]

    @property
    def expected_votes(self) -> int:
        """This node's expected votes."""
        return self.us.expected_votes

    def total_votes(self) -> int:
        """Votes of the current members."""
        return sum(node.votes for node in self._members())

    def highest_expected(self) -> int:
        """The highest expected votes any current member announced."""
        return max((node.expected_votes for node in self._members()), default=0)

    def info_flags(self) -> InfoFlag:
        """The ``VOTEQUORUM_INFO_*`` flags getinfo reports."""
        flags = InfoFlag(0)
        settings = self.settings
        if settings.two_node:
            flags |= InfoFlag.TWONODE
        if self.quorate:
            flags |= InfoFlag.QUORATE
        if settings.wait_for_all:
            flags |= InfoFlag.WAIT_FOR_ALL
        if settings.last_man_standing:
            flags |= InfoFlag.LAST_MAN_STANDING
        if settings.auto_tie_breaker != ATB_NONE:
            flags |= InfoFlag.AUTO_TIE_BREAKER
        if settings.allow_downscale:
            flags |= InfoFlag.ALLOW_DOWNSCALE
        return flags

    def getinfo(self, nodeid: int) -> VoteInfo | None:
        """votequorum_getinfo: ``nodeid`` 0 means this node; None for a node never seen (NOT_EXIST)."""
        node = self.nodes.get(self.nodeid if nodeid == 0 else nodeid)
        if node is None:
            return None
        return VoteInfo(
            node_id=node.nodeid,
            node_state=node.state,
            node_votes=node.votes,
            node_expected_votes=node.expected_votes,
            highest_expected=self.highest_expected(),
            total_votes=self.total_votes(),
            quorum=self.quorum,
            flags=self.info_flags(),
        )

    def node_states(self) -> tuple[tuple[int, NodeState], ...]:
        """Every node known, with its state, by node id."""
        return tuple((nodeid, self.nodes[nodeid].state) for nodeid in sorted(self.nodes))

    def next_deadline_ms(self) -> int | None:
        """When ``tick`` has something to do (the last_man_standing window), or None."""
        return self.lms_deadline_ms

    # ---- sync after a membership change

    def sync_init(self, ring_id: tuple[int, int], members: tuple[int, ...], now_ms: int) -> list[Action]:
        """A new ring: record the membership and return this node's NodeInfo to multicast."""
        del now_ms  # the membership takes effect at activation; kept for symmetry with the other inputs
        # relative to the last membership installed: a sync cut short by another change installed nothing
        self.previous_members = self.activated_members
        self.ring_id = ring_id
        self.members = tuple(members)
        for nodeid, node in self.nodes.items():
            if nodeid not in self.members and node.state == NodeState.MEMBER:
                node.state = NodeState.DEAD
        return [Multicast(self._own_info())]

    def sync_activate(self, now_ms: int) -> list[Action]:
        """Sync is over: every member's NodeInfo was delivered. Recalculate quorum and notify."""
        self.activated_members = self.members
        left = [nodeid for nodeid in self.previous_members if nodeid not in self.members]
        actions: list[Action] = [NodelistNotification(self.ring_id, self.members)]
        downscaled = self._downscale(left) if self.settings.allow_downscale else []
        actions += downscaled
        # quorum never decreases, except down with expected votes that allow_downscale lowered
        actions += self._recalculate(allow_decrease=bool(downscaled), by_current_nodes=False, force_notify=True)
        if self.settings.last_man_standing and (
            (left and len(self.members) >= self.quorum)
            or (
                len(self.members) <= self.quorum
                and self.settings.auto_tie_breaker != ATB_NONE
                and self._holds_tie_breaker()
            )
        ):
            # every change that loses members while still quorate (re)starts the window
            self.lms_deadline_ms = now_ms + self.settings.last_man_standing_window_ms
        return actions

    def deliver(self, sender: int, message: NodeInfo | Reconfigure) -> list[Action]:
        """A votequorum cluster message, in Totem order (own messages included)."""
        if isinstance(message, NodeInfo):
            return self._deliver_nodeinfo(message)
        return self._deliver_reconfigure(message)

    def tick(self, now_ms: int) -> list[Action]:
        """Virtual time advanced to ``now_ms``: fire the last_man_standing timer when due."""
        if self.lms_deadline_ms is None or now_ms < self.lms_deadline_ms:
            return []
        self.lms_deadline_ms = None
        if not self.quorate:
            return []
        return self._recalculate(allow_decrease=True, by_current_nodes=True)

    # ---- administrative requests (they become cluster messages)

    def setexpected(self, expected_votes: int) -> VoteError | Multicast:
        """votequorum_setexpected: refuse values below the total votes or that would unquorate the cluster."""
        total = self.total_votes()
        if expected_votes < 1 or expected_votes < total:
            return VoteError.INVALID_PARAM
        new_quorum, _ = self._calculate_quorum(allow_decrease=True, max_expected=expected_votes)
        if new_quorum > total or new_quorum < total // 2:
            return VoteError.INVALID_PARAM
        return Multicast(Reconfigure(nodeid=0, expected_votes=expected_votes))

    def setvotes(self, nodeid: int, votes: int) -> VoteError | Multicast:
        """votequorum_setvotes: refuse an unknown node, and votes that put quorum outside [total/2, total]."""
        target = self.nodes.get(self.nodeid if nodeid == 0 else nodeid)
        if target is None:
            return VoteError.NAME_NOT_FOUND
        if votes < 0:
            return VoteError.INVALID_PARAM
        saved = target.votes
        target.votes = votes
        try:
            new_quorum, total = self._calculate_quorum(allow_decrease=True, max_expected=0)
        finally:
            target.votes = saved
        if new_quorum < total // 2 or new_quorum > total:
            return VoteError.INVALID_PARAM
        return Multicast(Reconfigure(nodeid=target.nodeid, votes=votes))

    def request_cancel_wait_for_all(self) -> Multicast:
        """``quorum.cancel_wait_for_all`` was set here: every member stops waiting when this is delivered."""
        return Multicast(Reconfigure(nodeid=self.nodeid, cancel_wait_for_all=True))

    def cancel_wait_for_all(self) -> list[Action]:
        """Stop waiting for all nodes and recalculate (a delivered cancel request does this on every member)."""
        self.wait_for_all_status = False
        return self._recalculate(allow_decrease=False, by_current_nodes=False)

    def prepare_leave(self) -> Multicast:
        """A clean shutdown: tell the members this node is LEAVING (allow_downscale lowers EV for it)."""
        self.leaving = True
        return Multicast(self._own_info())

    # ---- internals

    def _members(self) -> list[_Node]:
        return [self.nodes[nodeid] for nodeid in self.members if nodeid in self.nodes]

    def _own_info(self) -> NodeInfo:
        flags = 0
        if self.quorate:
            flags |= NODE_FLAG_QUORATE
        if self.leaving:
            flags |= NODE_FLAG_LEAVING
        if self.wait_for_all_status:
            flags |= NODE_FLAG_WFASTATUS
        return NodeInfo(self.nodeid, self.us.votes, self.us.expected_votes, flags)

    def _deliver_nodeinfo(self, info: NodeInfo) -> list[Action]:
        if info.nodeid == self.nodeid:
            return []
        node = self.nodes.get(info.nodeid)
        if node is None:
            node = self.nodes[info.nodeid] = _Node(info.nodeid, info.votes, info.expected_votes)
        node.votes = info.votes
        node.expected_votes = info.expected_votes
        node.flags = info.flags
        if info.nodeid in self.members:
            node.state = NodeState.LEAVING if info.flags & NODE_FLAG_LEAVING else NodeState.MEMBER
        if (
            self.settings.wait_for_all
            and self.wait_for_all_status
            and info.flags & NODE_FLAG_QUORATE
            and not info.flags & NODE_FLAG_WFASTATUS
        ):
            # joining a partition that already has quorum: nothing to wait for
            self.wait_for_all_status = False
        return []

    def _deliver_reconfigure(self, message: Reconfigure) -> list[Action]:
        if message.cancel_wait_for_all:
            return self.cancel_wait_for_all()
        if message.nodeid == 0:
            self.configured_expected_votes = message.expected_votes
            for node in self._members():
                node.expected_votes = message.expected_votes
            actions: list[Action] = [ExpectedVotesNotification(message.expected_votes)]
            return actions + self._recalculate(allow_decrease=True, by_current_nodes=False, expected_changed=True)
        target = self.nodes.get(message.nodeid)
        if target is None or message.votes < 0:
            return []
        target.votes = message.votes
        return self._recalculate(allow_decrease=True, by_current_nodes=False)

    def _downscale(self, left: list[int]) -> list[Action]:
        leaving_votes = sum(self.nodes[nodeid].votes for nodeid in left if self.nodes[nodeid].flags & NODE_FLAG_LEAVING)
        if not leaving_votes:
            return []
        for nodeid in left:
            self.nodes[nodeid].flags &= ~NODE_FLAG_LEAVING
        # never below the configured expected votes: from there on quorum works as usual
        lowered = max(self.us.expected_votes - leaving_votes, self.configured_expected_votes, self.total_votes(), 1)
        if lowered == self.us.expected_votes:
            return []
        for node in self._members():
            node.expected_votes = lowered
        return [ExpectedVotesNotification(lowered)]

    def _calculate_quorum(self, allow_decrease: bool, max_expected: int) -> tuple[int, int]:
        members = self._members()
        total = sum(node.votes for node in members)
        highest = max((node.expected_votes for node in members), default=0)
        if max_expected > 0:
            highest = max_expected
        new_quorum = max(highest // 2 + 1, total // 2 + 1)
        if not allow_decrease:
            new_quorum = max(new_quorum, self.quorum)
        if self.settings.two_node and len(members) <= 2:
            new_quorum = 1
        return new_quorum, total

    def _recalculate(
        self, allow_decrease: bool, by_current_nodes: bool, force_notify: bool = False, expected_changed: bool = False
    ) -> list[Action]:
        actions: list[Action] = []
        us = self.us
        total = self.total_votes()
        old_expected = us.expected_votes
        if by_current_nodes:
            for node in self._members():
                node.expected_votes = total
        if total > us.expected_votes:
            us.expected_votes = total
        if us.expected_votes != old_expected and not expected_changed:
            actions.append(ExpectedVotesNotification(us.expected_votes))
        if self.settings.expected_votes_tracking and us.expected_votes > self.ev_barrier:
            self.ev_barrier = us.expected_votes
            actions.append(StoreExpectedVotes(self.ev_barrier))
        self.quorum, _ = self._calculate_quorum(allow_decrease, us.expected_votes if by_current_nodes else 0)
        was_quorate = self.quorate
        self._are_we_quorate(total)
        if force_notify or was_quorate != self.quorate:
            actions.append(QuorumNotification(self.quorate, self.ring_id, self.members, self.node_states()))
        return actions

    def _are_we_quorate(self, total: int) -> None:
        if self.settings.wait_for_all and self.wait_for_all_status and total != self.us.expected_votes:
            self.quorate = False
            return
        quorate = total >= self.quorum
        if quorate:
            self.lowest_node_id = min(self.members)
            self.highest_node_id = max(self.members)
        if (
            not quorate
            and self.settings.auto_tie_breaker != ATB_NONE
            and total == self.us.expected_votes // 2
            and len(self.previous_members) - len(self.members) < self.quorum
            and self._holds_tie_breaker()
        ):
            quorate = True
        self.quorate = quorate
        if self.settings.wait_for_all:
            self.wait_for_all_status = not quorate

    def _holds_tie_breaker(self) -> bool:
        members = set(self.members)
        atb = self.settings.auto_tie_breaker
        if atb == ATB_LOWEST:
            return self.lowest_node_id in members
        if atb == ATB_HIGHEST:
            return self.highest_node_id in members
        if atb == ATB_LIST:
            for nodeid in self.settings.auto_tie_breaker_nodes:
                if nodeid in members:
                    return True
                if nodeid in self.previous_members:
                    # an earlier listed node is on the other side: that side wins
                    return False
        return False
