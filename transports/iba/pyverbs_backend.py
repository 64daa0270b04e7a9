"""The real verbs backend on pyverbs (rdma-core): rdma_cm connections, RC queue pairs, MRs over caller memory.

NOT TESTED ON HARDWARE: no machine of this project has an RDMA device (PROTOTYPES.md §4). The code follows
pyverbs' documented API for rdma-core 56 (``pip install pycorosync[iba]`` pins ``pyverbs==56.0rc1``);
transports/iba/README.md says how to run ``tests/unit/test_iba_backend.py -m hardware`` on a host with
rdma_rxe or an HCA. Everything above this module is tested on the fake backend.

How it maps the interface (transports/iba/verbs.py):

* One CM event channel per connecting rdma_cm id, because pyverbs' ``CMEvent`` does not say which id an
  event is for. Accepted ids report on the listener's channel (pyverbs binds no ``rdma_migrate_id``):
  their ESTABLISHED events come in accept order, and their DISCONNECTED cannot be attributed, so such a
  link goes down on its first error completion (RC retry exhausted, or flushed) instead. Neither ``CMEventChannel`` nor ``CompChannel`` exposes its file descriptor, so each is found as the
  descriptor that appeared in ``/proc/self/fd`` when it was created, and set non-blocking (then
  ``rdma_get_cm_event``/``ibv_get_cq_event`` return EAGAIN instead of blocking). ``cm_fd`` is an epoll
  set of every channel's descriptor.
* QPs are "external" QPs (``pyverbs.qp.QP`` on the listener's PD and the shared CQ), moved through
  INIT/RTR/RTS with ``CMID.init_qp_attr``; ``ConnParam(qp_num=...)`` tells rdma_cm which QP is used.
  RC, ``rnr_retry=7`` (retry forever: credits make RNR a bug, never a drop).
* ``reg_mr`` registers the caller's memory in place (``MR(pd, length, access, address=...)``): the tx
  ring region, the header slab and the receive buffers, so frames go out of the ring without a copy.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import select
import socket
from collections.abc import Callable, Sequence
from typing import Any

from pycorosync.transports.iba.verbs import (
    CmEvent,
    CmEventType,
    Completion,
    QpState,
    Sge,
    VerbsError,
    WcOpcode,
    WcStatus,
)

CM_TIMEOUT_MS = 2000


def _new_fd(make: Callable[[], Any], what: str) -> tuple[Any, int]:
    """Calls ``make()`` and returns (object, the descriptor it opened), set non-blocking."""
    before = set(os.listdir("/proc/self/fd"))
    obj = make()
    fresh = [int(f) for f in set(os.listdir("/proc/self/fd")) - before]
    if len(fresh) != 1:
        raise VerbsError(f"cannot find the descriptor of the new {what} ({len(fresh)} new descriptors)")
    fd = fresh[0]
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    return obj, fd


class PyverbsMemoryRegion:
    """An MR over caller memory (the array must outlive it)."""

    def __init__(self, pd: Any, array: Any) -> None:
        from pyverbs import enums as e
        from pyverbs.mr import MR

        self.array = array
        self.addr = int(array.ctypes.data)
        self.length = int(array.nbytes)
        self._mr = MR(pd, self.length, e.IBV_ACCESS_LOCAL_WRITE, address=self.addr)
        self.lkey = int(self._mr.lkey)

    def close(self) -> None:
        if self._mr is not None:
            self._mr.close()
            self._mr = None


class PyverbsConnection:
    """An rdma_cm id with its own event channel and an external RC QP."""

    def __init__(self, endpoint: PyverbsEndpoint, cmid: Any, channel: Any, channel_fd: int, active: bool) -> None:
        """``channel`` None / ``channel_fd`` -1: an accepted id, whose events come on the listener's channel."""
        self.endpoint = endpoint
        self.cmid = cmid
        self.channel = channel
        self.channel_fd = channel_fd
        self.active = active
        self.qp: Any = None
        self.qp_num = 0
        self._state = QpState.RESET
        self._early_recvs: list[tuple[int, Sge]] = []  # posted before the QP could reach INIT

    @property
    def state(self) -> QpState:
        return self._state

    def create_qp(self) -> None:
        from pyverbs import enums as e
        from pyverbs.qp import QP, QPCap, QPInitAttr

        ep = self.endpoint
        cap = QPCap(max_send_wr=ep.send_depth, max_recv_wr=ep.recv_depth, max_send_sge=ep.max_send_sge,
                    max_recv_sge=1)
        attr = QPInitAttr(qp_type=e.IBV_QPT_RC, scq=ep.cq, rcq=ep.cq, cap=cap, sq_sig_all=1)
        self.qp = QP(ep.pd, attr)
        self.qp_num = int(self.qp.qp_num)
        self.modify(QpState.INIT)
        for wr_id, sge in self._early_recvs:
            self.post_recv(wr_id, sge)
        self._early_recvs.clear()

    def modify(self, new: QpState) -> None:
        from pyverbs import enums as e

        if new == QpState.ERR:
            with contextlib.suppress(Exception):
                attr, _mask = self.cmid.init_qp_attr(e.IBV_QPS_INIT)
                attr.qp_state = e.IBV_QPS_ERR
                self.qp.modify(attr, e.IBV_QP_STATE)
            self._state = QpState.ERR
            return
        target = {QpState.INIT: e.IBV_QPS_INIT, QpState.RTR: e.IBV_QPS_RTR, QpState.RTS: e.IBV_QPS_RTS}[new]
        attr, mask = self.cmid.init_qp_attr(target)
        if new == QpState.RTS:
            attr.rnr_retry = 7
        self.qp.modify(attr, mask)
        self._state = new

    def post_send(self, wr_id: int, sges: Sequence[Sge], imm: int) -> None:
        from pyverbs import enums as e
        from pyverbs.wr import SGE, SendWR

        sg = [SGE(s.addr, s.length, s.lkey) for s in sges]
        wr = SendWR(wr_id=wr_id, opcode=e.IBV_WR_SEND_WITH_IMM, num_sge=len(sg), sg=sg or None,
                    send_flags=e.IBV_SEND_SIGNALED)
        wr.imm_data = socket.htonl(imm & 0xFFFFFFFF)  # immediate data travels in network order
        try:
            self.qp.post_send(wr)
        except Exception as exc:  # PyverbsRDMAError: ENOMEM (queue full), EINVAL (state)
            raise VerbsError(f"ibv_post_send on QP {self.qp_num}: {exc}") from None

    def post_recv(self, wr_id: int, sge: Sge) -> None:
        from pyverbs.wr import SGE, RecvWR

        if self.qp is None:
            self._early_recvs.append((wr_id, sge))
            return
        try:
            self.qp.post_recv(RecvWR(wr_id=wr_id, num_sge=1, sg=[SGE(sge.addr, sge.length, sge.lkey)]))
        except Exception as exc:
            raise VerbsError(f"ibv_post_recv on QP {self.qp_num}: {exc}") from None

    def disconnect(self) -> None:
        with contextlib.suppress(Exception):
            self.cmid.disconnect()
        if self.qp is not None:
            self.modify(QpState.ERR)

    def close(self) -> None:
        self.endpoint._forget(self)
        for obj in (self.qp, self.cmid, self.channel):
            if obj is not None:
                with contextlib.suppress(Exception):
                    obj.close()
        self.qp = None
        self._state = QpState.RESET


