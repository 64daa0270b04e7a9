"""The small verbs interface the ``iba`` transport is written against, and how a backend is chosen.

Two backends implement it: ``pyverbs_backend`` (rdma_cm + RC queue pairs on a real device) and
``fake`` (the same semantics over local sockets, for tests: no machine here has an RDMA device).

What the transport uses, and nothing more:

* ``Backend.open(local_addr, port, ...)`` -> ``Endpoint``: a listening rdma_cm id on the IPoIB address,
  one protection domain, one completion queue with its completion channel, and a CM event channel.
* ``Endpoint.reg_mr(array)`` -> ``MemoryRegion`` (addr, length, lkey) over memory the caller owns
  (the tx ring itself, header and receive slabs): the HCA reads and writes it in place.
* ``Endpoint.connect(addr, port)`` -> ``Connection`` whose QP already exists (state INIT), so receives
  can be posted before the peer can send; CM events (``get_cm_events``) say ESTABLISHED, REJECTED,
  UNREACHABLE, CONNECT_REQUEST (with a new ``Connection`` to ``accept``/``reject``), DISCONNECTED.
* ``Connection.post_send(wr_id, sges, imm)`` (a SEND_WITH_IMM, always signalled) and
  ``Connection.post_recv(wr_id, sge)``; ``Endpoint.poll_cq(n)`` returns ``Completion`` s.
* ``Endpoint.comp_fd``/``cm_fd`` go into the process's epoll. ``req_notify_cq()`` arms the CQ; once a
  completion arrives after arming, ``comp_fd`` turns readable and ``get_cq_event()`` consumes (acks) it.
  As with ibv_req_notify_cq, a completion that arrived before arming raises no event: poll after arming.

Values of the enums are those of libibverbs/librdmacm, so the pyverbs backend passes them through.
"""

from __future__ import annotations

import enum
import importlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

#: environment: which backend a transport process uses ("pyverbs", the default, or "fake")
BACKEND_ENV = "PYCOROSYNC_IBA_BACKEND"
#: environment: the fake fabric's name (processes with the same name see each other)
FABRIC_ENV = "PYCOROSYNC_IBA_FABRIC"

NO_DEVICE_MESSAGE = "transport iba: no RDMA device found"
NO_PYVERBS_MESSAGE = "transport iba: pyverbs is not installed (pip install pycorosync[iba])"


class VerbsError(RuntimeError):
    """A verbs call failed (the post, connect or registration itself, not a completion)."""


class TransportUnavailable(RuntimeError):
    """The iba transport cannot run on this host; the message is the one the daemon prints."""


class QpState(enum.IntEnum):
    """ibv_qp_state."""

    RESET = 0
    INIT = 1
    RTR = 2
    RTS = 3
    SQD = 4
    SQE = 5
    ERR = 6


#: the transitions ibv_modify_qp accepts (IB spec, chapter 10.3): anything may go to RESET or ERR
QP_TRANSITIONS: dict[QpState, frozenset[QpState]] = {
    QpState.RESET: frozenset({QpState.INIT}),
    QpState.INIT: frozenset({QpState.INIT, QpState.RTR}),
    QpState.RTR: frozenset({QpState.RTS}),
    QpState.RTS: frozenset({QpState.RTS, QpState.SQD}),
    QpState.SQD: frozenset({QpState.RTS, QpState.SQD}),
    QpState.SQE: frozenset({QpState.RTS}),
    QpState.ERR: frozenset(),
}


def check_transition(old: QpState, new: QpState) -> None:
    """Raises VerbsError for a transition a QP refuses (EINVAL from ibv_modify_qp)."""
    if new in (QpState.RESET, QpState.ERR) or new in QP_TRANSITIONS[old]:
        return
    raise VerbsError(f"QP state {old.name} -> {new.name} is not a valid transition")


class WcStatus(enum.IntEnum):
    """ibv_wc_status (the ones the transport distinguishes)."""

    SUCCESS = 0
    LOC_LEN_ERR = 1
    LOC_QP_OP_ERR = 2
    LOC_PROT_ERR = 4
    WR_FLUSH_ERR = 5
    REM_INV_REQ_ERR = 9
    REM_ACCESS_ERR = 10
    REM_OP_ERR = 11
    RETRY_EXC_ERR = 12
    RNR_RETRY_EXC_ERR = 13
    GENERAL_ERR = 21


class WcOpcode(enum.IntEnum):
    """ibv_wc_opcode."""

    SEND = 0
    RECV = 128


