"""Specification of the cmap key store (icmap) and the stats map: corosync's cmap rules."""

from __future__ import annotations

import pytest

from pycorosync.engine.config.types import ValueType
from pycorosync.ipc.errors import CsError, CsErrorCode
from pycorosync.services.cmap.engine import (
    CMAP_TRACK_ADD,
    CMAP_TRACK_DELETE,
    CMAP_TRACK_MODIFY,
    CMAP_TRACK_PREFIX,
    MAX_ITERATORS_PER_OWNER,
    MAX_VALUE_BYTES,
    CmapNotification,
    Icmap,
    is_read_only,
)
from pycorosync.services.cmap.stats_map import StatsMap

VT = ValueType


def code_of(excinfo: pytest.ExceptionInfo[CsError]) -> CsErrorCode:
    return CsErrorCode(excinfo.value.code)


@pytest.fixture
def icmap() -> Icmap:
    return Icmap()


def collect(m: Icmap | StatsMap, key: str, flags: int) -> list[CmapNotification]:
    seen: list[CmapNotification] = []
    m.track_add(key, flags, seen.append)
    return seen


# -- names and values ------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["ab", "x" * 256, "with space", "tab\tkey", "semi;colon", "ümlaut.key", ""])
def test_bad_key_names_are_refused_with_name_too_long(icmap: Icmap, key: str) -> None:
    with pytest.raises(CsError) as e:
        icmap.set(key, VT.UINT32, 1)
    assert code_of(e) == CsErrorCode.CS_ERR_NAME_TOO_LONG


@pytest.mark.parametrize("key", ["abc", "x" * 255, "a.b_c-d/e:f.0", "UPPER.lower.123"])
def test_names_of_3_to_255_allowed_characters_are_accepted(icmap: Icmap, key: str) -> None:
    icmap.set(key, VT.UINT8, 1)
    assert icmap.get(key) == (VT.UINT8, 1)


@pytest.mark.parametrize(
    ("vtype", "lo", "hi"),
    [
        (VT.INT8, -128, 127), (VT.UINT8, 0, 255), (VT.INT16, -32768, 32767), (VT.UINT16, 0, 65535),
        (VT.INT32, -(2**31), 2**31 - 1), (VT.UINT32, 0, 2**32 - 1), (VT.INT64, -(2**63), 2**63 - 1),
        (VT.UINT64, 0, 2**64 - 1),
    ],
)
def test_integer_types_accept_their_range_and_refuse_one_beyond(icmap: Icmap, vtype: ValueType, lo: int, hi: int) -> None:
    icmap.set("k.lo", vtype, lo)
    icmap.set("k.hi", vtype, hi)
    assert icmap.get("k.lo") == (vtype, lo) and icmap.get("k.hi") == (vtype, hi)
    for bad in (lo - 1, hi + 1, "1", 1.5):
        with pytest.raises(CsError) as e:
            icmap.set("k.bad", vtype, bad)
        assert code_of(e) == CsErrorCode.CS_ERR_INVALID_PARAM
    assert "k.bad" not in icmap


def test_float_is_stored_as_float32_and_double_keeps_precision(icmap: Icmap) -> None:
    icmap.set("f.one", VT.FLOAT, 0.1)
    icmap.set("d.one", VT.DOUBLE, 0.1)
    assert icmap.get("f.one")[1] != 0.1 and abs(icmap.get("f.one")[1] - 0.1) < 1e-7
    assert icmap.get("d.one")[1] == 0.1
    with pytest.raises(CsError):
        icmap.set("f.big", VT.FLOAT, 1e300)


def test_string_and_binary_values_round_trip_and_nul_in_a_string_is_refused(icmap: Icmap) -> None:
    icmap.set("s.key", VT.STRING, "hello world")
    icmap.set("b.key", VT.BINARY, b"\x00\xffraw")
    assert icmap.get("s.key") == (VT.STRING, "hello world")
    assert icmap.get("b.key") == (VT.BINARY, b"\x00\xffraw")
    with pytest.raises(CsError) as e:
        icmap.set("s.nul", VT.STRING, "a\0b")
    assert code_of(e) == CsErrorCode.CS_ERR_INVALID_PARAM


