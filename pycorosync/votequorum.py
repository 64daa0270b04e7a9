"""``pycorosync.votequorum``: the votequorum client library (corosync's libvotequorum). See ``VotequorumClient``.

    from pycorosync.votequorum import VotequorumClient

    with VotequorumClient(run_dir=...) as vq:
        info = vq.getinfo()              # VoteInfo: node_votes, node_expected_votes, total_votes, quorum, flags...
        vq.setexpected(5)
        vq.trackstart(context=1)         # VotequorumEvent, VotequorumNodelistEvent, ExpectedVotesEvent
        for event in vq.events(timeout=1.0): ...

Quorum devices (qdevice_*) are not supported: those calls raise CsError(CS_ERR_NOT_SUPPORTED).
"""

from pycorosync.ipc.client import (
    CS_DISPATCH_ALL,
    CS_DISPATCH_BLOCKING,
    CS_DISPATCH_ONE,
    CS_DISPATCH_ONE_NONBLOCKING,
)
from pycorosync.ipc.errors import CsError, CsErrorCode, cs_strerror
from pycorosync.services.quorum.client import (
    AsyncVotequorumClient,
    ExpectedVotesEvent,
    RingId,
    VotequorumClient,
    VotequorumClientEvent,
    VotequorumEvent,
    VotequorumNodelistEvent,
)
from pycorosync.services.quorum.protocol import CS_TRACK_CHANGES, CS_TRACK_CHANGES_ONLY, CS_TRACK_CURRENT
from pycorosync.services.quorum.votequorum import InfoFlag, NodeState, VoteInfo

VOTEQUORUM_INFO_TWONODE = InfoFlag.TWONODE
VOTEQUORUM_INFO_QUORATE = InfoFlag.QUORATE
VOTEQUORUM_INFO_WAIT_FOR_ALL = InfoFlag.WAIT_FOR_ALL
VOTEQUORUM_INFO_LAST_MAN_STANDING = InfoFlag.LAST_MAN_STANDING
VOTEQUORUM_INFO_AUTO_TIE_BREAKER = InfoFlag.AUTO_TIE_BREAKER
VOTEQUORUM_INFO_ALLOW_DOWNSCALE = InfoFlag.ALLOW_DOWNSCALE
VOTEQUORUM_INFO_QDEVICE_REGISTERED = InfoFlag.QDEVICE_REGISTERED
VOTEQUORUM_NODESTATE_MEMBER = NodeState.MEMBER
VOTEQUORUM_NODESTATE_DEAD = NodeState.DEAD
VOTEQUORUM_NODESTATE_LEAVING = NodeState.LEAVING

__all__ = [
    "CS_DISPATCH_ALL",
    "CS_DISPATCH_BLOCKING",
    "CS_DISPATCH_ONE",
    "CS_DISPATCH_ONE_NONBLOCKING",
    "CS_TRACK_CHANGES",
    "CS_TRACK_CHANGES_ONLY",
    "CS_TRACK_CURRENT",
    "VOTEQUORUM_INFO_ALLOW_DOWNSCALE",
    "VOTEQUORUM_INFO_AUTO_TIE_BREAKER",
    "VOTEQUORUM_INFO_LAST_MAN_STANDING",
    "VOTEQUORUM_INFO_QDEVICE_REGISTERED",
    "VOTEQUORUM_INFO_QUORATE",
    "VOTEQUORUM_INFO_TWONODE",
    "VOTEQUORUM_INFO_WAIT_FOR_ALL",
    "VOTEQUORUM_NODESTATE_DEAD",
    "VOTEQUORUM_NODESTATE_LEAVING",
    "VOTEQUORUM_NODESTATE_MEMBER",
    "AsyncVotequorumClient",
    "CsError",
    "CsErrorCode",
    "ExpectedVotesEvent",
    "InfoFlag",
    "NodeState",
    "RingId",
    "VoteInfo",
    "VotequorumClient",
    "VotequorumClientEvent",
    "VotequorumEvent",
    "VotequorumNodelistEvent",
    "cs_strerror",
]
