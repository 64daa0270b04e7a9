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


def test_daemon_t_checks_the_configuration_and_starts_nothing(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "corosync.conf"
    conf.write_text(CONF)
    run = tmp_path / "run"
    assert main(["--run-dir", str(run), "daemon", "-t", "-c", str(conf)]) == 0
    assert f"{conf}: configuration is valid (node 1, cluster 'c', transport udpu)" in capsys.readouterr().out
    assert not run.exists()  # nothing started, no run dir made


def test_daemon_t_reports_what_a_start_would_refuse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "corosync.conf"
    key = tmp_path / "missing-authkey"
    conf.write_text(CONF.replace("cluster_name: c", f"cluster_name: c\n    crypto_cipher: aes256\n"
                                                    f"    crypto_hash: sha256\n    keyfile: {key}"))
    assert main(["daemon", "-t", "-c", str(conf)]) == 1
    err = capsys.readouterr().err
    assert str(conf) in err and str(key) in err
    conf.write_text(CONF.replace("to_syslog: no", "to_syslog: no\n    syslog_priority: loud"))
    assert main(["daemon", "-t", "-c", str(conf)]) == 1
    assert "syslog_priority" in capsys.readouterr().err
    conf.write_text(CONF.replace("cluster_name: c", "cluster_name: c\n    netmtu: 200"))
    assert main(["daemon", "-t", "-c", str(conf)]) == 1
    assert "netmtu" in capsys.readouterr().err


def test_daemon_v_shows_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    from pycorosync import __version__

    assert main(["daemon", "-v"]) == 0
    out = capsys.readouterr().out
    assert f"version '{__version__}'" in out and "Available transports:" in out
