"""``testecho`` (service id 200): a test service that multicasts its clients' payloads and hands every
delivered one back to all its clients. Never part of a production node: the cluster tests ask for it
with ``PYCOROSYNC_TEST_SERVICES=testecho``.

Requests (responses framed with ``ipc.framing``):
    MCAST   ``u8 guarantee`` + body -> CS_OK, or CS_ERR_TRY_AGAIN (submit ring full, or sync running)
    STATUS  -> JSON: ring_id, members, synced, delivered, sync (every sync hook seen, in order)
Events (to every client):
    DELIVERED  ``u32 sender | u32 rep | u64 seq`` + body
    CONFCHG    JSON {"type", "ring_id", "members", "left", "joined"}
    SYNC       JSON {"event": init|activate|abort|complete, "ring_id"}

``PYCOROSYNC_TESTECHO_DELAY_MS`` makes it sleep that long per delivered message (a slow service, to
test back-pressure).
"""

from __future__ import annotations

import json
import os
import struct
import time

from pycorosync.engine.runtime.service import ServiceProcess, service_main
from pycorosync.engine.totem.api import ConfigType, RingId
from pycorosync.ipc.errors import CS_ERR_INVALID_PARAM, CS_ERR_TRY_AGAIN, CS_OK
from pycorosync.ipc.framing import encode_response
from pycorosync.ipc.server import ServerConnection, ServerLimits

MCAST = 1
STATUS = 2
EV_DELIVERED = 100
EV_CONFCHG = 101
EV_SYNC = 102
DELAY_ENV = "PYCOROSYNC_TESTECHO_DELAY_MS"
DELIVERED_HEADER = struct.Struct("<IIQ")
_BIG = 64 << 20


def _ring(ring_id: RingId | None) -> list[int] | None:
    return None if ring_id is None else [ring_id.rep, ring_id.seq]


class TestEchoService(ServiceProcess):
    """See the module docstring."""

    name = "testecho"
    service_id = 200
    server_limits = ServerLimits(request_ring_bytes=_BIG, response_ring_bytes=1 << 20, event_ring_bytes=_BIG,
                                 max_request_bytes=(_BIG // 2) - 64, backlog_bytes=256 << 20)

    def exec_init(self) -> None:
        self.delivered = 0
        self.sync_events: list[tuple[str, list[int] | None]] = []
        self.sync_ring: RingId | None = None
        self.delay_s = float(os.environ.get(DELAY_ENV, "0") or 0) / 1000

    def _broadcast(self, rtype: int, payload: bytes) -> None:
        if self.server is not None:
            for conn in list(self.server):
                conn.send_event(rtype, payload)

    def lib_request(self, conn: ServerConnection, rtype: int, payload: bytes) -> tuple[int, bytes] | None:
        if rtype == MCAST and payload:
            if not self.synced:
                return rtype, encode_response(CS_ERR_TRY_AGAIN)
            ok = self.mcast(payload[1:], payload[0] & 3)
            return rtype, encode_response(CS_OK if ok else CS_ERR_TRY_AGAIN)
        if rtype == STATUS:
            body = {"nodeid": self.nodeid, "ring_id": _ring(self.ring_id), "members": list(self.members),
                    "synced": self.synced, "delivered": self.delivered, "sync": self.sync_events}
            return rtype, encode_response(CS_OK, json.dumps(body).encode())
        return rtype, encode_response(CS_ERR_INVALID_PARAM)

    def deliver(self, sender_nodeid: int, ring_id: RingId, body: bytes) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)  # test-only slowness: the point is to be slow
        self.delivered += 1
        self._broadcast(EV_DELIVERED, DELIVERED_HEADER.pack(sender_nodeid, ring_id.rep, ring_id.seq) + body)

    def confchg(self, type: ConfigType, ring_id: RingId, members: tuple[int, ...], left: tuple[int, ...],
                joined: tuple[int, ...]) -> None:
        self._broadcast(EV_CONFCHG, json.dumps({
            "type": "regular" if type == ConfigType.REGULAR else "transitional", "ring_id": _ring(ring_id),
            "members": list(members), "left": list(left), "joined": list(joined)}).encode())

    def _sync_event(self, event: str, ring_id: RingId | None) -> None:
        self.sync_events.append((event, _ring(ring_id)))
        del self.sync_events[:-64]
        self._broadcast(EV_SYNC, json.dumps({"event": event, "ring_id": _ring(ring_id)}).encode())

    def sync_init(self, ring_id: RingId, members: tuple[int, ...], transitional: tuple[int, ...]) -> None:
        self.sync_ring = ring_id
        self._sync_event("init", ring_id)

    def sync_activate(self) -> None:
        self._sync_event("activate", self.ring_id)

    def sync_abort(self) -> None:
        self._sync_event("abort", self.sync_ring)

    def sync_complete(self) -> None:
        self._sync_event("complete", self.ring_id)


if __name__ == "__main__":
    from pycorosync.engine.supervisor.child import exit_process

    exit_process(service_main(TestEchoService))
