"""corosync-cfgtool layouts (reference outputs of corosync 3.1.7) and the node status the cfg service reports."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from pycorosync.services.cfg import cfgtool
from pycorosync.services.cfg.protocol import CfgNodeStatus
from pycorosync.services.cfg.status import NodeLinks, brief_status, node_status

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "cfgtool"  # real corosync 3.1.7 outputs
ADDRS = {1: ("10.77.0.1",), 2: ("10.77.0.2",), 3: ("10.77.0.3",)}


def _reference(name: str) -> str:
    return (REFERENCE / name).read_text()


def _statuses(transport: str, mtu: int, members: tuple[int, ...], heard: dict[int, bool] | None = None
              ) -> dict[int, CfgNodeStatus | None]:
    links = NodeLinks(1, transport, ADDRS, mtu)
    return {n: node_status(links, n, heard, members) for n in ADDRS}


def test_knet_link_status_matches_corosync() -> None:
    text = cfgtool.format_links(1, "knet", [1, 2, 3], _statuses("knet", 1397, (1, 2, 3)))
    assert text == _reference("knet_cfgtool_s.txt")


def test_knet_node_status_matches_corosync() -> None:
    text = cfgtool.format_nodes(1, "knet", [1, 2, 3], _statuses("knet", 1397, (1, 2, 3)))
    assert text == _reference("knet_cfgtool_n.txt")


def test_udpu_node_status_matches_corosync() -> None:
    text = cfgtool.format_nodes(1, "udpu", [1, 2, 3], _statuses("udpu", 1410, (1, 2, 3)))
    assert text == _reference("cfgtool_n.txt")


def test_udpu_link_status_matches_corosync_but_prints_our_own_address() -> None:
    # corosync's udpu prints another node's address on the addr line (a quirk the reference notes)
    want = _reference("cfgtool_s.txt").replace("addr\t= 10.77.0.3", "addr\t= 10.77.0.1")
    assert cfgtool.format_links(1, "udpu", [1, 2, 3], _statuses("udpu", 1410, (1, 2, 3))) == want


def test_a_killed_node_shows_disconnected_once_it_left_the_ring_and_went_silent() -> None:
    text = cfgtool.format_links(1, "udpu", [1, 2, 3], _statuses("udpu", 1410, (1, 2), {2: True, 3: False}))
    want = _reference("cfgtool_s_after_kill3.txt").replace("addr\t= 10.77.0.3", "addr\t= 10.77.0.1")
    assert text == want
    nodes = cfgtool.format_nodes(1, "udpu", [1, 2, 3], _statuses("udpu", 1410, (1, 2), {3: False}))
    assert "nodeid: 3" not in nodes and "nodeid: 2 reachable" in nodes


def test_a_member_counts_as_connected_even_when_not_heard_lately() -> None:
    # with a unicast token a node hears only its ring predecessor on an idle ring
    st = _statuses("udpu", 1410, (1, 2, 3), {2: False, 3: True})
    assert st[2] is not None and st[2].link(0).connected


def test_a_peer_heard_within_the_token_is_connected_before_it_joins_the_ring() -> None:
    st = _statuses("udpu", 1410, (1,), {2: True, 3: False})
    assert st[2] is not None and st[2].reachable and st[3] is not None and not st[3].reachable


def test_brief_status_has_a_character_per_node_and_n_for_this_one() -> None:
    text = cfgtool.format_links(1, "knet", [1, 2, 3], _statuses("knet", 1397, (1, 2)), brief=True)
    assert text.splitlines()[-1] == "\tstatus\t= n31"
    assert brief_status(NodeLinks(1, "knet", ADDRS, 1397), None, (1, 2)) == "n31"


def test_brief_status_marks_a_node_whose_status_cannot_be_read() -> None:
    st = _statuses("knet", 1397, (1, 2, 3))
    st[3] = None
    assert cfgtool.format_links(1, "knet", [1, 2, 3], st, brief=True).splitlines()[-1] == "\tstatus\t= n3?"


def test_interface_filter_keeps_only_the_matching_link() -> None:
    st = _statuses("knet", 1397, (1, 2, 3))
    assert "LINK ID 0" in cfgtool.format_links(1, "knet", [1, 2, 3], st, interface="10.77.0.1")
    assert "LINK ID 0" in cfgtool.format_links(1, "knet", [1, 2, 3], st, interface="0")
    assert "LINK ID" not in cfgtool.format_links(1, "knet", [1, 2, 3], st, interface="10.9.9.9")


def test_a_node_outside_the_nodelist_has_no_status() -> None:
    assert node_status(NodeLinks(1, "udpu", ADDRS, 1410), 7, None, (1,)) is None


def _run(argv: list[str], run_dir: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir")
    sub = parser.add_subparsers()
    cfgtool.register(sub)
    args = parser.parse_args(["--run-dir", run_dir, "cfgtool", *argv])
    out, err = io.StringIO(), io.StringIO()
    return args.func(args, out, err), out.getvalue(), err.getvalue()


def test_without_a_daemon_the_tool_says_so_and_exits_1(tmp_path: Path) -> None:
    assert _run(["-s"], str(tmp_path)) == (1, "", "Could not initialize corosync configuration API error 2\n")
    rc, out, err = _run(["-R"], str(tmp_path))
    assert (rc, out) == (1, "Reloading corosync.conf...\n")
    assert err == "Could not initialize corosync configuration API error CS_ERR_LIBRARY\n"
    assert _run(["-k", "2"], str(tmp_path))[0] == 1


def test_node_ids_must_be_positive_numbers(tmp_path: Path) -> None:
    for bad in ("0", "x", "-3", str(2**32)):
        assert _run(["-a", bad], str(tmp_path)) == (1, "", "The nodeid was not valid, try a positive number\n")


def test_no_action_prints_the_usage_and_the_last_action_wins(tmp_path: Path) -> None:
    rc, out, _ = _run([], str(tmp_path))
    assert rc == 0 and out.startswith("corosync-cfgtool [[-i <interface ip>] [-b] -s]")
    assert _run(["-k", "2", "-a", "x"], str(tmp_path))[2] == "The nodeid was not valid, try a positive number\n"
