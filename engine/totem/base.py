"""The state every part of the Totem core shares, and the small helpers they all use."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from pycorosync.engine.totem.api import Action, LogEvent, RingId, SendFrame
from pycorosync.engine.totem.config import TotemConfig
from pycorosync.engine.totem.fragment import Assembler, SendQueue
from pycorosync.engine.totem.ordering import FrameWriter, RingStore
from pycorosync.engine.totem.stats import new_stats
from pycorosync.engine.totem.wire import CommitEntry, Token, encode_token

# membership states, with corosync's names
OPERATIONAL = "OPERATIONAL"
GATHER = "GATHER"
COMMIT = "COMMIT"
RECOVERY = "RECOVERY"
LEFT = "LEFT"
INIT = "INIT"

# timers
T_TOKEN = "token"
T_WARNING = "token_warning"
T_RETRANSMIT = "token_retransmit"
T_HOLD = "hold"
T_JOIN = "join"
T_CONSENSUS = "consensus"
T_LEAVE = "leave"

_MS = 1_000_000


class CoreBase:
    """Fields of the core. Subclasses add behaviour; nothing here reads a clock or does I/O."""

    #: set by a driver that takes a ``DeliverFrame`` for a frame whose messages are all whole, instead of
    #: one ``Deliver`` per message (the totem process does)
    frame_delivery = False
    #: set by a driver that makes and keeps the frames of MIDDLE pieces itself (``ordering.FrameWriter``):
    #: such a run of frames is one ``SendRun``
    frame_writer: FrameWriter | None = None

    def __init__(self, config: TotemConfig, node_id: int, nodelist: Sequence[int], seed: int = 0,
                 ring_seq: int = 0, incarnation: int = 0) -> None:
        if node_id <= 0:
            raise ValueError(f"node id must be a positive integer, got {node_id}")
        self.cfg = config
        self.node_id = node_id
        self.incarnation = incarnation
        self.seed = seed
        self.nodelist = tuple(sorted(set(nodelist) | {node_id}))
        self._nodeset = frozenset(self.nodelist)
        self.state = INIT
        # the installed (regular) configuration; before the first one, a fresh one-node pseudo ring
        self.ring_id = RingId(node_id, ring_seq)
        self.fresh = True
        self.members: tuple[int, ...] = (node_id,)
        self.store = RingStore(self.ring_id)
        self.safe_seq = 0
        self.max_ring_seq = ring_seq
        self.known_incarnation: dict[int, int] = {}
        self.sendq = SendQueue(config.frame_payload_bytes, config.send_queue_limit_frames, config.max_message_bytes)
        self.assembler = Assembler(config.max_message_bytes)
        self.stats = new_stats()
        self._timers: dict[str, int] = {}
        # GATHER
        self.proc: set[int] = {node_id}
        self.fail: set[int] = set()
        # the installed ring each failed node's joins carried when first heard from after its failure: a
        # join from a later ring of its own shows it came through a new round (see _on_join_gather)
        self._fail_ring: dict[int, RingId] = {}
        self.agreed: set[int] = set()
        self.heard: set[int] = set()  # nodes whose join reached me in this gather round
        self._disagree_rounds = 0
        self.left_cleanly: set[int] = set()
        self._commit_created = False
        # COMMIT / RECOVERY
        self.new_ring_id: RingId | None = None
        self.new_members: tuple[int, ...] = ()
        self.trans_members: tuple[int, ...] = ()
        self.new_store: RingStore | None = None
        self.recovery_queue: deque[bytes] = deque()
        self._commit_entries: list[CommitEntry] = []
        self._last_commit_token_seq = -1
        self._old_safe_seq = 0
        self._my_set_retrans_flg = False
        self._retrans_flg_count = 0
        self._install_seq = 0
        # token handling
        self._last_token_seq = -1
        self._last_sent: tuple[int, bytes] | None = None  # (dest, frame) resent on token_retransmit
        self._forwarded_seq = 0  # token seq when I last forwarded it: a higher mcast means it moved on
        self._held_token: Token | None = None
        self._self_token: Token | None = None
        self._seq_unchanged = 0
        self._last_visit_seq = -1
        self._seq_changed_ns = 0  # when a visit of mine last saw the ring's seq move
        self._safe_all_seen = False  # at my last visit every frame was already safe: the token told everyone
        self._sent_prev = 0
        self._backlog_prev = 0
        self._last_token_aru = -1
        self._fail_recv_count = 0
        self._aru_stuck_since_ns = 0
        self._hold_cancel_sent = False
        self._last_merge_detect_ns: int | None = None
        self._last_token_rx_ns: int | None = None
        self._warned = False
        self._leave_resends = 0
        self._leave_frame = b""

    # -- accessors the runtime and cmap read -------------------------------------------------------

    @property
    def my_aru(self) -> int:
        """All received up to, in the current ring."""
        return self.store.my_aru

    @property
    def high_seq(self) -> int:
        """Highest seq received in the current ring."""
        return self.store.high_seq

    def queue_fill(self) -> float:
        """Send queue fill, 0..1 (client flow control: >= 0.75 critical)."""
        return self.sendq.fill()

    @property
    def msg_queue_avail(self) -> int:
        """Frames still free in the send queue."""
        return self.sendq.avail_frames()

    def next_deadline_ns(self) -> int | None:
        """The earliest armed timer, or None."""
        return min(self._timers.values()) if self._timers else None

    # -- helpers ---------------------------------------------------------------------------------

    def _arm(self, name: str, at_ns: int) -> None:
        self._timers[name] = at_ns

    def _cancel(self, *names: str) -> None:
        for name in names:
            self._timers.pop(name, None)

    def _ms(self, ms: int) -> int:
        return ms * _MS

    def _log(self, out: list[Action], level: str, text: str) -> None:
        out.append(LogEvent(level, text))

    def _next_member(self, members: tuple[int, ...]) -> int:
        i = members.index(self.node_id)
        return members[(i + 1) % len(members)]

    def _send_unicast_token(self, now_ns: int, dest: int, frame: bytes, out: list[Action]) -> None:
        """Send a token (ORF or commit) and keep it for resending until a newer one shows up."""
        out.append(SendFrame(dest, frame))
        self._last_sent = (dest, frame)
        self._arm(T_RETRANSMIT, now_ns + self._ms(self.cfg.token_retransmit))

    def _token_seen(self) -> None:
        """Someone after me acted on my token: stop resending it."""
        self._last_sent = None
        self._cancel(T_RETRANSMIT)

    def _reset_token_timeout(self, now_ns: int) -> None:
        self._arm(T_TOKEN, now_ns + self._ms(self.cfg.token))
        if self.cfg.token_warning and self.state == OPERATIONAL:
            self._arm(T_WARNING, now_ns + self._ms(self.cfg.token * self.cfg.token_warning // 100))
        self._warned = False

    def _forward_token(self, now_ns: int, tok: Token, members: tuple[int, ...], out: list[Action]) -> None:
        dest = self._next_member(members)
        if dest == self.node_id:
            self._self_token = tok
            return
        self._forwarded_seq = tok.seq
        self._send_unicast_token(now_ns, dest, encode_token(tok, self.node_id, self.incarnation), out)
        self.stats["orf_token_tx"] += 1
