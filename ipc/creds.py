"""Who is on the other end of a client socket, and whether they may talk to a service.

corosync admits a client when the peer's uid or gid is 0, or when ``uidgid.uid.<uid>`` or
``uidgid.gid.<gid>`` is set in cmap; everyone else is refused with CS_ERR_ACCESS and the log line
"Denied connection attempt from uid:gid". pycorosync also admits its own uid, so that an
unprivileged node (tests, a user's demo) can be used by the user who started it.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable, Collection
from dataclasses import dataclass

_UCRED = struct.Struct("iII")  # struct ucred: pid_t pid, uid_t uid, gid_t gid


@dataclass(frozen=True)
class PeerCred:
    """The kernel's record of a connected peer (SO_PEERCRED): cannot be forged by the peer."""

    pid: int
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"{self.uid}:{self.gid}"


def peer_cred(sock: socket.socket) -> PeerCred:
    """SO_PEERCRED of a connected unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCred(pid=pid, uid=uid, gid=gid)


IdSource = Collection[int] | Callable[[], Collection[int]]


class AccessPolicy:
    """Decides whether a peer may connect: root, the server's own uid, or an allowed uid or gid.

    ``uids`` and ``gids`` are either fixed collections or callables returning the current ones,
    so that the cmap ``uidgid.*`` keys can change the answer at run time without rebuilding the
    server.
    """

    def __init__(self, uids: IdSource = (), gids: IdSource = (), own_uid: int | None = None) -> None:
        self._uids = uids
        self._gids = gids
        self.own_uid = os.geteuid() if own_uid is None else own_uid

    @staticmethod
    def _current(source: IdSource) -> Collection[int]:
        return source() if callable(source) else source

    def allows(self, cred: PeerCred) -> bool:
        """True if a peer with these credentials may use the service."""
        if cred.uid == 0 or cred.gid == 0 or cred.uid == self.own_uid:
            return True
        return cred.uid in self._current(self._uids) or cred.gid in self._current(self._gids)
