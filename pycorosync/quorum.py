"""``pycorosync.quorum``: the quorum client library (corosync's libquorum). See ``QuorumClient``.

    from pycorosync.quorum import QuorumClient

    with QuorumClient(run_dir=...) as q:
        if q.getquorate(): ...
        q.trackstart()                                   # CS_TRACK_CURRENT | CS_TRACK_CHANGES
        for event in q.events(timeout=1.0):              # QuorumEvent(quorate, ring_id, members), NodelistEvent
            ...
"""

from pycorosync.ipc.client import (
    CS_DISPATCH_ALL,
    CS_DISPATCH_BLOCKING,
    CS_DISPATCH_ONE,
    CS_DISPATCH_ONE_NONBLOCKING,
)
from pycorosync.ipc.errors import CsError, CsErrorCode, cs_strerror
from pycorosync.services.quorum.client import (
    AsyncQuorumClient,
    NodelistEvent,
    QuorumClient,
    QuorumClientEvent,
    QuorumEvent,
    RingId,
)
from pycorosync.services.quorum.protocol import (
    CS_TRACK_CHANGES,
    CS_TRACK_CHANGES_ONLY,
    CS_TRACK_CURRENT,
    QUORUM_FREE,
    QUORUM_SET,
)

__all__ = [
    "CS_DISPATCH_ALL",
    "CS_DISPATCH_BLOCKING",
    "CS_DISPATCH_ONE",
    "CS_DISPATCH_ONE_NONBLOCKING",
    "CS_TRACK_CHANGES",
    "CS_TRACK_CHANGES_ONLY",
    "CS_TRACK_CURRENT",
    "QUORUM_FREE",
    "QUORUM_SET",
    "AsyncQuorumClient",
    "CsError",
    "CsErrorCode",
    "NodelistEvent",
    "QuorumClient",
    "QuorumClientEvent",
    "QuorumEvent",
    "RingId",
    "cs_strerror",
]
