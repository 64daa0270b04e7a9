"""Logging as corosync's ``logging { }`` section configures it, with corosync's line layout.

Logger names are corosync subsystems (``logging.getLogger("TOTEM")``; ``"TOTEM.srp"`` counts as TOTEM).
A line looks like corosync's, with our name in place of its own::

    Nov 25 12:00:00.123 [1234] node1 pycorosync notice  [TOTEM ] A new membership (1.5) was formed.

Keys (flat, as in cmap; the values may be plain or ``(type, value)`` pairs from the config parser):
``logging.to_stderr`` (yes), ``to_logfile`` (no), ``logfile``, ``to_syslog`` (yes), ``syslog_facility`` (daemon),
``syslog_priority`` (info), ``logfile_priority`` (info, also used for stderr), ``timestamp`` off|on|hires (hires),
``fileline`` (off), ``function_name`` (off), ``debug`` off|on|trace (off), and per subsystem
``logging.logger_subsys.<SUBSYS>.<key>`` for debug, the priorities and the three ``to_*`` switches.
``debug: on`` lowers that subsystem's threshold to debug on every output (``trace``: to trace).

Every process of a node calls ``configure()`` (the supervisor with the parsed keys, children with
``configure_from_env()``, which reads what ``child_env()`` put in their environment).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

NOTICE = 25
TRACE = 5
logging.addLevelName(NOTICE, "NOTICE")
logging.addLevelName(TRACE, "TRACE")

SUBSYSTEMS = (
    "TOTEM", "KNET", "MAIN", "SYNC", "CPG", "CMAP", "CFG", "QUORUM", "VOTEQ", "SERV", "QB", "STATS", "MON", "WD",
    "SAM", "IPC",
)  # fmt: skip
LOGGING_ENV = "PYCOROSYNC_LOGGING"
NODE_ENV = "PYCOROSYNC_NODE"  # engine.runtime.node's description of the node, read here for its config path
IDENT = "pycorosync"

PRIORITIES = {
    "emerg": logging.CRITICAL,
    "alert": logging.CRITICAL,
    "crit": logging.CRITICAL,
    "err": logging.ERROR,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "notice": NOTICE,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}
_BOOLS = {"yes": True, "on": True, "true": True, "1": True, "no": False, "off": False, "false": False, "0": False}
_PER_SUBSYS_KEYS = ("debug", "logfile_priority", "syslog_priority", "to_stderr", "to_logfile", "to_syslog")
_TOP_KEYS = (
    "to_stderr", "to_logfile", "logfile", "to_syslog", "syslog_facility", "syslog_priority", "logfile_priority",
    "timestamp", "fileline", "function_name", "debug", "blackbox", "tags",
)  # fmt: skip
# accepted but without effect: blackbox (no flight recorder), tags; inside logger_subsys the keys not in
# _PER_SUBSYS_KEYS (timestamp, fileline, logfile ...) are accepted and the global value applies


def _plain(value: object) -> object:
    """A config value without the parser's type tag: ``(ValueType.STRING, "on")`` -> ``"on"``."""
    if isinstance(value, tuple) and len(value) == 2:
        return value[1]
    return value


def _as_bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word not in _BOOLS:
        raise ValueError(f"{key}: expected yes or no, got {value!r}")
    return _BOOLS[word]


def _as_choice(key: str, value: object, choices: tuple[str, ...]) -> str:
    word = str(value).strip().lower()
    if word not in choices:
        raise ValueError(f"{key}: expected {', '.join(choices[:-1])} or {choices[-1]}, got {value!r}")
    return word


def _as_priority(key: str, value: object) -> int:
    return PRIORITIES[_as_choice(key, value, tuple(PRIORITIES))]


@dataclass(frozen=True)
class SubsysSettings:
    """The effective settings of one subsystem (the global ones, with its overrides applied)."""

    debug: str = "off"  # off | on | trace
    logfile_priority: int = logging.INFO
    syslog_priority: int = logging.INFO
    to_stderr: bool = True
    to_logfile: bool = False
    to_syslog: bool = True

    def threshold(self, output: str) -> int | None:
        """Lowest level this subsystem logs on ``output`` (stderr, logfile, syslog); None = not at all."""
        enabled = {"stderr": self.to_stderr, "logfile": self.to_logfile, "syslog": self.to_syslog}[output]
        if not enabled:
            return None
        level = self.syslog_priority if output == "syslog" else self.logfile_priority
        if self.debug == "trace":
            level = min(level, TRACE)
        elif self.debug == "on":
            level = min(level, logging.DEBUG)
        else:
            level = max(level, logging.INFO)  # debug messages need debug: on, whatever the priority says
        return level