def test_values_over_the_size_limit_are_too_big(icmap: Icmap) -> None:
    with pytest.raises(CsError) as e:
        icmap.set("b.huge", VT.BINARY, b"x" * (MAX_VALUE_BYTES + 1))
    assert code_of(e) == CsErrorCode.CS_ERR_TOO_BIG
    icmap.set("b.max", VT.BINARY, b"x" * MAX_VALUE_BYTES)


def test_unknown_value_type_is_invalid_param(icmap: Icmap) -> None:
    with pytest.raises(CsError) as e:
        icmap.set("k.key", 13, 1)
    assert code_of(e) == CsErrorCode.CS_ERR_INVALID_PARAM


# -- get / set / delete ----------------------------------------------------------------------------
def test_missing_key_is_not_exist(icmap: Icmap) -> None:
    with pytest.raises(CsError) as e:
        icmap.get("no.such.key")
    assert code_of(e) == CsErrorCode.CS_ERR_NOT_EXIST
    with pytest.raises(CsError) as e:
        icmap.delete("no.such.key")
    assert code_of(e) == CsErrorCode.CS_ERR_NOT_EXIST


def test_set_may_change_the_type_of_a_key(icmap: Icmap) -> None:
    icmap.set("k.key", VT.UINT32, 5)
    icmap.set("k.key", VT.STRING, "five")
    assert icmap.get("k.key") == (VT.STRING, "five")


def test_setting_an_identical_value_is_a_no_op_without_notification(icmap: Icmap) -> None:
    seen = collect(icmap, "k.key", CMAP_TRACK_ADD | CMAP_TRACK_MODIFY | CMAP_TRACK_DELETE)
    assert icmap.set("k.key", VT.UINT32, 5) is True
    assert icmap.set("k.key", VT.UINT32, 5) is False
    assert [n.event for n in seen] == [CMAP_TRACK_ADD]
    # same number, other type: a real change
    assert icmap.set("k.key", VT.UINT16, 5) is True
    assert [n.event for n in seen] == [CMAP_TRACK_ADD, CMAP_TRACK_MODIFY]


def test_delete_removes_the_key(icmap: Icmap) -> None:
    icmap.set("k.key", VT.UINT8, 1)
    icmap.delete("k.key")
    assert "k.key" not in icmap


# -- inc / dec -------------------------------------------------------------------------------------
def test_inc_and_dec_wrap_within_the_type(icmap: Icmap) -> None:
    icmap.set("u8.key", VT.UINT8, 255)
    assert icmap.inc("u8.key") == (VT.UINT8, 0)
    assert icmap.dec("u8.key") == (VT.UINT8, 255)
    icmap.set("i8.key", VT.INT8, 127)
    assert icmap.inc("i8.key") == (VT.INT8, -128)
    icmap.set("u64.key", VT.UINT64, 0)
    assert icmap.dec("u64.key") == (VT.UINT64, 2**64 - 1)


@pytest.mark.parametrize(("vtype", "value"), [(VT.STRING, "1"), (VT.BINARY, b"1"), (VT.FLOAT, 1.0), (VT.DOUBLE, 1.0)])
def test_inc_on_a_non_integer_is_invalid_param(icmap: Icmap, vtype: ValueType, value: object) -> None:
    icmap.set("k.key", vtype, value)
    with pytest.raises(CsError) as e:
        icmap.inc("k.key")
    assert code_of(e) == CsErrorCode.CS_ERR_INVALID_PARAM


