"""The real corosync's client library (libcpg.so.4) through ctypes, for the corosync baseline of bench/cpg.py.

``LibCpgClient`` offers the calls of ``pycorosync.cpg.CpgClient`` that the bench's workers use (join,
mcast_joined, next_event, close) and yields the same event types (``Deliver``, ``ConfChg``), so one
worker body drives both engines and the two figures differ only by the engine under them. Errors are
``CsError`` with corosync's cs_error_t code (the same numbering as ``CsErrorCode``).

The structures and prototypes follow corosync's public header ``corosync/cpg.h``:

    struct cpg_name { uint32_t length; char value[128]; };
    struct cpg_address { uint32_t nodeid; uint32_t pid; uint32_t reason; };
    cpg_deliver_fn_t(handle, const struct cpg_name *, uint32_t nodeid, uint32_t pid, void *msg, size_t len)
    cpg_confchg_fn_t(handle, const struct cpg_name *, const struct cpg_address *members, size_t n, left, n, joined, n)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import time
from collections import deque
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from pycorosync.cpg import CPG_TYPE_AGREED, ConfChg, CpgAddress, CsError, CsErrorCode, Deliver

CPG_NAME_MAX = 128
CS_DISPATCH_ALL = 2
_CLONE_NEWNET = 0x40000000


class CpgName(ctypes.Structure):
    _fields_ = [("length", ctypes.c_uint32), ("value", ctypes.c_char * CPG_NAME_MAX)]


class CpgAddressC(ctypes.Structure):
    _fields_ = [("nodeid", ctypes.c_uint32), ("pid", ctypes.c_uint32), ("reason", ctypes.c_uint32)]


class IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


_DeliverFn = ctypes.CFUNCTYPE(None, ctypes.c_uint64, ctypes.POINTER(CpgName), ctypes.c_uint32, ctypes.c_uint32,
                              ctypes.c_void_p, ctypes.c_size_t)
_AddrP = ctypes.POINTER(CpgAddressC)
_ConfchgFn = ctypes.CFUNCTYPE(None, ctypes.c_uint64, ctypes.POINTER(CpgName), _AddrP, ctypes.c_size_t, _AddrP,
                              ctypes.c_size_t, _AddrP, ctypes.c_size_t)


class CpgCallbacks(ctypes.Structure):
    _fields_ = [("cpg_deliver_fn", _DeliverFn), ("cpg_confchg_fn", _ConfchgFn)]


def find_libcpg() -> str | None:
    """The path or soname of libcpg, or None when it is not installed."""
    name = ctypes.util.find_library("cpg")
    if name is not None:
        return name
    try:
        ctypes.CDLL("libcpg.so.4")
    except OSError:
        return None
    return "libcpg.so.4"


def enter_netns(name: str) -> None:
    """Moves the calling (single-threaded) process into the network namespace ``/run/netns/<name>``: the
    abstract unix sockets through which libcpg reaches corosync are per network namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into network namespace {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _addresses(array: Any, count: int) -> tuple[CpgAddress, ...]:
    return tuple(CpgAddress(array[i].nodeid, array[i].pid, array[i].reason) for i in range(count))


class LibCpgClient:
    """One cpg handle of the real libcpg (see the module docstring); ``with`` finalizes it."""

    def __init__(self, timeout: float = 30.0, library: str | None = None) -> None:
        path = library or find_libcpg()
        if path is None:
            raise OSError("libcpg (corosync's client library) is not installed")
        lib = ctypes.CDLL(path)
        lib.cpg_initialize.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(CpgCallbacks)]
        lib.cpg_fd_get.argtypes = [ctypes.c_uint64, ctypes.POINTER(ctypes.c_int)]
        lib.cpg_dispatch.argtypes = [ctypes.c_uint64, ctypes.c_int]
        lib.cpg_join.argtypes = [ctypes.c_uint64, ctypes.POINTER(CpgName)]
        lib.cpg_mcast_joined.argtypes = [ctypes.c_uint64, ctypes.c_int, ctypes.POINTER(IoVec), ctypes.c_uint]
        lib.cpg_finalize.argtypes = [ctypes.c_uint64]
        self._lib = lib
        self._events: deque[Deliver | ConfChg] = deque()
        self._handle = ctypes.c_uint64(0)
        # the callbacks must outlive the handle: keep the ctypes objects on self
        self._callbacks = CpgCallbacks(_DeliverFn(self._on_deliver), _ConfchgFn(self._on_confchg))
        deadline = time.monotonic() + timeout
        while True:  # corosync still starting: CS_ERR_LIBRARY (no server yet) or CS_ERR_TRY_AGAIN
            err = lib.cpg_initialize(ctypes.byref(self._handle), ctypes.byref(self._callbacks))
            if err == CsErrorCode.CS_OK:
                break
            if time.monotonic() > deadline:
                raise CsError(err, "cpg_initialize (is corosync running in this network namespace?)")
            time.sleep(0.05)
        fd = ctypes.c_int(-1)
        self._check(lib.cpg_fd_get(self._handle, ctypes.byref(fd)), "cpg_fd_get")
        self._poll = select.poll()
        self._poll.register(fd.value, select.POLLIN)
        self.closed = False

    def _check(self, err: int, call: str) -> None:
        if err != CsErrorCode.CS_OK:
            raise CsError(err, call)

    def _on_deliver(self, _handle: int, group: Any, nodeid: int, pid: int, msg: int, size: int) -> None:
        name = group.contents
        self._events.append(Deliver(bytes(name.value[:name.length]), nodeid, pid, ctypes.string_at(msg, size)))

    def _on_confchg(self, _handle: int, group: Any, members: Any, n_members: int, left: Any, n_left: int,
                    joined: Any, n_joined: int) -> None:
        name = group.contents
        self._events.append(ConfChg(bytes(name.value[:name.length]), _addresses(members, n_members),
                                    _addresses(left, n_left), _addresses(joined, n_joined)))

    def join(self, group: bytes) -> None:
        """cpg_join."""
        name = CpgName(len(group), group)
        self._check(self._lib.cpg_join(self._handle, ctypes.byref(name)), "cpg_join")

    def mcast_joined(self, parts: Sequence[bytes], guarantee: int = CPG_TYPE_AGREED) -> None:
        """cpg_mcast_joined of the concatenation of ``parts`` (an iovec); CsError CS_ERR_TRY_AGAIN under flow
        control, as from CpgClient."""
        iov = (IoVec * len(parts))()
        keep = []
        for i, part in enumerate(parts):
            buf = ctypes.c_char_p(part)  # points at the bytes object's own buffer: no copy
            keep.append(buf)
            iov[i].iov_base = ctypes.cast(buf, ctypes.c_void_p)
            iov[i].iov_len = len(part)
        self._check(self._lib.cpg_mcast_joined(self._handle, guarantee, iov, len(parts)), "cpg_mcast_joined")

    def next_event(self, timeout: float | None = None) -> Deliver | ConfChg | None:
        """The next event, waiting up to ``timeout`` seconds for one (None: forever); None if none came."""
        if self._events:
            return self._events.popleft()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait_ms = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000 + 0.999))
            if self._poll.poll(wait_ms):
                self._check(self._lib.cpg_dispatch(self._handle, CS_DISPATCH_ALL), "cpg_dispatch")
                if self._events:
                    return self._events.popleft()
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def close(self) -> None:
        """cpg_finalize."""
        if not self.closed:
            self.closed = True
            self._lib.cpg_finalize(self._handle)

    def __enter__(self) -> LibCpgClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
