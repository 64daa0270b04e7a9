"""Choosing the verbs backend: the clean refusals without pyverbs or without a device, and the real-device
tests (marked ``hardware``; they skip here: no machine of this project has an RDMA device)."""

from __future__ import annotations

import os
import sys
import time
import types

import numpy as np
import pytest

from pycorosync.transports.iba.fake import FakeBackend
from pycorosync.transports.iba.verbs import (
    BACKEND_ENV,
    FABRIC_ENV,
    NO_DEVICE_MESSAGE,
    NO_PYVERBS_MESSAGE,
    TransportUnavailable,
    check_pyverbs_device,
    load_backend,
)

NO_DEVICE_REASON = "no RDMA device: kernel lacks CONFIG_INFINIBAND/modules"
#: two IPoIB (or rxe netdev) addresses of this host for the hardware tests, e.g. "192.168.100.1,192.168.100.2"
HW_ADDRS_ENV = "PYCOROSYNC_IBA_TEST_ADDRS"


def _stub_pyverbs(monkeypatch: pytest.MonkeyPatch, get_device_list: object) -> None:
    """pyverbs as it behaves on a host without a device, in sys.modules."""

    class PyverbsError(Exception):
        pass

    class PyverbsRDMAError(PyverbsError):
        def __init__(self, msg: str, error_code: int = -1) -> None:
            super().__init__(msg)
            self.error_code = error_code

    pkg = types.ModuleType("pyverbs")
    errors = types.ModuleType("pyverbs.pyverbs_error")
    errors.PyverbsError = PyverbsError  # type: ignore[attr-defined]
    errors.PyverbsRDMAError = PyverbsRDMAError  # type: ignore[attr-defined]
    device = types.ModuleType("pyverbs.device")

    def raising() -> list[object]:
        raise PyverbsRDMAError("Failed to get devices list")

    device.get_device_list = raising if get_device_list is None else get_device_list  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pyverbs", pkg)
    monkeypatch.setitem(sys.modules, "pyverbs.pyverbs_error", errors)
    monkeypatch.setitem(sys.modules, "pyverbs.device", device)


def test_without_pyverbs_the_backend_refuses_with_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyverbs", None)  # "import pyverbs" raises ImportError
    monkeypatch.setitem(sys.modules, "pyverbs.device", None)
    with pytest.raises(TransportUnavailable) as info:
        load_backend("pyverbs")
    assert str(info.value) == NO_PYVERBS_MESSAGE == (
        "transport iba: pyverbs is not installed (pip install pycorosync[iba])")


def test_pyverbs_that_finds_no_device_list_is_no_rdma_device_found(monkeypatch: pytest.MonkeyPatch) -> None:
    _stub_pyverbs(monkeypatch, None)
    with pytest.raises(TransportUnavailable) as info:
        load_backend(environ={BACKEND_ENV: "pyverbs"})
    assert str(info.value).startswith(NO_DEVICE_MESSAGE)
    assert "Failed to get devices list" in str(info.value)


def test_an_empty_device_list_is_no_rdma_device_found(monkeypatch: pytest.MonkeyPatch) -> None:
    _stub_pyverbs(monkeypatch, lambda: [])
    with pytest.raises(TransportUnavailable, match=r"^transport iba: no RDMA device found$"):
        check_pyverbs_device()


def test_device_names_are_listed_when_pyverbs_sees_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    dev = types.SimpleNamespace(name=b"rxe0")
    _stub_pyverbs(monkeypatch, lambda: [dev])
    assert check_pyverbs_device() == ["rxe0"]


def test_the_environment_selects_the_fake_backend_and_its_fabric() -> None:
    backend = load_backend(environ={BACKEND_ENV: "fake", FABRIC_ENV: "f1"})
    assert isinstance(backend, FakeBackend) and backend.fabric == "f1"
    with pytest.raises(TransportUnavailable, match="unknown verbs backend 'udp'"):
        load_backend(environ={BACKEND_ENV: "udp"})


def _real_device_or_skip() -> list[str]:
    try:
        return check_pyverbs_device()
    except TransportUnavailable:
        pytest.skip(NO_DEVICE_REASON)


@pytest.mark.hardware
def test_real_device_is_listed_by_pyverbs() -> None:
    assert _real_device_or_skip()


@pytest.mark.hardware
@pytest.mark.timeout(120)
def test_real_device_moves_frames_ring_to_ring_over_rc_queue_pairs() -> None:
    _real_device_or_skip()
    addrs = os.environ.get(HW_ADDRS_ENV, "").split(",")
    if len(addrs) != 2:
        pytest.skip(f"set {HW_ADDRS_ENV} to two local addresses of the RDMA netdev (e.g. rxe on eth0 and an alias)")
    from pycorosync.ipc.ring import Ring
    from pycorosync.transports.crypto import CryptoSettings
    from pycorosync.transports.iba.pyverbs_backend import PyverbsBackend
    from pycorosync.transports.iba.transport import IbaTransport
    from pycorosync.transports.udp.plan import make_plan

    nodes = [(1, addrs[0]), (2, addrs[1])]
    crypto = CryptoSettings("none", "none", "hw", b"")
    ts = []
    rings = []
    try:
        for nid, _ in nodes:
            arr = np.zeros(2 * Ring.layout_bytes(1 << 16), np.uint8)
            tx, rx = Ring.create(arr, 1 << 16, 0, "tx"), Ring.create(arr, 1 << 16, Ring.layout_bytes(1 << 16), "rx")
            rings.append((tx, rx))
            plan = make_plan(nid, nodes, crypto, transport="iba", mcastport=18515)
            ts.append(IbaTransport(plan, tx, rx, None, None, PyverbsBackend()))
        deadline = time.monotonic() + 30
        while set(ts[0].link_states().values()) != {"up"}:
            assert time.monotonic() < deadline, "no RC connection between the two endpoints"
            for t in ts:
                t.step()
                t.housekeeping(time.monotonic())
        bodies = [bytes([k % 256]) * (100 + k) for k in range(500)]
        got: list[bytes] = []
        sent = 0
        while len(got) < len(bodies):
            assert time.monotonic() < deadline + 30
            while sent < len(bodies) and rings[0][0].push(2, bodies[sent]):
                sent += 1
            for t in ts:
                t.step()
            got += [p for _s, p in rings[1][1].pop_batch(256)]
        assert got == bodies
    finally:
        for t in ts:
            t.close()