def test_inc_notifies_modify_with_old_and_new(icmap: Icmap) -> None:
    icmap.set("c.key", VT.UINT32, 7)
    seen = collect(icmap, "c.key", CMAP_TRACK_MODIFY)
    icmap.inc("c.key")
    assert seen == [CmapNotification(seen[0].track_handle, CMAP_TRACK_MODIFY, "c.key", (VT.UINT32, 8), (VT.UINT32, 7))]


# -- read-only -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key",
    [
        "internal_configuration.service.0.name", "runtime.services.cpg.service_id", "runtime.config.totem.token",
        "runtime.totem.pg.x", "uidgid.config.uid.1000", "system.run_dir", "nodelist.node.0.nodeid",
        "totem.cluster_name", "totem.transport", "totem.version", "totem.nodeid", "config.reload_in_progress",
        "nodelist.local_node_pos", "quorum.wait_for_all", "quorum.last_man_standing_window",
    ],
)
def test_read_only_keys_refuse_client_writes_with_access_but_not_engine_writes(icmap: Icmap, key: str) -> None:
    assert is_read_only(key)
    icmap.set(key, VT.UINT32, 1, internal=True)
    for op in (lambda: icmap.set(key, VT.UINT32, 2), lambda: icmap.delete(key), lambda: icmap.inc(key)):
        with pytest.raises(CsError) as e:
            op()
        assert code_of(e) == CsErrorCode.CS_ERR_ACCESS
    assert icmap.get(key) == (VT.UINT32, 1)
    icmap.inc(key, internal=True)
    icmap.delete(key, internal=True)


@pytest.mark.parametrize("key", ["totem.token", "quorum.expected_votes", "runtime.votequorum.two_node",
                                 "resources.process.12.state", "uidgid.uid.1000", "logging.debug", "runtime.members.1.ip"])
def test_ordinary_keys_are_writable_by_clients(icmap: Icmap, key: str) -> None:
    assert not is_read_only(key)
    icmap.set(key, VT.UINT32, 1)


# -- iteration -------------------------------------------------------------------------------------
def test_iteration_is_sorted_and_limited_to_the_prefix(icmap: Icmap) -> None:
    for key in ["b.2", "a.1", "b.10", "b.1", "c.1", "bb.1"]:
        icmap.set(key, VT.UINT8, 0)
    h = icmap.iterators.open("b.")
    keys = []
    while True:
        try:
            keys.append(icmap.iter_next(h)[0])
        except CsError as exc:
            assert exc.code == CsErrorCode.CS_ERR_NO_SECTIONS
            break
    assert keys == ["b.1", "b.10", "b.2"]
    icmap.iterators.close(h)
    with pytest.raises(CsError) as e:
        icmap.iter_next(h)
    assert code_of(e) == CsErrorCode.CS_ERR_BAD_HANDLE


def test_iterator_survives_keys_added_and_deleted_while_it_walks(icmap: Icmap) -> None:
    for key in ["p.a", "p.c", "p.e"]:
        icmap.set(key, VT.UINT8, 0)
    h = icmap.iterators.open("p.")
    assert icmap.iter_next(h)[0] == "p.a"
    icmap.delete("p.c")
    icmap.set("p.d", VT.UINT8, 0)
    icmap.set("p.0", VT.UINT8, 0)  # behind the iterator: not seen
    assert [icmap.iter_next(h)[0], icmap.iter_next(h)[0]] == ["p.d", "p.e"]


def test_iterators_of_one_owner_are_bounded_and_released_with_the_owner(icmap: Icmap) -> None:
    owner = object()
    for _ in range(MAX_ITERATORS_PER_OWNER):
        icmap.iterators.open("", owner)
    with pytest.raises(CsError) as e:
        icmap.iterators.open("", owner)
    assert code_of(e) == CsErrorCode.CS_ERR_NO_RESOURCES
    icmap.iterators.open("", object())  # others are not affected
    icmap.drop_owner(owner)
    icmap.iterators.open("", owner)


