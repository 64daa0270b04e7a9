"""The public surface of the pure Totem SRP core: what goes in, what comes out.

The core (``pycorosync.engine.totem.core.TotemCore``) is a sans-IO state machine. Its
driver (the runtime process, the simulator in ``tests/sim``, or a test) owns the clock,
the network and the timers:

    core = TotemCore(config, node_id=1, nodelist=[1, 2, 3], seed=7, ring_seq=last_seq)
    actions = core.start(now_ns)                 # begins GATHER
    actions = core.on_frame(now_ns, data)        # a frame from the network (any bytes)
    actions = core.on_timer(now_ns)              # called at or after next_deadline_ns()
    actions = core.submit(now_ns, payload, Guarantee.AGREED)   # raises QueueFull
    actions = core.leave(now_ns)                 # clean leave: peers reconfigure at once
    deadline = core.next_deadline_ns()           # None = no timer armed

Every call returns a list of frozen actions, to be carried out in order:
  SendFrame(dest, data): unicast to a node id, or multicast to all (dest is None).
  Deliver(...): a message in total order. ConfigChange(...): a transitional or regular
  configuration. Each Deliver carries the ring id of the configuration it was delivered in.

Rules the driver may rely on: the core never raises on any frame content; it never reads
a clock; with the same seed, the same calls give the same actions.

Details of the implementation (``core.TotemCore``, ``config.TotemConfig``, wire format in ``wire.py``):

- ``SendFrame(None, data)`` is a multicast to the nodelist; a copy looped back to the sender is ignored.
- A configuration change is always TRANSITIONAL then REGULAR, both with the NEW ring id. TRANSITIONAL:
  ``members`` = the nodes that come from my previous regular ring, ``left`` = the rest of that ring,
  ``joined`` = (). REGULAR: ``joined`` = new members that did not come from my ring, ``left`` = ().
  A node that restarted (another incarnation) is both in ``left`` and, once back, in ``joined``.
  Before its first ring, a node counts as a one-node configuration of itself.
- ``Deliver.ring_id``: the regular ring it was delivered in; messages of the old ring delivered after
  the TRANSITIONAL change carry the new ring id (the transitional configuration's).
- ``Deliver.guarantee`` is the submitted value. SAFE really waits until every member holds the message.
- ``submit`` raises QueueFull when the send queue (corosync's 4 MiB of frames by default) cannot take
  the whole message; one message bigger than the bound is accepted when the queue is empty. After
  ``leave`` every submit raises QueueFull.
- Accessors: ``state`` ("GATHER", "COMMIT", "RECOVERY", "OPERATIONAL", "LEFT"), ``ring_id``,
  ``members``, ``my_aru``, ``high_seq``, ``max_ring_seq`` (what to persist as corosync's ringid file),
  ``stats`` (``stats.srp.*`` names), ``queue_fill()``, ``msg_queue_avail``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class Guarantee(enum.IntEnum):
    """Delivery guarantee (cpg_guarantee_t values). UNORDERED and FIFO are delivered as AGREED."""

    UNORDERED = 0
    FIFO = 1
    AGREED = 2
    SAFE = 3


class ConfigType(enum.IntEnum):
    """TOTEM_CONFIGURATION_REGULAR 0 / TRANSITIONAL 1, as corosync numbers them."""

    REGULAR = 0
    TRANSITIONAL = 1


@dataclass(frozen=True, order=True)
class RingId:
    """(representative node id, ring sequence); printed as corosync does, hex ``rep.seq``."""

    rep: int
    seq: int

    def __str__(self) -> str:
        return f"{self.rep:x}.{self.seq:x}"


@dataclass(frozen=True)
class SendFrame:
    """Send ``data`` to node ``dest``, or to every node of the nodelist when ``dest`` is None."""

    dest: int | None
    data: bytes


@dataclass(frozen=True)
class SendRun:
    """Send to every node the ``count`` frames from seq ``first`` on of ring ``ring_key`` that the
    driver's frame writer (``TotemCore.frame_writer``) made and keeps (``RingStore.slab``): one action
    for a run of middle pieces of a large message."""

    ring_key: tuple[int, int]
    first: int
    count: int


@dataclass(frozen=True)
class Deliver:
    """A message delivered in total order within configuration ``ring_id``.

    ``sender`` is the node id that submitted it, ``msg_id`` that sender's per-incarnation
    submit counter (unique per (sender, incarnation)), ``payload`` the whole message.
    """

    ring_id: RingId
    sender: int
    msg_id: int
    guarantee: Guarantee
    payload: bytes


@dataclass(frozen=True)
class DeliverFrame:
    """Every message of one frame, each whole, delivered in entry order within configuration ``ring_id``.

    The core gives this instead of one ``Deliver`` per message when its ``frame_delivery`` is set (the
    totem process sets it), so that the messages can be handed on without an object each. ``frame`` is
    the received ``wire.Mcast``: ``data`` its bytes (the first entry at ``wire.MCAST_HEADER_BYTES``),
    ``count`` its number of entries, ``entries`` the decoded entries (kind, guarantee, msg_id, payload,
    total; made on first use), ``messages()`` the ``Deliver`` actions they stand for.
    """

    ring_id: RingId
    sender: int
    frame: Any

    @property
    def data(self) -> bytes:
        return bytes(self.frame.raw)

    @property
    def count(self) -> int:
        return int(self.frame.count)

    @property
    def entries(self) -> tuple[tuple[int, int, int, bytes, int], ...]:
        return tuple(self.frame.entries)

    def messages(self) -> list[Deliver]:
        return [Deliver(self.ring_id, self.sender, e[2], Guarantee(e[1]), e[3]) for e in self.entries]


@dataclass(frozen=True)
class ConfigChange:
    """A configuration change (EVS): TRANSITIONAL first, then REGULAR, at every member.

    ``members`` is the configuration after the change, sorted by node id; ``left`` and
    ``joined`` are relative to the previous regular configuration.
    """

    type: ConfigType
    ring_id: RingId
    members: tuple[int, ...]
    left: tuple[int, ...]
    joined: tuple[int, ...]


@dataclass(frozen=True)
class LogEvent:
    """A line the runtime logs under the TOTEM subsystem (corosync's wording where it has one)."""

    level: str  # "debug" | "info" | "notice" | "warning" | "error"
    text: str


Action = SendFrame | SendRun | Deliver | DeliverFrame | ConfigChange | LogEvent


class QueueFull(Exception):
    """The send queue cannot take the message now (CS_ERR_TRY_AGAIN); nothing was queued."""


class MessageTooBig(Exception):
    """The message exceeds the configured maximum (CS_ERR_TOO_BIG); nothing was queued."""
