"""Fuzzing cmap: the store against a model, and the request decoder against arbitrary bytes."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings, strategies as st

from pycorosync.engine.config.types import INTEGER_RANGES, ValueType
from pycorosync.ipc.errors import CsError, CsErrorCode
from pycorosync.services.cmap import protocol as p
from pycorosync.services.cmap.dispatch import CmapDispatcher
from pycorosync.services.cmap.engine import (
    CMAP_TRACK_ADD,
    CMAP_TRACK_DELETE,
    CMAP_TRACK_MODIFY,
    CMAP_TRACK_PREFIX,
    Icmap,
    is_read_only,
)
from pycorosync.services.cmap.stats_map import StatsMap

OK = int(CsErrorCode.CS_OK)
KEYS = st.sampled_from(["a.b.c", "a.b.d", "a.c", "b.a", "totem.token", "totem.version", "runtime.x.y", "bad key", "xy"])
INT_TYPES = sorted(INTEGER_RANGES)


@st.composite
def typed_values(draw: st.DrawFn) -> tuple[ValueType, object]:
    vt = draw(st.sampled_from(list(ValueType)))
    if vt in INTEGER_RANGES:
        lo, hi = INTEGER_RANGES[vt]
        return vt, draw(st.integers(lo - 2, hi + 2))
    if vt in (ValueType.FLOAT, ValueType.DOUBLE):
        return vt, draw(st.floats(allow_nan=False, width=32 if vt == ValueType.FLOAT else 64))
    if vt == ValueType.STRING:
        return vt, draw(st.text(max_size=20))
    return vt, draw(st.binary(max_size=20))


OPS = st.one_of(
    st.tuples(st.just("set"), KEYS, typed_values()),
    st.tuples(st.just("delete"), KEYS, st.none()),
    st.tuples(st.just("inc"), KEYS, st.none()),
    st.tuples(st.just("dec"), KEYS, st.none()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(OPS, max_size=40))
def test_store_matches_a_dict_model_and_prefix_tracker_sees_every_change(ops: list[tuple[str, str, object]]) -> None:
    icmap = Icmap()
    model: dict[str, tuple[ValueType, object]] = {}
    events: list[tuple[int, str]] = []
    icmap.track_add("", CMAP_TRACK_ADD | CMAP_TRACK_DELETE | CMAP_TRACK_MODIFY | CMAP_TRACK_PREFIX,
                    lambda n: events.append((n.event, n.key)))
    expected: list[tuple[int, str]] = []
    for op, key, arg in ops:
        try:
            if op == "set":
                assert isinstance(arg, tuple)
                changed = icmap.set(key, arg[0], arg[1])
                if changed:
                    expected.append((CMAP_TRACK_MODIFY if key in model else CMAP_TRACK_ADD, key))
                model[key] = icmap.get(key)
            elif op == "delete":
                icmap.delete(key)
                del model[key]
                expected.append((CMAP_TRACK_DELETE, key))
            else:
                before = icmap.get(key)
                after = icmap.inc(key) if op == "inc" else icmap.dec(key)
                lo, hi = INTEGER_RANGES[before[0]]
                assert lo <= int(after[1]) <= hi
                model[key] = after
                expected.append((CMAP_TRACK_MODIFY, key))
        except CsError as exc:
            assert exc.code != OK
            if exc.code == CsErrorCode.CS_ERR_ACCESS:
                assert is_read_only(key)
    assert dict(icmap.items()) == model
    assert [k for k, _ in icmap.items()] == sorted(model)
    assert events == expected


def _dispatcher() -> tuple[CmapDispatcher, list[tuple[int, bytes]]]:
    icmap = Icmap()
    icmap.set("a.key", ValueType.UINT32, 1)
    icmap.set("s.key", ValueType.STRING, "x")
    stats = StatsMap()
    stats.register("stats.x.", lambda: [("stats.x.y", ValueType.UINT64, 5)])
    return CmapDispatcher(icmap, stats), []


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rtype=st.integers(0, 130), payload=st.binary(max_size=64))
def test_arbitrary_request_records_give_an_error_code_never_an_exception(rtype: int, payload: bytes) -> None:
    dispatcher, sent = _dispatcher()
    session = dispatcher.open_session(lambda t, d: sent.append((t, d)) is None)
    code, body = dispatcher.handle(session, rtype, payload)
    assert code in {int(c) for c in CsErrorCode}
    assert code == OK or body == b""
    assert dispatcher.internal_errors == 0


@settings(max_examples=800, deadline=None)
@given(
    rtype=st.sampled_from([int(m) for m in p.CmapMsg]),
    head=st.sampled_from([b"", struct.pack("<BH", 6, 5) + b"a.key", struct.pack("<IQ", 4 | 8, 1),
                          struct.pack("<II", 1, 0), struct.pack("<Q", 1)]),
    tail=st.binary(max_size=24),
)
def test_near_valid_requests_are_answered_without_internal_errors(rtype: int, head: bytes, tail: bytes) -> None:
    dispatcher, sent = _dispatcher()
    session = dispatcher.open_session(lambda t, d: sent.append((t, d)) is None)
    code, body = dispatcher.handle(session, rtype, head + tail)
    assert dispatcher.internal_errors == 0
    if code == OK and rtype == p.CmapMsg.GET:
        p.decode_entry(body)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_notification_decoder_rejects_garbage_with_invalid_param(data: bytes) -> None:
    try:
        p.decode_notify(data)
    except CsError as exc:
        assert exc.code in (CsErrorCode.CS_ERR_INVALID_PARAM, CsErrorCode.CS_ERR_NAME_TOO_LONG)


@settings(max_examples=300, deadline=None)
@given(typed_values(), st.sampled_from(["a.b", "key.name", "x" * 255]))
def test_wire_encoding_round_trips_every_storable_value(tv: tuple[ValueType, object], key: str) -> None:
    icmap = Icmap()
    try:
        icmap.set("k.k", tv[0], tv[1])
    except CsError:
        return
    entry = icmap.get("k.k")
    assert p.decode_entry(p.encode_entry(entry)) == entry
    assert p.decode_set(p.encode_set(key, entry[0], entry[1])) == (key, entry)
    assert p.decode_iter_item(p.encode_iter_item(key, entry)) == (key, entry)
    assert p.decode_notify(p.encode_notify(1, 2, CMAP_TRACK_MODIFY, key, entry, None)) == (
        1, 2, CMAP_TRACK_MODIFY, key, entry, None)