def test_an_iterator_is_usable_only_by_its_owner(icmap: Icmap) -> None:
    h = icmap.iterators.open("", "alice")
    with pytest.raises(CsError) as e:
        icmap.iter_next(h, "mallory")
    assert code_of(e) == CsErrorCode.CS_ERR_BAD_HANDLE


# -- tracking --------------------------------------------------------------------------------------
def test_exact_track_sees_add_modify_delete_with_new_and_old_values(icmap: Icmap) -> None:
    seen = collect(icmap, "t.key", CMAP_TRACK_ADD | CMAP_TRACK_MODIFY | CMAP_TRACK_DELETE)
    icmap.set("t.key", VT.UINT32, 1)
    icmap.set("t.key", VT.STRING, "two")
    icmap.delete("t.key")
    icmap.set("t.keyx", VT.UINT32, 1)  # not the exact key
    assert [(n.event, n.key, n.new, n.old) for n in seen] == [
        (CMAP_TRACK_ADD, "t.key", (VT.UINT32, 1), None),
        (CMAP_TRACK_MODIFY, "t.key", (VT.STRING, "two"), (VT.UINT32, 1)),
        (CMAP_TRACK_DELETE, "t.key", None, (VT.STRING, "two")),
    ]


def test_prefix_track_sees_every_key_under_the_prefix_and_only_its_events(icmap: Icmap) -> None:
    seen = collect(icmap, "pre.", CMAP_TRACK_ADD | CMAP_TRACK_DELETE | CMAP_TRACK_PREFIX)
    icmap.set("pre.a", VT.UINT8, 1)
    icmap.set("pre.a", VT.UINT8, 2)  # modify: not asked for
    icmap.set("other.a", VT.UINT8, 1)
    icmap.delete("pre.a")
    assert [(n.event, n.key) for n in seen] == [(CMAP_TRACK_ADD, "pre.a"), (CMAP_TRACK_DELETE, "pre.a")]


def test_track_delete_stops_notifications_and_unknown_handle_is_not_exist(icmap: Icmap) -> None:
    seen: list[CmapNotification] = []
    h = icmap.track_add("k.key", CMAP_TRACK_ADD, seen.append)
    icmap.track_delete(h)
    icmap.set("k.key", VT.UINT8, 1)
    assert seen == []
    with pytest.raises(CsError) as e:
        icmap.track_delete(h)
    assert code_of(e) == CsErrorCode.CS_ERR_NOT_EXIST


@pytest.mark.parametrize("flags", [0, CMAP_TRACK_PREFIX, 16, CMAP_TRACK_ADD | 32])
def test_bad_track_flags_are_invalid_param(icmap: Icmap, flags: int) -> None:
    with pytest.raises(CsError) as e:
        icmap.track_add("k.key", flags, lambda n: None)
    assert code_of(e) == CsErrorCode.CS_ERR_INVALID_PARAM


def test_dropping_an_owner_removes_its_trackers(icmap: Icmap) -> None:
    seen: list[CmapNotification] = []
    icmap.track_add("", CMAP_TRACK_ADD | CMAP_TRACK_PREFIX, seen.append, owner="conn1")
    icmap.drop_owner("conn1")
    icmap.set("k.key", VT.UINT8, 1)
    assert seen == []


def test_an_empty_prefix_tracks_everything(icmap: Icmap) -> None:
    seen = collect(icmap, "", CMAP_TRACK_ADD | CMAP_TRACK_PREFIX)
    icmap.set("any.key", VT.UINT8, 1)
    icmap.set("z.key", VT.UINT8, 1)
    assert [n.key for n in seen] == ["any.key", "z.key"]


# -- stats map -------------------------------------------------------------------------------------
@pytest.fixture
def stats() -> StatsMap:
    counters = {"stats.srp.mcast_tx": 3}
    s = StatsMap()
    s.register("stats.srp.", lambda: [(k, VT.UINT64, v) for k, v in counters.items()])
    s.counters = counters  # type: ignore[attr-defined]
    return s


