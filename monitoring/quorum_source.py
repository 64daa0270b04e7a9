"""Quorate and votes from the node's quorum service (service 3 + votequorum 5, ``<run_dir>/quorum.sock``).

The client libraries (``pycorosync.votequorum``, ``pycorosync.quorum``) are used when the build has them;
otherwise the service's own wire protocol (``services/quorum/protocol.py``) is spoken over a plain IPC
connection. One connection is kept open and reopened after the service restarts; every failure gives
``None`` (the ``quorate`` metric is then absent, never guessed).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from pycorosync.monitoring.reading import QuorumState

log = logging.getLogger("MON")

TIMEOUT_S = 0.5
_QUORATE_FLAG = 2  # VOTEQUORUM_INFO_QUORATE


def _state_from_info(info: Any) -> QuorumState:
    return QuorumState(
        quorate=bool(int(info.flags) & _QUORATE_FLAG), total_votes=int(info.total_votes),
        expected_votes=int(info.node_expected_votes), quorum=int(info.quorum), node_votes=int(info.node_votes),
    )


class _Wire:
    """The quorum service's protocol on one IPC connection (votequorum getinfo; quorum getquorate if
    the node's provider is not votequorum)."""

    def __init__(self, run_dir: str) -> None:
        from pycorosync.ipc.client import connect
        from pycorosync.ipc.errors import CsError
        from pycorosync.services.quorum import protocol as p

        self.p = p
        self.conn = connect(run_dir, p.SERVICE_NAME, timeout=TIMEOUT_S)
        try:
            self.conn.call(p.Msg.VQ_INITIALIZE, b"", timeout=TIMEOUT_S)
            self.votequorum = True
        except CsError:  # no votequorum provider: the quorum API alone
            self.conn.close()
            self.conn = connect(run_dir, p.SERVICE_NAME, timeout=TIMEOUT_S)
            self.conn.call(p.Msg.Q_INITIALIZE, b"", timeout=TIMEOUT_S)
            self.votequorum = False

    def read(self) -> QuorumState:
        p = self.p
        if self.votequorum:
            body = self.conn.call(p.Msg.VQ_GETINFO, p.encode_u32(0), timeout=TIMEOUT_S)
            return _state_from_info(p.decode_info(body))
        body = self.conn.call(p.Msg.Q_GETQUORATE, b"", timeout=TIMEOUT_S)
        return QuorumState(quorate=bool(p.decode_u32(body, "quorate")))

    def close(self) -> None:
        self.conn.close()


class _Client:
    """The votequorum client library, when this build has it."""

    def __init__(self, run_dir: str) -> None:
        import pycorosync.votequorum as vq

        self.handle = vq.VotequorumClient(run_dir)

    def read(self) -> QuorumState:
        return _state_from_info(self.handle.getinfo(0))

    def close(self) -> None:
        self.handle.close()


def _open(run_dir: str) -> Any:
    try:
        return _Client(run_dir)
    except (ImportError, AttributeError):
        return _Wire(run_dir)


class QuorumSource:
    """This node's quorum state, or None while the service cannot be asked."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self._handle: Any = None
        self._logged = False

    def read(self) -> QuorumState | None:
        for _attempt in range(2):  # a handle left by a restarted service fails once, then is reopened
            try:
                if self._handle is None:
                    self._handle = _open(self.run_dir)
                state: QuorumState = self._handle.read()
                return state
            except Exception as exc:  # absent service, restart, old build: the metric is left out
                if not self._logged:
                    self._logged = True
                    log.info("quorum service not readable (yet): %s", exc)
                self.close()
        return None

    def close(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(Exception):
                self._handle.close()
            self._handle = None
