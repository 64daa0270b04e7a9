"""Where a node keeps its sockets and pid file (``system.run_dir``)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_RUN_DIR = "PYCOROSYNC_RUN_DIR"


def default_run_dir() -> Path:
    """``/run/pycorosync`` as root, else ``$XDG_RUNTIME_DIR/pycorosync`` (or a per-user /tmp folder)."""
    if os.geteuid() == 0:
        return Path("/run/pycorosync")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "pycorosync"
    return Path(f"/tmp/pycorosync-{os.geteuid()}")


def resolve_run_dir(cli_value: str | None = None, config_value: str | None = None) -> Path:
    """--run-dir, then $PYCOROSYNC_RUN_DIR, then system.run_dir from the config, then the default."""
    for value in (cli_value, os.environ.get(ENV_RUN_DIR), config_value):
        if value:
            return Path(value)
    return default_run_dir()