class PyverbsEndpoint:
    """The listening id on the local IPoIB address, its device's PD, one CQ with a completion channel."""

    def __init__(self, local_addr: str, port: int, send_depth: int, recv_depth: int, cq_depth: int,
                 max_send_sge: int) -> None:
        from pyverbs import cm_enums as ce
        from pyverbs.cmid import CMID, AddrInfo, CMEventChannel
        from pyverbs.cq import CQ, CompChannel

        self.send_depth = send_depth
        self.recv_depth = recv_depth
        self.max_send_sge = max_send_sge
        self.local_addr = local_addr
        self._cm_ep = select.epoll()
        self.cm_fd = self._cm_ep.fileno()
        self._conns: dict[int, PyverbsConnection] = {}  # channel fd -> connection (the listener too)
        self._pending: collections.deque[CmEvent] = collections.deque()
        self._accepting: collections.deque[PyverbsConnection] = collections.deque()
        channel, fd = _new_fd(CMEventChannel, "rdma_cm event channel")
        self.listener = PyverbsConnection(self, CMID(creator=channel, port_space=ce.RDMA_PS_TCP), channel, fd, False)
        try:
            info = AddrInfo(src=local_addr, src_service=str(port), port_space=ce.RDMA_PS_TCP, flags=ce.RAI_PASSIVE)
            self.listener.cmid.bind_addr(info)
            self.listener.cmid.listen(64)
        except Exception as exc:
            raise VerbsError(f"rdma_cm cannot listen on {local_addr} port {port}: {exc}") from None
        self._watch(self.listener)
        self.ctx = self.listener.cmid.context
        self.pd = self.listener.cmid.pd
        self.comp_channel, self.comp_fd = _new_fd(lambda: CompChannel(self.ctx), "completion channel")
        self.cq = CQ(self.ctx, cq_depth, None, self.comp_channel, 0)

    def _watch(self, conn: PyverbsConnection) -> None:
        self._conns[conn.channel_fd] = conn
        self._cm_ep.register(conn.channel_fd, select.EPOLLIN)

    def _forget(self, conn: PyverbsConnection) -> None:
        if conn in self._accepting:
            self._accepting.remove(conn)
        if conn.channel_fd >= 0 and self._conns.pop(conn.channel_fd, None) is not None:
            with contextlib.suppress(OSError):
                self._cm_ep.unregister(conn.channel_fd)

    def reg_mr(self, array: Any) -> PyverbsMemoryRegion:
        try:
            return PyverbsMemoryRegion(self.pd, array)
        except Exception as exc:
            raise VerbsError(f"ibv_reg_mr of {array.nbytes} bytes: {exc}") from None

    def connect(self, addr: str, port: int) -> PyverbsConnection:
        """Starts address resolution; route, QP, connect follow from the events (see get_cm_events)."""
        from pyverbs import cm_enums as ce
        from pyverbs.cmid import CMID, AddrInfo, CMEventChannel

        channel, fd = _new_fd(CMEventChannel, "rdma_cm event channel")
        conn = PyverbsConnection(self, CMID(creator=channel, port_space=ce.RDMA_PS_TCP), channel, fd, True)
        self._watch(conn)
        try:
            info = AddrInfo(src=self.local_addr, dst=addr, dst_service=str(port), port_space=ce.RDMA_PS_TCP)
            conn.cmid.resolve_addr(info, CM_TIMEOUT_MS)
        except Exception as exc:
            conn.close()
            raise VerbsError(f"rdma_resolve_addr {addr} port {port}: {exc}") from None
        return conn

    def accept(self, conn: PyverbsConnection) -> None:
        from pyverbs.cmid import ConnParam

        try:
            conn.modify(QpState.RTR)
            conn.cmid.accept(ConnParam(qp_num=conn.qp_num, rnr_retry=7, retry=7))
        except Exception as exc:
            raise VerbsError(f"rdma_accept: {exc}") from None

    def reject(self, conn: PyverbsConnection) -> None:
        with contextlib.suppress(Exception):
            conn.cmid.reject()
        conn.close()

    def get_cm_events(self) -> list[CmEvent]:
        from pyverbs.cmid import CMID, CMEvent, ConnParam

        for fd, _ev in self._cm_ep.poll(0):
            conn = self._conns.get(fd)
            while conn is not None:
                try:
                    event = CMEvent(conn.channel)
                except Exception:  # EAGAIN: this channel is drained
                    break
                kind = CmEventType(int(event.event_type))
                try:
                    if kind == CmEventType.CONNECT_REQUEST:
                        # an accepted id reports on the listener's channel (pyverbs has no rdma_migrate_id)
                        child = PyverbsConnection(self, CMID(creator=event, listen_id=conn.cmid), None, -1, False)
                        child.create_qp()
                        self._accepting.append(child)
                        self._pending.append(CmEvent(kind, child))
                    elif conn is self.listener:
                        # ESTABLISHED comes in accept order; a DISCONNECTED here cannot be told apart between
                        # accepted ids, so those links go down on their error completions instead (README)
                        if kind == CmEventType.ESTABLISHED and self._accepting:
                            child = self._accepting.popleft()
                            child.modify(QpState.RTS)
                            self._pending.append(CmEvent(kind, child))
                    elif kind == CmEventType.ADDR_RESOLVED:
                        conn.cmid.resolve_route(CM_TIMEOUT_MS)
                    elif kind == CmEventType.ROUTE_RESOLVED:
                        conn.create_qp()
                        conn.cmid.connect(ConnParam(qp_num=conn.qp_num, rnr_retry=7, retry=7))
                    elif kind == CmEventType.CONNECT_RESPONSE:
                        conn.modify(QpState.RTR)
                        conn.modify(QpState.RTS)
                        conn.cmid.establish()
                        self._pending.append(CmEvent(CmEventType.ESTABLISHED, conn))
                    elif kind == CmEventType.ESTABLISHED:
                        if conn.state != QpState.RTS:
                            conn.modify(QpState.RTS)
                        self._pending.append(CmEvent(kind, conn))
                    else:
                        self._pending.append(CmEvent(kind, conn))
                except Exception as exc:
                    self._pending.append(CmEvent(CmEventType.CONNECT_ERROR, conn, getattr(exc, "error_code", -1)))
                finally:
                    with contextlib.suppress(Exception):
                        event.close()  # rdma_ack_cm_event
        out = list(self._pending)
        self._pending.clear()
        return out

    def poll_cq(self, max_entries: int) -> list[Completion]:
        n, wcs = self.cq.poll(max_entries)
        out = []
        for wc in wcs[:n]:
            opcode = WcOpcode.RECV if int(wc.opcode) & 0x80 else WcOpcode.SEND
            out.append(Completion(int(wc.wr_id), WcStatus(int(wc.status)) if int(wc.status) in _WC_VALUES
                                  else WcStatus.GENERAL_ERR, opcode, int(wc.byte_len),
                                  socket.ntohl(int(wc.imm_data)) if opcode == WcOpcode.RECV else 0, int(wc.qp_num)))
        return out

    def req_notify_cq(self) -> None:
        self.cq.req_notify()

    def get_cq_event(self) -> bool:
        try:
            self.comp_channel.get_cq_event(self.cq)
        except Exception:  # EAGAIN: no event
            return False
        self.cq.ack_events(1)
        return True

    def close(self) -> None:
        for conn in list(self._conns.values()):
            conn.close()
        for obj in (self.cq, self.comp_channel):
            with contextlib.suppress(Exception):
                obj.close()
        self._cm_ep.close()


_WC_VALUES = {int(s) for s in WcStatus}


class PyverbsBackend:
    """Endpoints on the host's RDMA device (the one that owns the local IPoIB address)."""

    name = "pyverbs"

    def open(self, local_addr: str, port: int, *, send_depth: int = 128, recv_depth: int = 128,
             cq_depth: int = 1024, max_send_sge: int = 4) -> PyverbsEndpoint:
        return PyverbsEndpoint(local_addr, port, send_depth, recv_depth, cq_depth, max_send_sge)