@dataclass(frozen=True)
class LoggingConfig:
    """The ``logging`` section, validated."""

    defaults: SubsysSettings = field(default_factory=SubsysSettings)
    overrides: Mapping[str, SubsysSettings] = field(default_factory=dict, hash=False)
    logfile: str | None = None
    syslog_facility: str = "daemon"
    timestamp: str = "hires"  # off | on | hires
    fileline: bool = False
    function_name: bool = False

    @classmethod
    def from_keys(cls, keys: Mapping[str, object]) -> LoggingConfig:
        """Reads the ``logging.*`` keys; raises ValueError naming the key for a bad value."""
        get = {k: _plain(v) for k, v in keys.items() if k.startswith("logging.")}
        for key in get:
            rest = key[len("logging.") :]
            if rest.startswith("logger_subsys."):
                parts = rest.split(".")
                if len(parts) != 3 or parts[2] not in (*_TOP_KEYS, "subsys"):
                    raise ValueError(f"{key}: unknown logging key")
            elif rest not in _TOP_KEYS:
                raise ValueError(f"{key}: unknown logging key")

        def settings(prefix: str, base: SubsysSettings) -> SubsysSettings:
            def pick(name: str) -> object | None:
                return get.get(prefix + name)

            debug, lp, sp = pick("debug"), pick("logfile_priority"), pick("syslog_priority")
            te, tl, ts = pick("to_stderr"), pick("to_logfile"), pick("to_syslog")
            return SubsysSettings(
                debug=base.debug if debug is None else _as_choice(prefix + "debug", debug, ("off", "on", "trace")),
                logfile_priority=base.logfile_priority if lp is None else _as_priority(prefix + "logfile_priority", lp),
                syslog_priority=base.syslog_priority if sp is None else _as_priority(prefix + "syslog_priority", sp),
                to_stderr=base.to_stderr if te is None else _as_bool(prefix + "to_stderr", te),
                to_logfile=base.to_logfile if tl is None else _as_bool(prefix + "to_logfile", tl),
                to_syslog=base.to_syslog if ts is None else _as_bool(prefix + "to_syslog", ts),
            )

        defaults = settings("logging.", SubsysSettings())
        names = {k.split(".")[2] for k in get if k.startswith("logging.logger_subsys.")}
        overrides = {name.upper(): settings(f"logging.logger_subsys.{name}.", defaults) for name in sorted(names)}
        logfile = get.get("logging.logfile")
        wants_file = defaults.to_logfile or any(s.to_logfile for s in overrides.values())
        if wants_file and not logfile:
            raise ValueError("logging.to_logfile is yes but logging.logfile is not set")
        facility = str(get.get("logging.syslog_facility", "daemon")).lower()
        if facility not in logging.handlers.SysLogHandler.facility_names:
            raise ValueError(f"logging.syslog_facility: unknown facility {facility!r}")
        return cls(
            defaults=defaults,
            overrides=overrides,
            logfile=str(logfile) if logfile else None,
            syslog_facility=facility,
            timestamp=_as_choice("logging.timestamp", get.get("logging.timestamp", "hires"), ("off", "on", "hires")),
            fileline=_as_bool("logging.fileline", get.get("logging.fileline", "off")),
            function_name=_as_bool("logging.function_name", get.get("logging.function_name", "off")),
        )

    def subsys(self, name: str) -> SubsysSettings:
        return self.overrides.get(name, self.defaults)


def subsystem_of(logger_name: str) -> str:
    """``TOTEM.srp`` -> ``TOTEM``; a foreign library's logger keeps its own (upper-cased) first part."""
    return logger_name.split(".", 1)[0].upper()


def priority_name(levelno: int) -> str:
    """corosync's word for a level, as printed in a log line."""
    if levelno >= logging.CRITICAL:
        return "crit"
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    if levelno >= NOTICE:
        return "notice"
    if levelno >= logging.INFO:
        return "info"
    if levelno >= logging.DEBUG:
        return "debug"
    return "trace"


