"""Fuzzing cpg: cluster and client message decoders, the service's request handler and the engine's
delivery path against arbitrary bytes and arbitrary (well-formed) message sequences."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

from hypothesis import HealthCheck, given, settings, strategies as st

from pycorosync.engine.runtime.node import NodeInfo
from pycorosync.ipc.errors import CsError, CsErrorCode
from pycorosync.ipc.framing import decode_response
from pycorosync.ipc.server import ConnStats
from pycorosync.services.cpg import protocol as p
from pycorosync.services.cpg.client import Deliver, _Assembler
from pycorosync.services.cpg.engine import CpgEngine, Event
from pycorosync.services.cpg.service import CpgService, _Session

NAMES = st.binary(max_size=130)
U32 = st.integers(0, 2**32 - 1)
STAMPS = st.tuples(st.integers(0, 2**64 - 1), U32, U32)
REQUEST_ERRORS = {int(CsErrorCode.CS_ERR_INVALID_PARAM), int(CsErrorCode.CS_ERR_NAME_TOO_LONG)}

CLUSTER_MESSAGES = st.one_of(
    st.builds(p.ProcJoin, NAMES.filter(lambda n: len(n) <= 128), U32, st.integers(0, 5)),
    st.builds(p.ProcLeave, NAMES.filter(lambda n: len(n) <= 128), U32, st.integers(0, 5)),
    st.builds(p.Mcast, NAMES.filter(lambda n: len(n) <= 128), U32, st.integers(0, 3), st.binary(max_size=64)),
    st.builds(p.JoinList, U32, st.integers(0, 2**64 - 1),
              st.lists(st.tuples(U32, st.binary(max_size=128), STAMPS), max_size=5).map(tuple)),
    st.builds(p.DownList, U32, st.integers(0, 2**64 - 1), st.lists(U32, max_size=5).map(tuple)),
)


def _same(a: p.ClusterMessage, b: p.ClusterMessage) -> bool:
    if isinstance(a, p.Mcast) and isinstance(b, p.Mcast):
        return (a.group, a.pid, a.guarantee, bytes(a.data)) == (b.group, b.pid, b.guarantee, bytes(b.data))
    return a == b


@settings(max_examples=400, deadline=None)
@given(CLUSTER_MESSAGES)
def test_cluster_messages_round_trip(msg: p.ClusterMessage) -> None:
    assert _same(p.decode_cluster(p.encode_cluster(msg)), msg)


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_cluster_bytes_decode_or_raise_malformed(data: bytes) -> None:
    with contextlib.suppress(p.MalformedMessage):
        p.decode_cluster(data)


@settings(max_examples=300, deadline=None)
@given(CLUSTER_MESSAGES, st.integers(0, 40), st.binary(max_size=8))
def test_truncated_or_extended_cluster_messages_never_crash(msg: p.ClusterMessage, cut: int, extra: bytes) -> None:
    body = p.encode_cluster(msg)
    for data in (body[:max(0, len(body) - cut)], body + extra):
        with contextlib.suppress(p.MalformedMessage):
            p.decode_cluster(data)


@settings(max_examples=800, deadline=None)
@given(st.integers(0, 12), st.binary(max_size=200))
def test_client_event_decoder_raises_only_cs_errors(rtype: int, data: bytes) -> None:
    asm = _Assembler()
    for record_type in (rtype, p.CpgMsg.EV_DELIVER, p.CpgMsg.EV_CONFCHG, p.CpgMsg.EV_TOTEM_CONFCHG):
        try:
            asm.event(record_type, data)
        except CsError as exc:
            assert exc.code == CsErrorCode.CS_ERR_INVALID_PARAM or exc.code == CsErrorCode.CS_ERR_NAME_TOO_LONG


class _FuzzService(CpgService):
    """The real request handler; Totem takes or refuses sends as the test says."""

    accept = True

    def mcast(self, body: bytes, guarantee: int = 2) -> bool:
        return self.accept


def _service() -> tuple[_FuzzService, SimpleNamespace]:
    node = NodeInfo(config="", nodeid=1, cluster="f", run_dir="/nonexistent", segment="", stats="", services=(),
                    bells={}, ring_capacity=0)
    svc = _FuzzService(node)
    svc.exec_init()
    svc.engine.synced = True
    conn = SimpleNamespace(conn_id=1, pid=4242, context=_Session(), stats=ConnStats())
    svc.engine.lib_init(1, 4242)
    return svc, conn


REQUESTS = st.tuples(st.integers(0, 12), st.binary(max_size=160))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(REQUESTS, st.booleans()), max_size=30))
def test_arbitrary_requests_get_an_error_code_never_an_exception(requests: list[tuple[tuple[int, bytes], bool]]) -> None:
    svc, conn = _service()
    for (rtype, payload), accept in requests:
        svc.accept = accept
        held = bool(svc._held)
        out = svc.lib_request(conn, rtype, payload)  # type: ignore[arg-type]
        if rtype == p.CpgMsg.MCAST_ASYNC or (held and rtype in (p.CpgMsg.JOIN, p.CpgMsg.LEAVE, p.CpgMsg.MCAST)):
            assert out is None  # pipelined (no answer), or held in order behind a held message
            continue
        assert out is not None and out[0] == rtype
        code, _ = decode_response(out[1])
        assert code in {int(c) for c in CsErrorCode}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.binary(max_size=40)), max_size=20))
def test_request_decoders_raise_only_invalid_param_or_name_too_long(items: list[tuple[int, bytes]]) -> None:
    decoders = (p.decode_join, p.decode_mcast_piece, p.decode_iter_init, p.decode_member_list, p.decode_iter_items,
                p.decode_confchg, p.decode_totem_confchg, p.decode_deliver, p.decode_u64, p.decode_u32,
                lambda d: p.decode_name(d))
    for i, data in items:
        try:
            decoders[i % len(decoders)](data)
        except CsError as exc:
            assert exc.code in REQUEST_ERRORS


class _Sink:
    def __init__(self) -> None:
        self.events: list[tuple[int, Event]] = []

    def mcast(self, msg: p.ClusterMessage) -> bool:
        return True

    def send_event(self, conn_id: int, event: Event) -> None:
        self.events.append((conn_id, event))


SYNC_STEPS = st.sampled_from(["init", "process", "activate", "abort", "complete"])
STEPS = st.one_of(
    st.tuples(st.just("msg"), st.integers(1, 4), CLUSTER_MESSAGES),
    st.tuples(st.just("bytes"), st.integers(1, 4), st.binary(max_size=60)),
    st.tuples(st.just("sync"), st.integers(1, 4), SYNC_STEPS),
    st.tuples(st.just("lib"), st.integers(1, 3), st.sampled_from(["join", "leave", "mcast", "exit", "init"])),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(STEPS, max_size=50))
def test_engine_survives_any_sequence_of_deliveries_and_sync_calls(steps: list[tuple[str, int, object]]) -> None:
    sink = _Sink()
    eng = CpgEngine(1, sink)
    eng.synced = True
    for conn in (1, 2, 3):
        eng.lib_init(conn, 100 + conn)
    ring = (1, 4)
    for kind, n, arg in steps:
        if kind == "msg":
            assert isinstance(arg, (p.ProcJoin, p.ProcLeave, p.Mcast, p.JoinList, p.DownList))
            eng.deliver(n, p.encode_cluster(arg), ring)
        elif kind == "bytes":
            assert isinstance(arg, bytes)
            eng.deliver(n, arg, ring)
        elif kind == "sync":
            if arg == "init":
                ring = (1, ring[1] + 4)
                eng.sync_init(ring, (1, 2, 3), (1, n))
            elif arg == "process":
                eng.sync_process()
            elif arg == "activate":
                eng.sync_activate()
            elif arg == "abort":
                eng.sync_abort()
            else:
                eng.sync_complete()
        else:
            conn = n
            if arg == "init" and conn not in eng.cpds:
                eng.lib_init(conn, 100 + conn)
            if conn not in eng.cpds:
                continue
            if arg == "join":
                eng.lib_join(conn, b"g")
            elif arg == "leave":
                eng.lib_leave(conn, b"g")
            elif arg == "mcast":
                eng.lib_mcast(conn, 2, b"x")
            elif arg == "exit":
                eng.lib_exit(conn)
    for group, members in eng.view().items():
        assert members, f"empty group {group!r} kept"
        assert len(set(members)) == len(members)


_MCAST_PREFIX = bytes([int(p.ExecMsg.MCAST)])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from([1, 2, 3]), st.booleans(), st.binary(max_size=60)), max_size=12))
def test_hostile_deliveries_give_the_same_events_on_the_fast_and_the_general_path(
        records: list[tuple[int, bool, bytes]]) -> None:
    from tests.unit.test_cpg_fast_paths import Node, setup_group

    outcomes = []
    for fast in (True, False):
        node = Node(fast=fast)
        a, b, other = setup_group(node)
        for sender, as_mcast, tail in records:
            # half of them start as a cpg MCAST (then any header, name length and data), half are any bytes
            body = _MCAST_PREFIX + tail if as_mcast else tail
            node.deliver(sender, body)
        stats = node.svc.engine.stats
        outcomes.append((a.events, b.events, other.events, node.svc.delivered_bytes, stats.unknown_node,
                         stats.malformed))
    assert outcomes[0] == outcomes[1]


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 4), st.integers(0, 255),
       st.integers(0, 300), st.binary(max_size=140), st.binary(max_size=300), st.integers(-3, 3))
def test_the_client_fast_deliver_decode_equals_the_general_one(nodeid: int, pid: int, piece: int, guarantee: int,
                                                               total: int, name: bytes, data: bytes,
                                                               cut: int) -> None:
    # well-formed events (total = len(data)) and ill-formed ones (another total, a name over 128 bytes,
    # bytes cut off or added at the end)
    payload = p.DELIVER_HEAD.pack(nodeid, pid, piece, guarantee, 0, total if total % 3 else len(data))
    payload += len(name).to_bytes(2, "little") + name + data
    payload = payload[:len(payload) + cut] if cut < 0 else payload + bytes(cut)
    try:
        expected = _Assembler().event(p.CpgMsg.EV_CONFCHG + 1000, payload)  # no fast path for other types
        nd, pd, pc, g, _total, group, view = p.decode_deliver(payload)
        general = Deliver(group, nd, pd, bytes(view), g) if pc == p.PIECE_WHOLE else "not whole"
    except CsError:
        general = "error"
    assert expected is None
    try:
        fast = _Assembler().event(p.CpgMsg.EV_DELIVER, payload)
    except CsError:
        fast = "error"
    if general == "not whole":
        assert not isinstance(fast, Deliver) or piece != p.PIECE_WHOLE
    else:
        assert fast == general