class CmEventType(enum.IntEnum):
    """rdma_cm_event_type."""

    ADDR_RESOLVED = 0
    ADDR_ERROR = 1
    ROUTE_RESOLVED = 2
    ROUTE_ERROR = 3
    CONNECT_REQUEST = 4
    CONNECT_RESPONSE = 5
    CONNECT_ERROR = 6
    UNREACHABLE = 7
    REJECTED = 8
    ESTABLISHED = 9
    DISCONNECTED = 10
    DEVICE_REMOVAL = 11
    TIMEWAIT_EXIT = 15


#: events after which a connection is gone (or never came)
CM_FAILURES = frozenset({
    CmEventType.ADDR_ERROR, CmEventType.ROUTE_ERROR, CmEventType.CONNECT_ERROR, CmEventType.UNREACHABLE,
    CmEventType.REJECTED, CmEventType.DISCONNECTED, CmEventType.DEVICE_REMOVAL,
})


@dataclass(frozen=True)
class Sge:
    """One scatter/gather element: ``length`` bytes at virtual address ``addr`` inside the MR of ``lkey``."""

    addr: int
    length: int
    lkey: int


@dataclass(frozen=True)
class Completion:
    """One work completion (ibv_wc): ``imm`` only for receives of a SEND_WITH_IMM."""

    wr_id: int
    status: WcStatus
    opcode: WcOpcode
    byte_len: int = 0
    imm: int = 0
    qp_num: int = 0


@dataclass(frozen=True)
class CmEvent:
    """One rdma_cm event about ``conn``."""

    kind: CmEventType
    conn: Any
    status: int = 0


class MemoryRegion(Protocol):
    addr: int
    length: int
    lkey: int

    def close(self) -> None: ...


class Connection(Protocol):
    qp_num: int

    @property
    def state(self) -> QpState: ...

    def post_send(self, wr_id: int, sges: Sequence[Sge], imm: int) -> None: ...

    def post_recv(self, wr_id: int, sge: Sge) -> None: ...

    def disconnect(self) -> None: ...

    def close(self) -> None: ...


class Endpoint(Protocol):
    cm_fd: int
    comp_fd: int

    def reg_mr(self, array: Any) -> MemoryRegion: ...

    def connect(self, addr: str, port: int) -> Connection: ...

    def accept(self, conn: Connection) -> None: ...

    def reject(self, conn: Connection) -> None: ...

    def get_cm_events(self) -> list[CmEvent]: ...

    def poll_cq(self, max_entries: int) -> list[Completion]: ...

    def req_notify_cq(self) -> None: ...

    def get_cq_event(self) -> bool: ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    def open(self, local_addr: str, port: int, *, send_depth: int, recv_depth: int, cq_depth: int,
             max_send_sge: int) -> Endpoint: ...


def load_backend(name: str | None = None, environ: Any = None) -> Backend:
    """The backend named by ``name`` or ``$PYCOROSYNC_IBA_BACKEND`` (default ``pyverbs``).

    Raises TransportUnavailable with the daemon's message when pyverbs is missing or finds no device.
    """
    env = os.environ if environ is None else environ
    name = name or env.get(BACKEND_ENV) or "pyverbs"
    if name == "fake":
        from pycorosync.transports.iba.fake import FakeBackend

        fake: Backend = FakeBackend(env.get(FABRIC_ENV) or "default")
        return fake
    if name != "pyverbs":
        raise TransportUnavailable(f"transport iba: unknown verbs backend '{name}' (pyverbs or fake)")
    check_pyverbs_device()
    from pycorosync.transports.iba.pyverbs_backend import PyverbsBackend

    real: Backend = PyverbsBackend()
    return real


def check_pyverbs_device() -> list[str]:
    """Names of the RDMA devices pyverbs sees; TransportUnavailable when pyverbs or a device is missing.

    Without a device libibverbs does not return an empty list: ``get_device_list`` raises
    ``PyverbsRDMAError('Failed to get devices list')``.
    """
    try:
        device = importlib.import_module("pyverbs.device")
    except ImportError:
        raise TransportUnavailable(NO_PYVERBS_MESSAGE) from None
    try:
        devices = device.get_device_list()
    except Exception as exc:  # PyverbsRDMAError / PyverbsError: no device, no driver, no uverbs
        raise TransportUnavailable(f"{NO_DEVICE_MESSAGE} ({exc})") from None
    names = [_device_name(d) for d in devices]
    if not names:
        raise TransportUnavailable(NO_DEVICE_MESSAGE)
    return names


def _device_name(dev: Any) -> str:
    name = getattr(dev, "name", dev)
    return name.decode() if isinstance(name, bytes) else str(name)
