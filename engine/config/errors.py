"""The one exception a bad corosync.conf raises."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(Exception):
    """A corosync.conf that corosync would refuse, located as precisely as the mistake allows.

    ``str(error)`` is ready to print: ``corosync.conf:12: totem.token must be an integer in ms, got '3s'``
    (``corosync.conf: ...`` when no single line is to blame). ``reason`` is the message without location.
    """

    def __init__(self, reason: str, filename: str = "corosync.conf", line: int | None = None, key: str | None = None):
        self.reason = reason
        self.filename = filename
        self.line = line
        self.key = key
        where = f"{filename}:{line}" if line is not None else filename
        super().__init__(f"{where}: {reason}")
