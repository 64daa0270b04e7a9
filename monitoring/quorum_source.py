"""Quorate and votes from the node's quorum service (service 3 + votequorum 5, ``<run_dir>/quorum.sock``).

Through the client libraries: ``pycorosync.votequorum`` (quorate, votes, expected votes, quorum) when the
node's provider is votequorum, else ``pycorosync.quorum`` (quorate only). One handle is kept open and
reopened after the service restarts; every failure gives ``None`` (the metrics are then absent, never
guessed).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from pycorosync.monitoring.reading import QuorumState

log = logging.getLogger("MON")

TIMEOUT_S = 2.0  # a busy node answers late; the tick waits, scrapes do not
_QUORATE_FLAG = 2  # VOTEQUORUM_INFO_QUORATE


def _state_from_info(info: Any) -> QuorumState:
    return QuorumState(
        quorate=bool(int(info.flags) & _QUORATE_FLAG), total_votes=int(info.total_votes),
        expected_votes=int(info.node_expected_votes), quorum=int(info.quorum), node_votes=int(info.node_votes),
    )


class _Votequorum:
    """``votequorum_getinfo`` of this node (the node's quorum.provider is corosync_votequorum)."""

    def __init__(self, run_dir: str) -> None:
        from pycorosync.votequorum import VotequorumClient

        self.handle = VotequorumClient(run_dir, timeout=TIMEOUT_S)

    def read(self) -> QuorumState:
        return _state_from_info(self.handle.getinfo(0))

    def close(self) -> None:
        self.handle.close()


class _Quorum:
    """``quorum_getquorate`` alone (another provider, or none: QUORUM_FREE is always quorate)."""

    def __init__(self, run_dir: str) -> None:
        from pycorosync.quorum import QuorumClient

        self.handle = QuorumClient(run_dir, timeout=TIMEOUT_S)

    def read(self) -> QuorumState:
        return QuorumState(quorate=bool(self.handle.getquorate()))

    def close(self) -> None:
        self.handle.close()


def _open(run_dir: str) -> Any:
    from pycorosync.ipc.errors import CsError

    try:
        return _Votequorum(run_dir)
    except CsError:  # not the votequorum provider (or no service: then the quorum API fails too)
        return _Quorum(run_dir)


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
