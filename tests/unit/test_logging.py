"""logsetup: corosync's logging keys, line layout, output routing, per-subsystem debug, reopen."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycorosync.engine.supervisor import logsetup
from pycorosync.engine.supervisor.logsetup import NOTICE, TRACE, LoggingConfig, configure


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


def setup(keys: dict[str, object]) -> io.StringIO:
    out = io.StringIO()
    configure({"logging.to_syslog": "no", **keys}, stderr=out, hostname="node1")
    return out


def test_line_layout_is_corosyncs_with_pycorosync_and_hires_timestamp() -> None:
    out = setup({})
    logging.getLogger("TOTEM").log(NOTICE, "A new membership (1.5) was formed. Members joined: 2")
    logging.getLogger("MAIN").warning("watch out")
    lines = out.getvalue().splitlines()
    pattern = r"^[A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d\.\d{3} \[\d+\] node1 pycorosync "
    assert re.match(pattern + r"notice  \[TOTEM \] A new membership \(1\.5\) was formed\. Members joined: 2$", lines[0])
    assert re.match(pattern + r"warning \[MAIN  \] watch out$", lines[1])


def test_timestamp_on_has_seconds_and_off_has_none() -> None:
    out = setup({"logging.timestamp": "on"})
    logging.getLogger("CPG").info("x")
    assert re.match(r"^[A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d \[\d+\] node1 pycorosync info    \[CPG   \] x$", out.getvalue())
    out = setup({"logging.timestamp": "off"})
    logging.getLogger("QUORUM").error("y")
    assert re.match(r"^\[\d+\] node1 pycorosync error   \[QUORUM\] y$", out.getvalue())


def test_fileline_and_function_name_show_where_the_message_comes_from() -> None:
    out = setup({"logging.timestamp": "off", "logging.fileline": "on", "logging.function_name": "on"})
    logging.getLogger("CMAP").info("z")
    assert re.search(r"\[CMAP  \] test_fileline_and_function_name_show_where_the_message_comes_from:test_logging\.py:\d+ z$", out.getvalue())


def test_debug_off_hides_debug_and_a_subsystem_override_shows_only_that_subsystems_debug() -> None:
    out = setup({"logging.logger_subsys.TOTEM.debug": "on"})
    logging.getLogger("TOTEM").debug("token held")
    logging.getLogger("CPG").debug("cpg detail")
    logging.getLogger("TOTEM").log(TRACE, "trace detail")
    text = out.getvalue()
    assert "debug   [TOTEM ] token held" in text
    assert "cpg detail" not in text
    assert "trace detail" not in text


def test_debug_trace_shows_trace_messages() -> None:
    out = setup({"logging.debug": "trace"})
    logging.getLogger("SYNC").log(TRACE, "deep")
    assert "trace   [SYNC  ] deep" in out.getvalue()


def test_logfile_gets_lines_and_stderr_none_when_only_to_logfile(tmp_path: Path) -> None:
    log = tmp_path / "corosync.log"
    out = setup({"logging.to_stderr": "no", "logging.to_logfile": "yes", "logging.logfile": str(log)})
    logging.getLogger("CFG").log(NOTICE, "to the file")
    assert out.getvalue() == ""
    assert "notice  [CFG   ] to the file" in log.read_text()


def test_logfile_priority_filters_lower_priorities(tmp_path: Path) -> None:
    log = tmp_path / "corosync.log"
    setup({"logging.to_stderr": "no", "logging.to_logfile": "yes", "logging.logfile": str(log), "logging.logfile_priority": "warning"})
    logging.getLogger("MAIN").info("chatter")
    logging.getLogger("MAIN").warning("matters")
    text = log.read_text()
    assert "chatter" not in text and "matters" in text


def test_per_subsystem_output_switch_routes_only_that_subsystem(tmp_path: Path) -> None:
    log = tmp_path / "corosync.log"
    out = setup({"logging.to_logfile": "yes", "logging.logfile": str(log), "logging.logger_subsys.VOTEQ.to_stderr": "no"})
    logging.getLogger("VOTEQ").info("votes")
    logging.getLogger("MAIN").info("main")
    assert "votes" not in out.getvalue() and "main" in out.getvalue()
    assert "votes" in log.read_text()


def test_reopen_after_rotation_writes_to_a_fresh_file(tmp_path: Path) -> None:
    log = tmp_path / "corosync.log"
    setup({"logging.to_stderr": "no", "logging.to_logfile": "yes", "logging.logfile": str(log)})
    logging.getLogger("MAIN").info("before")
    log.rename(tmp_path / "corosync.log.1")
    logsetup.reopen_log_files()
    logging.getLogger("MAIN").info("after")
    assert "after" in log.read_text() and "before" not in log.read_text()
    assert "before" in (tmp_path / "corosync.log.1").read_text()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("logging.timestamp", "sometimes", "logging.timestamp: expected off, on or hires, got 'sometimes'"),
        ("logging.to_stderr", "maybe", "logging.to_stderr: expected yes or no, got 'maybe'"),
        ("logging.logger_subsys.TOTEM.debug", "loud", "logging.logger_subsys.TOTEM.debug: expected off, on or trace"),
        ("logging.to_logfile", "yes", "logging.to_logfile is yes but logging.logfile is not set"),
        ("logging.colour", "on", "logging.colour: unknown logging key"),
        ("logging.syslog_facility", "nowhere", "logging.syslog_facility: unknown facility 'nowhere'"),
    ],
)
def test_bad_logging_values_are_rejected_naming_the_key(key: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        LoggingConfig.from_keys({key: value})


def test_typed_values_from_the_config_parser_are_accepted() -> None:
    config = LoggingConfig.from_keys({"logging.debug": ("STRING", "on"), "logging.timestamp": ("STRING", "off")})
    assert config.defaults.debug == "on" and config.timestamp == "off"


def test_child_gets_the_same_logging_keys_through_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = logsetup.child_env({"logging.timestamp": "off", "logging.to_syslog": "no", "totem.token": 3000})
    assert "totem.token" not in env[logsetup.LOGGING_ENV]
    monkeypatch.setenv(logsetup.LOGGING_ENV, env[logsetup.LOGGING_ENV])
    out = io.StringIO()
    logsetup.configure_from_env(stderr=out, hostname="node2")
    logging.getLogger("CPG").info("child line")
    assert re.match(r"^\[\d+\] node2 pycorosync info    \[CPG   \] child line$", out.getvalue())


def test_syslog_line_carries_subsystem_without_header(tmp_path: Path) -> None:
    import socket

    path = str(tmp_path / "log.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(5.0)
    try:
        configure({"logging.to_stderr": "no", "logging.syslog_facility": "local4"}, syslog_address=path)
        logging.getLogger("TOTEM").log(NOTICE, "via syslog")
        data = server.recv(4096).decode()
    finally:
        server.close()
    # <PRI> = facility local4 (20) * 8 + notice (5) = 165
    assert re.match(r"^<165>pycorosync\[\d+\]: \[TOTEM \] via syslog", data)


def test_every_logging_key_the_config_parser_accepts_is_accepted() -> None:
    from pycorosync.engine.config import parse

    text = """totem {
    version: 2
    cluster_name: c
}
logging {
    to_syslog: no
    to_logfile: no
    timestamp: on
    fileline: off
    function_name: off
    blackbox: off
    tags: x
    logfile_priority: warn
    syslog_facility: local3
    debug: off
    logger_subsys {
        subsys: TOTEM
        debug: on
        timestamp: hires
    }
}
nodelist {
    node {
        ring0_addr: 127.0.0.1
        nodeid: 1
    }
}
"""
    config = LoggingConfig.from_keys(parse(text).keys)
    assert config.subsys("TOTEM").debug == "on"
    assert config.defaults.logfile_priority == logging.WARNING
    assert config.syslog_facility == "local3"
