"""Runtime keys a service owns in cmap, kept there across cmap service restarts.

icmap lives in the cmap process's memory: when the supervisor restarts cmap, every key other
processes wrote (``runtime.votequorum.*``, ``resources.process.*``, ``runtime.members.*``) is gone.
A ``CmapPublisher`` remembers what its owner published and writes it all again on the first call
after the service came back.

    pub = CmapPublisher(run_dir)
    pub.publish("runtime.votequorum.this_node_id", 1, ValueType.UINT32)
    pub.withdraw("resources.process.1234.state")
    ...
    pub.resync()        # e.g. from a timer: reconnects and re-publishes when cmap was restarted

A call made while the service is down keeps the change and returns False; nothing raises for a
missing service. Errors of the key itself (CS_ERR_ACCESS, CS_ERR_INVALID_PARAM...) do raise.
"""

from __future__ import annotations

import logging

from pycorosync.engine.config.types import Value, ValueType
from pycorosync.ipc.errors import CS_ERR_LIBRARY, CS_ERR_NOT_EXIST, CS_ERR_TIMEOUT, CS_ERR_TRY_AGAIN, CsError
from pycorosync.services.cmap.client import CmapClient, infer_type

log = logging.getLogger("CMAP")

_UNAVAILABLE = frozenset({int(CS_ERR_LIBRARY), int(CS_ERR_TRY_AGAIN), int(CS_ERR_TIMEOUT)})


class CmapPublisher:
    """Owns a set of cmap keys on behalf of one service process (see the module docstring).

    ``engine=True`` for keys under read-only prefixes (``runtime.services.``...), which only the
    node's own processes may write.
    """

    def __init__(self, run_dir: str | None = None, *, engine: bool = False, timeout: float = 5.0) -> None:
        self.run_dir = run_dir
        self.engine = engine
        self.timeout = timeout
        self.owned: dict[str, tuple[Value, ValueType]] = {}
        self._withdrawn: set[str] = set()
        self._client: CmapClient | None = None
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        """True while a connection to the cmap service is open."""
        return self._client is not None

    def _connect(self) -> CmapClient | None:
        if self._client is not None:
            return self._client
        try:
            self._client = CmapClient(self.run_dir, engine=self.engine, timeout=self.timeout)
        except CsError as exc:
            if exc.code in _UNAVAILABLE:
                return None
            raise
        self.reconnects += 1
        try:
            for key, (value, vtype) in sorted(self.owned.items()):
                self._client.set(key, value, vtype)
            for key in sorted(self._withdrawn):
                self._delete(self._client, key)
            self._withdrawn.clear()
        except CsError as exc:
            self._lost(exc)
            return None
        return self._client

    @staticmethod
    def _delete(client: CmapClient, key: str) -> None:
        try:
            client.delete(key)
        except CsError as exc:
            if exc.code != CS_ERR_NOT_EXIST:
                raise

    def _lost(self, exc: CsError) -> None:
        if exc.code not in _UNAVAILABLE:
            raise exc
        log.info("cmap service unavailable (%s); keys will be published again when it is back", exc.name)
        if self._client is not None:
            self._client.close()
            self._client = None

    def publish(self, key: str, value: Value, vtype: ValueType | int | None = None) -> bool:
        """Sets ``key`` now if cmap is there (True), and again after every cmap restart."""
        vt = infer_type(value, vtype)
        self.owned[key] = (value, vt)
        self._withdrawn.discard(key)
        had_client = self._client is not None
        client = self._connect()
        if client is None:
            return False
        if not had_client:
            return True  # _connect just wrote every owned key, this one included
        try:
            client.set(key, value, vt)
        except CsError as exc:
            self._lost(exc)
            return False
        return True

    def withdraw(self, key: str) -> bool:
        """Deletes ``key`` and stops owning it; False if cmap is away (the delete happens on reconnect)."""
        self.owned.pop(key, None)
        self._withdrawn.add(key)
        client = self._connect()
        if client is None:
            return False
        try:
            self._delete(client, key)
        except CsError as exc:
            self._lost(exc)
            return False
        self._withdrawn.discard(key)
        return True

    def withdraw_prefix(self, prefix: str) -> bool:
        """``withdraw`` for every owned key under ``prefix``."""
        ok = True
        for key in [k for k in self.owned if k.startswith(prefix)]:
            ok = self.withdraw(key) and ok
        return ok

    def resync(self) -> bool:
        """Checks the connection; after a cmap restart reconnects and publishes every owned key again.

        True when cmap holds this publisher's keys now.
        """
        if self._client is not None and not self._client.service_alive():
            self._lost(CsError(CS_ERR_LIBRARY, "cmap service hung up"))
        return self._connect() is not None

    def close(self, withdraw: bool = False) -> None:
        """Closes the connection; ``withdraw=True`` deletes the owned keys first (clean shutdown)."""
        if withdraw:
            for key in list(self.owned):
                self.withdraw(key)
        if self._client is not None:
            self._client.close()
            self._client = None