class CorosyncFormatter(logging.Formatter):
    """``<time> [<pid>] <host> pycorosync <prio>  [<SUBSYS>] [<func>:][<file>:<line> ]<message>``.

    With ``header=False`` (syslog, which adds time, host and ident itself) the line is ``[SUBSYS] message``.
    """

    def __init__(
        self, timestamp: str = "hires", fileline: bool = False, function_name: bool = False,
        hostname: str | None = None, header: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        self.timestamp = timestamp
        self.fileline = fileline
        self.function_name = function_name
        self.hostname = hostname or socket.gethostname()
        self.header = header

    def format(self, record: logging.LogRecord) -> str:
        where = ""
        if self.function_name:
            where += f"{record.funcName}:"
        if self.fileline:
            where += f"{record.filename}:{record.lineno}"
        if where:
            where = where.rstrip(":") + " "
        line = f"[{subsystem_of(record.name)[:6]:<6}] {where}{record.getMessage()}"
        if self.header:
            line = f"[{record.process}] {self.hostname} {IDENT} {priority_name(record.levelno):<7} {line}"
            if self.timestamp != "off":
                stamp = time.strftime("%b %d %H:%M:%S", time.localtime(record.created))
                if self.timestamp == "hires":
                    stamp += f".{int(record.msecs):03d}"
                line = f"{stamp} {line}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _OutputFilter(logging.Filter):
    """Passes a record when its level reaches its subsystem's threshold on this output."""

    def __init__(self, config: LoggingConfig, output: str) -> None:
        super().__init__()
        self.output = output
        self.default = config.defaults.threshold(output)
        self.by_subsys = {name: s.threshold(output) for name, s in config.overrides.items()}

    def filter(self, record: logging.LogRecord) -> bool:
        subsys = subsystem_of(record.name)
        threshold = self.by_subsys.get(subsys, self.default)
        if threshold is None:
            return False
        if subsys not in SUBSYSTEMS and subsys not in self.by_subsys:
            threshold = max(threshold, logging.INFO)  # foreign libraries' debug output is never ours to show
        return record.levelno >= threshold


class _SyslogHandler(logging.handlers.SysLogHandler):
    def mapPriority(self, levelName: str) -> str:
        word = {"CRITICAL": "critical", "ERROR": "error", "WARNING": "warning", "NOTICE": "notice", "INFO": "info"}
        return word.get(levelName, "debug")


class LogSetup:
    """The handlers one ``configure()`` installed on the root logger.

    With a ``config_path``, ``reopen`` (SIGHUP, ``cfgtool -L``, and after a config reload) first re-reads the
    file's ``logging.*`` keys and, when they changed, installs them (debug, to_stderr, to_logfile, logfile,
    logger_subsys.*) as corosync re-applies its logging section on reload.
    """

    def __init__(self, config: LoggingConfig, handlers: list[logging.Handler],
                 options: Mapping[str, Any] | None = None, config_path: str | None = None) -> None:
        self.config = config
        self.handlers = handlers
        self.options = dict(options or {})  # configure()'s keyword arguments, for a re-apply
        self.config_path = config_path

    def reopen(self) -> None:
        """Re-applies changed logging keys of ``config_path`` (if any), else reopens the log file (after
        logrotate moved it; ``cfgtool -L``)."""
        if _current is not None and _current is not self:  # a bound method kept from before a re-apply
            _current.reopen()
            return
        if self.config_path is not None and self.reapply():
            return
        for handler in self.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.acquire()
                try:
                    old = handler.setStream(handler._open())
                    if old is not None:
                        old.close()
                finally:
                    handler.release()

    def reapply(self) -> bool:
        """Reads ``config_path`` again and installs its logging keys if they differ; True when it did.
        A file that cannot be read or a bad value changes nothing (logged, the current settings stay)."""
        path = self.config_path
        if path is None:
            return False
        from pycorosync.engine.config import ConfigError

        try:
            config = LoggingConfig.from_keys(logging_keys_of(path))
        except (ConfigError, OSError, ValueError) as exc:
            logging.getLogger("MAIN").error("logging settings of %s not applied: %s", path, exc)
            return False
        if config == self.config:
            return False
        try:
            configure(config, config_path=path, **self.options)
        except ValueError as exc:  # e.g. the new log file cannot be opened: keep what worked
            configure(self.config, config_path=path, **self.options)
            logging.getLogger("MAIN").error("logging settings of %s not applied: %s", path, exc)
            return False
        logging.getLogger("MAIN").info("logging settings re-applied from %s", path)
        return True

    def close(self) -> None:
        root = logging.getLogger()
        for handler in self.handlers:
            root.removeHandler(handler)
            handler.close()
        self.handlers = []


def logging_keys_of(path: str) -> dict[str, object]:
    """The ``logging.*`` keys of the corosync.conf at ``path`` (raises ConfigError / OSError)."""
    from pycorosync.engine.config import load

    return {k: v for k, v in load(path).keys.items() if k.startswith("logging.")}


_current: LogSetup | None = None


def configure(
    keys: Mapping[str, object] | LoggingConfig,
    *,
    stderr: IO[str] | None = None,
    hostname: str | None = None,
    syslog_address: str = "/dev/log",
    config_path: str | None = None,
) -> LogSetup:
    """Installs logging per the ``logging.*`` keys (replacing an earlier ``configure``); raises ValueError.

    ``config_path``: the corosync.conf those keys came from; ``reopen`` re-applies its logging keys."""
    global _current
    config = keys if isinstance(keys, LoggingConfig) else LoggingConfig.from_keys(keys)
    root = logging.getLogger()
    if _current is not None:
        _current.close()
    for handler in list(root.handlers):  # e.g. the CLI's basicConfig: one layout per process
        root.removeHandler(handler)
    everything = [config.defaults, *config.overrides.values()]
    fmt = CorosyncFormatter(config.timestamp, config.fileline, config.function_name, hostname)
    handlers: list[logging.Handler] = []
    warnings: list[str] = []

    def add(handler: logging.Handler, output: str, formatter: logging.Formatter) -> None:
        handler.setFormatter(formatter)
        handler.addFilter(_OutputFilter(config, output))
        handlers.append(handler)

    if any(s.to_stderr for s in everything):
        add(logging.StreamHandler(stderr or sys.stderr), "stderr", fmt)
    if any(s.to_logfile for s in everything) and config.logfile:
        try:
            add(logging.FileHandler(config.logfile, encoding="utf-8"), "logfile", fmt)
        except OSError as exc:
            raise ValueError(f"logging.logfile: cannot open {config.logfile}: {exc.strerror}") from None
    if any(s.to_syslog for s in everything):
        facility = logging.handlers.SysLogHandler.facility_names[config.syslog_facility]
        try:
            syslog = _SyslogHandler(address=syslog_address, facility=facility)
            syslog.ident = f"{IDENT}[{os.getpid()}]: "
            add(syslog, "syslog", CorosyncFormatter(header=False, fileline=config.fileline))
        except OSError as exc:
            warnings.append(f"syslog unavailable at {syslog_address} ({exc.strerror}); not logging to syslog")
    for handler in handlers:
        root.addHandler(handler)
    # levels on the loggers let disabled debug calls cost one comparison
    root.setLevel(logging.INFO)
    for name in {*SUBSYSTEMS, *config.overrides}:
        levels = [t for out in ("stderr", "logfile", "syslog") if (t := config.subsys(name).threshold(out)) is not None]
        logging.getLogger(name).setLevel(min(levels) if levels else logging.CRITICAL + 1)
    options = {"stderr": stderr, "hostname": hostname, "syslog_address": syslog_address}
    _current = LogSetup(config, handlers, options, config_path)
    for text in warnings:
        logging.getLogger("MAIN").warning("%s", text)
    return _current


def forget_after_fork() -> None:
    """In a child forked from a configured process: drops the parent's handlers without closing them
    (their descriptors are not the child's), so that the child's own ``configure()`` starts afresh."""
    global _current
    _current = None
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)