def test_stats_keys_are_computed_on_read(stats: StatsMap) -> None:
    assert stats.get("stats.srp.mcast_tx") == (VT.UINT64, 3)
    stats.counters["stats.srp.mcast_tx"] = 4  # type: ignore[attr-defined]
    assert stats.get("stats.srp.mcast_tx") == (VT.UINT64, 4)
    with pytest.raises(CsError) as e:
        stats.get("stats.srp.nope")
    assert code_of(e) == CsErrorCode.CS_ERR_NOT_EXIST


def test_stats_map_refuses_writes_except_clear_triggers(stats: StatsMap) -> None:
    cleared: list[str] = []
    stats.register_clear("totem", lambda: cleared.append("totem"))
    stats.register_clear("ipc", lambda: cleared.append("ipc"))
    for op in (lambda: stats.set("stats.srp.mcast_tx", VT.UINT64, 0), lambda: stats.delete("stats.srp.mcast_tx"),
               lambda: stats.inc("stats.srp.mcast_tx")):
        with pytest.raises(CsError) as e:
            op()
        assert code_of(e) == CsErrorCode.CS_ERR_ACCESS
    for op in (lambda: stats.set("stats.clear.bogus", VT.UINT8, 1), lambda: stats.delete("stats.clear.totem")):
        with pytest.raises(CsError) as e:
            op()
        assert code_of(e) == CsErrorCode.CS_ERR_NOT_SUPPORTED
    stats.set("stats.clear.totem", VT.UINT8, 1)
    assert cleared == ["totem"]
    stats.set("stats.clear.all", VT.UINT8, 1)
    assert sorted(cleared) == ["ipc", "totem", "totem"]


def test_stats_polling_reports_add_delete_on_prefixes_and_modify_on_exact_keys(stats: StatsMap) -> None:
    counters = stats.counters  # type: ignore[attr-defined]
    on_prefix = collect(stats, "stats.srp.", CMAP_TRACK_ADD | CMAP_TRACK_DELETE | CMAP_TRACK_MODIFY | CMAP_TRACK_PREFIX)
    on_key = collect(stats, "stats.srp.mcast_tx", CMAP_TRACK_MODIFY)
    counters["stats.srp.mcast_tx"] = 10
    counters["stats.srp.mcast_rx"] = 1
    stats.poll()
    del counters["stats.srp.mcast_rx"]
    stats.poll()
    stats.poll()  # nothing changed
    assert [(n.event, n.key) for n in on_prefix] == [(CMAP_TRACK_ADD, "stats.srp.mcast_rx"),
                                                     (CMAP_TRACK_DELETE, "stats.srp.mcast_rx")]
    assert [(n.event, n.new, n.old) for n in on_key] == [(CMAP_TRACK_MODIFY, (VT.UINT64, 10), (VT.UINT64, 3))]


def test_a_failing_stats_provider_hides_its_keys_but_not_the_others(stats: StatsMap) -> None:
    def broken() -> list[tuple[str, ValueType, int]]:
        raise RuntimeError("table gone")

    stats.register("stats.ipcs.", broken)
    assert [k for k, _ in stats.items("stats.")] == ["stats.srp.mcast_tx"]
    assert stats.provider_errors == 1


def test_stats_iteration_is_sorted_across_providers(stats: StatsMap) -> None:
    stats.register("stats.ipcs.", lambda: [("stats.ipcs.global.closed", VT.UINT64, 0),
                                           ("stats.ipcs.global.active", VT.UINT64, 1)])
    h = stats.iterators.open("stats.")
    keys = []
    with pytest.raises(CsError):
        while True:
            keys.append(stats.iter_next(h)[0])
    assert keys == ["stats.ipcs.global.active", "stats.ipcs.global.closed", "stats.srp.mcast_tx"]
