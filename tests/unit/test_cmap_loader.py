"""What icmap holds at start, and config reload (COROSYNC.md §7.4), without any process."""

from __future__ import annotations

import pytest

from pycorosync.engine.config import parse
from pycorosync.engine.config.types import ValueType
from pycorosync.ipc.errors import CsError
from pycorosync.services.cmap import loader
from pycorosync.services.cmap.client import infer_type
from pycorosync.services.cmap.cmapctl import key_line
from pycorosync.services.cmap.engine import (
    CMAP_TRACK_ADD,
    CMAP_TRACK_DELETE,
    CMAP_TRACK_MODIFY,
    CMAP_TRACK_PREFIX,
    CmapNotification,
    Icmap,
)

VT = ValueType
BASE = """
totem {
    version: 2
    cluster_name: c1
    transport: udpu
    token: 1000
}
logging {
    debug: off
    to_syslog: no
}
nodelist {
    node {
        nodeid: 1
        ring0_addr: 10.0.0.1
    }
    node {
        nodeid: 2
        ring0_addr: 10.0.0.2
    }
}
quorum {
    provider: corosync_votequorum
}
"""


def keys_of(text: str, nodeid: int = 1) -> dict[str, tuple[ValueType, object]]:
    cfg = parse(text)
    return cfg.all_keys(cfg.local_node(nodeid))  # type: ignore[return-value]


def loaded(text: str = BASE) -> tuple[Icmap, list[CmapNotification]]:
    icmap = Icmap()
    loader.load_initial(icmap, keys_of(text), 1)  # type: ignore[arg-type]
    seen: list[CmapNotification] = []
    icmap.track_add("", CMAP_TRACK_ADD | CMAP_TRACK_DELETE | CMAP_TRACK_MODIFY | CMAP_TRACK_PREFIX, seen.append)
    return icmap, seen


def test_start_holds_file_keys_runtime_config_and_corosync_service_keys() -> None:
    icmap, _ = loaded()
    assert icmap.get("totem.token") == (VT.UINT32, 1000)
    assert icmap.get("runtime.config.totem.token") == (VT.UINT32, 1000)
    assert icmap.get("nodelist.local_node_pos") == (VT.UINT32, 0)
    assert icmap.get("internal_configuration.service.5.name") == (VT.STRING, "corosync_votequorum")
    assert icmap.get("runtime.services.cpg.6.rx") == (VT.UINT64, 0)
    assert "runtime.services.cpg.7.rx" not in icmap
    assert icmap.get("runtime.services.wd.service_id") == (VT.UINT16, 7)
    assert icmap.get("runtime.force_gather") == (VT.STRING, "no")
    assert "config.reload_in_progress" not in icmap  # corosync creates it on the first reload


def test_local_node_pos_is_found_from_the_node_id_when_the_keys_lack_it() -> None:
    keys = {"nodelist.node.0.nodeid": (VT.UINT32, 4), "nodelist.node.1.nodeid": (VT.UINT32, 9)}
    assert loader.file_keys(keys, 9)["nodelist.local_node_pos"] == (VT.UINT32, 1)  # type: ignore[arg-type]
    assert "nodelist.local_node_pos" not in loader.file_keys(keys, 5)  # type: ignore[arg-type]


def test_reload_modifies_adds_and_deletes_with_notifications_and_flags() -> None:
    icmap, seen = loaded()
    new = BASE.replace("token: 1000", "token: 2000").replace("    debug: off\n", "").replace(
        "    to_syslog: no\n", "    to_syslog: no\n    timestamp: on\n")
    refused = loader.apply_reload(icmap, keys_of(new), 1)  # type: ignore[arg-type]
    assert refused == []
    events = [(n.event, n.key) for n in seen]
    assert events[:2] == [(CMAP_TRACK_ADD, "config.totemconfig_reload_in_progress"),
                          (CMAP_TRACK_ADD, "config.reload_in_progress")]
    assert events[-2:] == [(CMAP_TRACK_MODIFY, "config.totemconfig_reload_in_progress"),
                           (CMAP_TRACK_MODIFY, "config.reload_in_progress")]
    assert set(events[2:-2]) == {(CMAP_TRACK_DELETE, "logging.debug"), (CMAP_TRACK_ADD, "logging.timestamp"),
                                 (CMAP_TRACK_MODIFY, "totem.token"), (CMAP_TRACK_MODIFY, "runtime.config.totem.token"),
                                 (CMAP_TRACK_MODIFY, "runtime.config.totem.consensus"),
                                 (CMAP_TRACK_MODIFY, "runtime.config.totem.token_retransmit"),
                                 (CMAP_TRACK_MODIFY, "runtime.config.totem.hold"),
                                 (CMAP_TRACK_MODIFY, "runtime.config.totem.interface.0.knet_ping_interval"),
                                 (CMAP_TRACK_MODIFY, "runtime.config.totem.interface.0.knet_ping_timeout")}
    assert icmap.get("config.reload_in_progress") == (VT.UINT8, 0)


