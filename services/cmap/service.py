"""The cmap service inside a node: ``CmapService`` on the runtime's ``ServiceProcess`` (PROTOCOL.md §6).

Client requests are served exactly as by the standalone server (``server.py``, which tests and the
benchmark run without a node): icmap, the stats map, the shared read view, config reload. What the
node adds: rings to totem, so that the membership comes from configuration changes
(``runtime.members.<id>.{ip,join_count,status}``) and cmap takes part in sync (``sync.py``: every
member's ``totem.config_version`` becomes ``runtime.members.<id>.config_version``).

    python -m pycorosync.services.cmap.service     (started by the supervisor, $PYCOROSYNC_NODE set)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from pycorosync.engine.config.types import ValueType
from pycorosync.engine.runtime.service import ServiceProcess, service_main
from pycorosync.engine.totem.api import ConfigType, RingId
from pycorosync.ipc.server import ServerConnection, ServerLimits
from pycorosync.services.cmap import protocol as p
from pycorosync.services.cmap.node_stats import attach_node_stats
from pycorosync.services.cmap.server import CmapService, load_config_keys
from pycorosync.services.cmap.sync import CmapSync


class CmapProcess(ServiceProcess):
    """Service 0 of a node (see the module docstring)."""

    name = "cmap"
    service_id = p.SERVICE_ID
    server_limits = ServerLimits(max_request_bytes=ServerLimits().request_ring_bytes)

    def __init__(self, node: Any, keys: Any = None) -> None:
        super().__init__(node, keys)
        self.cmap: CmapService | None = None
        self.sync: CmapSync | None = None
        self._keep: list[Any] = []

    # -- life --------------------------------------------------------------------------------------
    def exec_init(self) -> None:
        typed = load_config_keys(self.node.config, self.nodeid)
        cmap = CmapService(typed, self.nodeid, self.node.config)
        try:
            cmap.open_view()
        except OSError as exc:
            self.log.warning("cmap view unavailable, every get is a request: %s", exc)
        cmap.table_link, self._keep = attach_node_stats(cmap.stats, self.node)
        version = 0
        if "totem.config_version" in cmap.icmap:
            version = int(cmap.icmap.get("totem.config_version")[1])
        self.cmap = cmap
        self.sync = CmapSync(self.nodeid, version)
        self._beat()

    def run(self, on_ready: Callable[[], object] | None = None, stop_fd: int | None = None) -> int:
        """As the base, with cmap's access list (``uidgid.*``) on the IPC server before any client is read."""

        def ready() -> None:
            assert self.server is not None and self.cmap is not None
            self.server.access = self.cmap.access_policy()
            self.cmap.server = self.server
            if on_ready is not None:
                on_ready()

        return super().run(ready, stop_fd)

    def exec_exit(self) -> None:
        if self.cmap is not None:
            self.cmap.close_view()
            self.cmap.table_link = None
        for obj in self._keep:
            with contextlib.suppress(Exception):
                obj.close()
        self._keep = []

    def housekeeping(self) -> None:
        """From the loop's tick (SERVER_TICK_S, within view.HEARTBEAT_INTERVAL_NS): the read view's
        heartbeat, and the stats map's poll for trackers (corosync polls every 1.5 s)."""
        self._beat()
        self._poll_stats()

    def _beat(self) -> None:
        if self.cmap is not None and self.cmap.view is not None:
            self.cmap.view.beat()

    def _poll_stats(self) -> None:
        if self.cmap is None:
            return
        self.cmap.stats.poll()
        if self.cmap.table_link is not None:
            self.cmap.table_link.write_own_row(self.server)

    # -- clients -----------------------------------------------------------------------------------
    def lib_init(self, conn: ServerConnection) -> int | None:
        assert self.cmap is not None
        return self.cmap.on_connect(conn)

    def lib_request(self, conn: ServerConnection, rtype: int, payload: bytes) -> tuple[int, bytes] | None:
        assert self.cmap is not None
        return self.cmap.on_request(conn, rtype, payload)

    def lib_exit(self, conn: ServerConnection) -> None:
        if self.cmap is not None:
            self.cmap.on_disconnect(conn)

    # -- cluster -----------------------------------------------------------------------------------
    def confchg(self, type: ConfigType, ring_id: RingId, members: tuple[int, ...], left: tuple[int, ...],
                joined: tuple[int, ...]) -> None:
        if type == ConfigType.REGULAR and self.cmap is not None:
            self.cmap.members.apply(members)

    def deliver(self, sender_nodeid: int, ring_id: RingId, body: bytes) -> None:
        if self.sync is not None:
            bad = self.sync.bad_messages
            self.sync.on_deliver(sender_nodeid, ring_id, body)
            if self.sync.bad_messages != bad and bad == 0:
                self.log.error("dropped a malformed cmap message from node %d (further ones are not logged)",
                               sender_nodeid)

    def sync_init(self, ring_id: RingId, members: tuple[int, ...], transitional: tuple[int, ...]) -> None:
        if self.sync is not None:
            self.sync.init(ring_id, members)

    def sync_process(self) -> bool:
        if self.sync is None or self.sync.ring_id is None:
            return True
        if not self.sync.sent:
            if not self.mcast(self.sync.message()):
                return False  # submit ring full: called again
            self.sync.sent = True
        return True

    def sync_activate(self) -> None:
        if self.sync is None or self.cmap is None:
            return
        heard, error = self.sync.activate()
        for nodeid, version in sorted(heard.items()):
            self.cmap.icmap.set(f"runtime.members.{nodeid}.config_version", ValueType.UINT64, version,
                                internal=True)
        if error is not None:
            self.log.error("%s", error)

    def sync_abort(self) -> None:
        if self.sync is not None:
            self.sync.abort()


if __name__ == "__main__":
    from pycorosync.engine.supervisor.child import exit_process

    exit_process(service_main(CmapProcess))