def reopen_log_files() -> None:
    """Reopens this process's log file, if ``configure()`` opened one."""
    if _current is not None:
        _current.reopen()


def child_env(keys: Mapping[str, object]) -> dict[str, str]:
    """Environment that passes the ``logging.*`` keys to a child, for ``configure_from_env()``."""
    flat = {k: _plain(v) for k, v in keys.items() if k.startswith("logging.")}
    return {LOGGING_ENV: json.dumps(flat, default=str)}


def _reopen_in_thread(_signum: int, _frame: object) -> None:
    # the handler runs between two bytecodes of the main thread, maybe inside a handler's emit: reopening
    # here could swap the stream under that write; a thread waits for the handler's lock instead
    threading.Thread(target=_reopen_and_say, name="log-reopen", daemon=True).start()


def _reopen_and_say() -> None:
    reopen_log_files()
    if _current is not None and _current.config.logfile:
        logging.getLogger("MAIN").info("log file %s reopened", _current.config.logfile)


def reopen_on_signal(signum: int = signal.SIGHUP) -> bool:
    """Makes ``signum`` reopen this process's log file (what the supervisor forwards after ``cfgtool -L``
    or a SIGHUP); False when not called from the main thread (signals reach only that one)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(signum, _reopen_in_thread)
    return True


def configure_from_env(**kwargs: Any) -> LogSetup:
    """What a node process calls first: logging as its supervisor's config says (stderr only without one),
    and SIGHUP reopens the log file (the supervisor forwards its own SIGHUP to its ready children). Inside a
    node ($PYCOROSYNC_NODE names the config file) SIGHUP also re-applies the file's changed logging keys."""
    raw = os.environ.get(LOGGING_ENV)
    keys: dict[str, object] = {"logging.to_syslog": "no"}
    if raw:
        try:
            loaded = json.loads(raw)
            if isinstance(loaded, dict):
                keys = loaded
        except ValueError:
            pass
    kwargs.setdefault("config_path", _node_config_path())
    setup = configure(keys, **kwargs)
    reopen_on_signal(signal.SIGHUP)
    return setup


def _node_config_path() -> str | None:
    """The config file of the node this process belongs to ($PYCOROSYNC_NODE's ``config``), or None."""
    try:
        node = json.loads(os.environ.get(NODE_ENV, ""))
    except ValueError:
        return None
    path = node.get("config") if isinstance(node, dict) else None
    return str(path) if path else None
