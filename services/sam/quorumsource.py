"""Where SAM's QUORUM policy learns whether this node is quorate.

The supervisor needs three things: the current state, a file descriptor that becomes readable when it
may have changed, and a call that reads the change. ``QuorumSource`` is that; tests inject their own,
and ``client_quorum_source`` wraps the quorum service's client library (``pycorosync.quorum``).
"""

from __future__ import annotations

from typing import Any, Protocol

from pycorosync.ipc.errors import CS_ERR_LIBRARY, CsError


class QuorumSource(Protocol):
    """What SAM's supervisor reads quorum from (see the module docstring)."""

    @property
    def quorate(self) -> bool:
        """True while this node is part of a quorate partition."""
        ...

    def fileno(self) -> int:
        """Readable when ``dispatch`` has something to read (a change, or the source lost)."""
        ...

    def dispatch(self) -> None:
        """Reads pending changes into ``quorate``; raises CsError when the source is lost."""
        ...

    def close(self) -> None:
        """Releases the source (also called in a forked child, where it must not disturb the parent's copy)."""
        ...


class ClientQuorumSource:
    """``QuorumSource`` over ``pycorosync.quorum.QuorumClient``: getquorate once, then tracked changes.

    Raises CsError from the client when the quorum service cannot be reached.
    """

    def __init__(self, run_dir: str | None = None, timeout: float = 10.0) -> None:
        from pycorosync import quorum as quorum_lib

        self._client: Any = quorum_lib.QuorumClient(run_dir, notify=self._on_notify, timeout=timeout)
        try:
            self._quorate = bool(self._client.getquorate())
            self._client.trackstart(quorum_lib.CS_TRACK_CHANGES)
        except BaseException:
            self._client.close()
            raise

    def _on_notify(self, event: Any) -> None:
        self._quorate = bool(event.quorate)

    @property
    def quorate(self) -> bool:
        return self._quorate

    def fileno(self) -> int:
        return int(self._client.fileno())

    def dispatch(self) -> None:
        from pycorosync.ipc.client import CS_DISPATCH_ALL

        try:
            self._client.dispatch(CS_DISPATCH_ALL)
        except CsError:
            self._quorate = False
            raise
        # DISPATCH_ALL reads what waits and never reports a hang-up; without this check a dead service's
        # ever-readable fd would spin the supervisor's loop
        conn = getattr(self._client, "_conn", None)
        if conn is not None:
            conn.wait_event(0)
            if conn.server_gone:
                self._quorate = False
                raise CsError(CS_ERR_LIBRARY, "the quorum service hung up")

    def close(self) -> None:
        self._client.close()
