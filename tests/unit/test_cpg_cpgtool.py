"""``pycorosync cpgtool``: corosync-cpgtool's layouts (the default one checked byte for byte against a real
corosync 3.1.7 capture), delimiter mode, name escaping, and the error line without a service."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from pycorosync.services.cpg.client import CpgIterationDescription
from pycorosync.services.cpg.cpgtool import escape_name, format_groups, run

# corosync-cpgtool on node 1 of a 3-node corosync 3.1.7 cluster while a 3-process group "bench" existed
REAL_COROSYNC_CPGTOOL = (
    b"Group Name\t       PID\t   Node ID\n"
    b"bench\n"
    b"\t\t     20010\t         1 (10.77.0.1)\n"
    b"\t\t     20011\t         3 (10.77.0.3)\n"
    b"\t\t     20008\t         2 (10.77.0.2)\n"
)
BENCH = [CpgIterationDescription(b"bench", 1, 20010), CpgIterationDescription(b"bench", 3, 20011),
         CpgIterationDescription(b"bench", 2, 20008)]
ADDRS = {1: ["10.77.0.1"], 2: ["10.77.0.2"], 3: ["10.77.0.3"]}


def test_default_layout_is_corosync_cpgtool_byte_for_byte() -> None:
    assert format_groups(BENCH, ADDRS) == REAL_COROSYNC_CPGTOOL


def test_group_name_printed_once_per_group_and_every_link_address_listed() -> None:
    items = [*BENCH[:1], CpgIterationDescription(b"other", 2, 5)]
    out = format_groups(items, {1: ["10.0.0.1", "10.1.0.1"], 2: []}).decode().splitlines()
    assert out[1:] == ["bench", "\t\t     20010\t         1 (10.0.0.1, 10.1.0.1)", "other", "\t\t         5\t         2"]


def test_delimiter_mode_prints_one_row_per_member() -> None:
    assert format_groups(BENCH[:2], ADDRS, ";") == b"GRP_NAME;PID;NODEID\nbench;20010;1\nbench;20011;3\n"


def test_unprintable_bytes_are_escaped_unless_raw() -> None:
    assert escape_name(b"a\x01b\xffc\\") == b"a\\x01b\\xFFc\\\\"
    assert escape_name(b"a\x01b", escape=False) == b"a\x01b"


def test_without_a_cpg_service_it_says_so_and_fails(tmp_path: Path, capsys: object) -> None:
    args = argparse.Namespace(run_dir=str(tmp_path), delimiter=None, raw=False, names_only=False)
    assert run(args, io.BytesIO()) == 1
    assert "Could not initialize corosync cpg API error 2" in capsys.readouterr().err  # type: ignore[attr-defined]
