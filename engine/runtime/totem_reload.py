"""How the totem process learns of a config reload (``cfgtool -R``; COROSYNC.md §7.4, PROTOCOL.md §7).

The cmap service re-reads corosync.conf and raises ``config.totemconfig_reload_in_progress`` to 1, then
lowers it to 0 when icmap holds the new keys. The totem process tracks that key with a cmap client whose
socket sits in its epoll (never polled); when the flag goes back to 0 it reads the same file with the same
derivation rules as at start and hands the result to ``on_reload(keys, catch_up=False)``. cmap starts after totem and may be
restarted: the watch connects from the loop's 1 s tick, drops a lost connection, and after a reconnection
re-reads the file (``catch_up=True``: a reload it missed before tracking, or while cmap was away).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("TOTEM")

TOTEM_RELOAD_FLAG = "config.totemconfig_reload_in_progress"
RETRY_NS = 1_000_000_000
CMAP_TIMEOUT_S = 1.0  # one call to the local cmap service; a stuck service must not hold the token long


def config_keys(config_path: str, nodeid: int) -> dict[str, object]:
    """The plain keys of ``config_path`` for node ``nodeid`` as the totem process reads them at start."""
    from pycorosync.engine.config import load
    from pycorosync.engine.runtime.node import plain_keys

    config = load(config_path)
    return plain_keys(config.all_keys(config.local_node(nodeid)))


class ConfigReloadWatch:
    """Tracks cmap's totem reload flag; ``on_reload(keys, catch_up)`` runs once a reload ended (from
    ``on_readable``), and with ``catch_up=True`` after each connection (a reload before it went unseen).

    ``fileno()`` is the descriptor to put in the loop's epoll (-1 while not connected); ``tick(now_ns)``
    from the loop's periodic housekeeping (re)connects.
    """

    def __init__(self, run_dir: str, config_path: str, nodeid: int,
                 on_reload: Callable[[Mapping[str, object], bool], None],
                 client_factory: Callable[[], Any] | None = None) -> None:
        self.run_dir = run_dir
        self.config_path = config_path
        self.nodeid = nodeid
        self.on_reload = on_reload
        self.client: Any = None
        self.reloads = 0  # reloads applied (re-reads after a reconnection included)
        self._factory = client_factory or self._connect
        self._next_try_ns = 0
        self._connected_before = False
        self._ended = False
        self._catch_up = False
        self._said_down = False

    def _connect(self) -> Any:
        from pycorosync.cmap import CMAP_TRACK_MODIFY, CmapClient

        client = CmapClient(self.run_dir, timeout=CMAP_TIMEOUT_S, local_reads=False)
        try:
            client.track_add(TOTEM_RELOAD_FLAG, CMAP_TRACK_MODIFY, self._on_event)
        except BaseException:
            client.close()
            raise
        return client

    def _on_event(self, event: Any) -> None:
        if event.key == TOTEM_RELOAD_FLAG and event.new_value == 0:
            self._ended = True

    def fileno(self) -> int:
        return -1 if self.client is None else int(self.client.fileno())

    def tick(self, now_ns: int) -> None:
        """Connects to cmap when not connected (at most once per RETRY_NS)."""
        if self.client is not None or now_ns < self._next_try_ns:
            return
        self._next_try_ns = now_ns + RETRY_NS
        try:
            self.client = self._factory()
        except Exception as exc:  # CsError while cmap is not up yet, OSError
            if self._connected_before and not self._said_down:
                log.debug("config reload tracking: cmap not reachable (%s); retrying", exc)
                self._said_down = True
            return
        self._said_down = False
        self._connected_before = True
        self._ended = self._catch_up = True  # a reload may have ended before the tracker was in place
        self.handle_pending()

    def on_readable(self) -> None:
        """The cmap socket is readable: run the notifications; a gone service closes the client."""
        client = self.client
        if client is None:
            return
        try:
            client.dispatch()
            alive = client.service_alive()
        except Exception:  # CsError: the service went away
            alive = False
        if not alive:
            self.close()
        self.handle_pending()

    def handle_pending(self) -> None:
        """Re-reads the config file if a reload ended; a file that does not load changes nothing."""
        if not self._ended:
            return
        catch_up, self._ended, self._catch_up = self._catch_up, False, False
        from pycorosync.engine.config import ConfigError

        try:
            keys = config_keys(self.config_path, self.nodeid)
        except (ConfigError, OSError, ValueError) as exc:
            log.error("config reload: %s not applied to totem: %s", self.config_path, exc)
            return
        self.reloads += 1
        self.on_reload(keys, catch_up)

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


def signal_supervisor_reload(run_dir: str) -> bool:
    """SIGHUP to the node's supervisor: it reopens its logs and forwards SIGHUP to every ready child, whose
    handler re-applies the file's logging keys (logsetup). False when no supervisor was found."""
    from pycorosync.engine.supervisor.child import SUPERVISOR_PID_ENV
    from pycorosync.engine.supervisor.pidfile import PID_FILE_NAME

    candidates = [os.environ.get(SUPERVISOR_PID_ENV, "")]
    with contextlib.suppress(OSError):
        candidates.append(Path(run_dir, PID_FILE_NAME).read_text())
    for text in candidates:
        if text.strip().isdigit() and int(text) > 1:
            try:
                os.kill(int(text), signal.SIGHUP)
            except OSError as exc:
                log.error("config reload: cannot signal the supervisor (pid %s): %s", text.strip(), exc)
                return False
            return True
    return False
