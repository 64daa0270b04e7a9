"""After a config reload every node process re-applies the file's logging keys on SIGHUP's reopen path."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycorosync.engine.supervisor import logsetup

CONF = """totem {{
    version: 2
    cluster_name: reload
}}
nodelist {{
    node {{
        ring0_addr: 127.0.0.1
        nodeid: 1
    }}
}}
logging {{
    to_syslog: no
{logging}
}}
"""


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    if logsetup._current is not None:
        logsetup._current.close()
        logsetup._current = None
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name in logsetup.SUBSYSTEMS:
        logging.getLogger(name).setLevel(logging.NOTSET)


def write(path: Path, lines: str) -> None:
    path.write_text(CONF.format(logging=lines))


def test_reopen_applies_changed_debug_logfile_and_subsystem_keys_of_the_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "corosync.conf"
    write(conf, "    to_stderr: yes")
    out = io.StringIO()
    logsetup.configure(logsetup.logging_keys_of(str(conf)), stderr=out, hostname="n1", config_path=str(conf))
    logging.getLogger("TOTEM").debug("hidden before reload")
    logfile = tmp_path / "node.log"
    write(conf, f"    to_stderr: yes\n    to_logfile: yes\n    logfile: {logfile}\n    debug: on\n"
                "    logger_subsys {\n        subsys: CPG\n        debug: off\n    }")
    logsetup.reopen_log_files()
    logging.getLogger("TOTEM").debug("token seen")
    logging.getLogger("CPG").debug("cpg detail")
    assert "hidden before reload" not in out.getvalue()
    assert "token seen" in out.getvalue() and "token seen" in logfile.read_text()
    assert "cpg detail" not in out.getvalue()  # its logger_subsys keeps debug off
    assert "logging settings re-applied from" in out.getvalue()


def test_a_reopen_through_the_first_setup_still_follows_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "corosync.conf"
    write(conf, "    to_stderr: yes")
    out = io.StringIO()
    first = logsetup.configure(logsetup.logging_keys_of(str(conf)), stderr=out, config_path=str(conf))
    write(conf, "    to_stderr: yes\n    debug: on")
    first.reopen()  # the supervisor keeps this bound method
    write(conf, "    to_stderr: yes")
    first.reopen()
    logging.getLogger("TOTEM").debug("off again")
    assert "off again" not in out.getvalue()
    assert logsetup._current is not None and logsetup._current.config.defaults.debug == "off"


def test_a_bad_logging_value_in_the_file_keeps_the_settings_in_force(tmp_path: Path) -> None:
    conf = tmp_path / "corosync.conf"
    write(conf, "    to_stderr: yes")
    out = io.StringIO()
    logsetup.configure(logsetup.logging_keys_of(str(conf)), stderr=out, config_path=str(conf))
    write(conf, "    to_stderr: yes\n    to_logfile: yes")  # no logfile named
    logsetup.reopen_log_files()
    logging.getLogger("MAIN").info("still here")
    assert "logging settings of" in out.getvalue() and "still here" in out.getvalue()


def test_a_file_that_does_not_parse_only_reopens(tmp_path: Path) -> None:
    conf = tmp_path / "corosync.conf"
    write(conf, "    to_stderr: yes")
    out = io.StringIO()
    logsetup.configure(logsetup.logging_keys_of(str(conf)), stderr=out, config_path=str(conf))
    conf.write_text("logging { this is not a config")
    logsetup.reopen_log_files()
    logging.getLogger("MAIN").info("still here")
    assert "logging settings of" in out.getvalue() and "still here" in out.getvalue()
