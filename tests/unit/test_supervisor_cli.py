"""``pycorosync daemon``: refusals that must say what is wrong before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycorosync.cli import main

CONF = """totem {
    version: 2
    cluster_name: c
}
logging {
    to_syslog: no
}
nodelist {
    node {
        ring0_addr: 127.0.0.1
        nodeid: 1
    }
}
"""


def test_daemon_with_a_nodeid_not_in_the_nodelist_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "corosync.conf"
    conf.write_text(CONF)
    assert main(["--run-dir", str(tmp_path / "run"), "daemon", "-c", str(conf), "-f", "--nodeid", "9"]) == 1
    assert "nodeid 9 is not in the nodelist" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_daemon_with_a_broken_config_reports_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "corosync.conf"
    conf.write_text("totem {\n    version: 2\n")
    assert main(["--run-dir", str(tmp_path / "run"), "daemon", "-c", str(conf), "-f"]) == 1
    assert f"{conf}:" in capsys.readouterr().err


def test_daemon_with_a_missing_config_file_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["daemon", "-c", str(tmp_path / "nope.conf"), "-f"]) == 1
    assert "nope.conf" in capsys.readouterr().err