def test_reload_with_the_same_file_changes_nothing_but_the_flags() -> None:
    icmap, seen = loaded()
    loader.apply_reload(icmap, keys_of(BASE), 1)  # type: ignore[arg-type]
    assert {n.key for n in seen} == {"config.reload_in_progress", "config.totemconfig_reload_in_progress"}


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (("cluster_name: c1", "cluster_name: c2"), "totem.cluster_name"),
        (("transport: udpu", "transport: udp"), "totem.transport"),
        (("    provider: corosync_votequorum\n", ""), "quorum.provider"),
    ],
)
def test_unchangeable_keys_keep_their_value_with_corosyncs_message(edit: tuple[str, str], key: str) -> None:
    icmap, _ = loaded()
    before = icmap.get(key)
    refused = loader.apply_reload(icmap, keys_of(BASE.replace(*edit)), 1)  # type: ignore[arg-type]
    assert f"Modified entry '{key}' in corosync.conf cannot be changed at run-time" in refused
    assert icmap.get(key) == before
    assert all(loader.is_unchangeable(m.split("'")[1]) for m in refused)


def test_reload_keeps_runtime_uidgid_keys_and_replaces_the_files_uidgid_config() -> None:
    icmap, _ = loaded(BASE + "uidgid {\n    uid: 1000\n}\n")
    assert icmap.get("uidgid.config.uid.1000") == (VT.UINT8, 1)
    icmap.set("uidgid.uid.2000", VT.UINT8, 1)
    loader.apply_reload(icmap, keys_of(BASE + "uidgid {\n    gid: 50\n}\n"), 1)  # type: ignore[arg-type]
    assert "uidgid.config.uid.1000" not in icmap
    assert icmap.get("uidgid.config.gid.50") == (VT.UINT8, 1)
    assert icmap.get("uidgid.uid.2000") == (VT.UINT8, 1)


def test_a_failed_reload_leaves_its_message_and_a_good_one_clears_it() -> None:
    icmap, _ = loaded()
    loader.record_reload_error(icmap, "parser error: corosync.conf:3: Missing closing brace")
    assert icmap.get("config.reload_error_message") == (VT.STRING, "parser error: corosync.conf:3: Missing closing brace")
    assert icmap.get("totem.token") == (VT.UINT32, 1000)
    loader.apply_reload(icmap, keys_of(BASE), 1)  # type: ignore[arg-type]
    assert "config.reload_error_message" not in icmap


def test_client_infers_string_binary_double_and_needs_a_type_for_ints() -> None:
    assert infer_type("x", None) == VT.STRING
    assert infer_type(b"x", None) == VT.BINARY
    assert infer_type(1.5, None) == VT.DOUBLE
    assert infer_type(1, VT.INT8) == VT.INT8
    with pytest.raises(CsError):
        infer_type(1, None)
    with pytest.raises(CsError):
        infer_type([1], None)


def test_cmapctl_lines_follow_corosync_layout() -> None:
    assert key_line("totem.token", VT.UINT32, 3000, False) == "totem.token (u32) = 3000"
    assert key_line("a.flt", VT.FLOAT, 1.5, False) == "a.flt (flt) = 1.500000"
    assert key_line("a.bin", VT.BINARY, b"a\x01", False) == "a.bin (bin)"
    assert key_line("a.bin", VT.BINARY, b"a\x01", True) == "a.bin (bin) = a\\x01"
    assert key_line("a.bin", VT.BINARY, b"", True) == "a.bin (bin) = *empty*"
    assert key_line("a.str", VT.STRING, "v", False, quiet=True) == "v"
    assert key_line("a.bin", VT.BINARY, b"x", False, quiet=True) == "bin)"  # corosync-cmapctl quirk
