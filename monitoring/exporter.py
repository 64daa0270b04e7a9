"""The node's Prometheus exporter process: ``/metrics`` from the node's shared memory and services.

    python -m pycorosync.monitoring.exporter      # started by the supervisor when monitoring.prometheus is set

It listens on ``monitoring.prometheus`` (``ADDRESS:PORT``); ``$PYCOROSYNC_PROMETHEUS`` overrides the
address for one node (several nodes on one host share a config). The data path never imports this
module: a scrape reads shared memory (a copy of the stats table, totem's block, ring headers) and
the values the one-second tick cached (quorum service, psutil, totem's status file), so it costs the
data path nothing but those reads. The tick also samples totem's token counter ten times a second for
the token rotation histogram.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from typing import Any

log = logging.getLogger("MON")

ADDRESS_ENV = "PYCOROSYNC_PROMETHEUS"
TOKEN_SAMPLE_S = 0.1
SLOW_EVERY = 10  # token samples per slow refresh (1 s)
NICE = 10


def parse_address(text: str) -> tuple[str, int]:
    """``ADDRESS:PORT`` (``[::1]:9405`` for IPv6) -> (address, port); ValueError says what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"monitoring.prometheus must be ADDRESS:PORT (e.g. 127.0.0.1:9405), got {text!r}")
    return host.strip("[]"), int(port)


class Exporter:
    """An HTTP server with the node collector, and the sampling tick (``run`` until ``stop``).

    The server answers from the moment it is made; until ``run`` gets its reader a scrape is empty
    (so the process can say it is ready before it pays for numpy and the segment mappings)."""

    def __init__(self, address: str, port: int, reader: Any = None) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        self.reader = reader
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_LazyCollector(self))  # type: ignore[arg-type]
        result = start_http_server(port, address, registry=self.registry)
        self._server = result[0] if isinstance(result, tuple) else None
        self.port = port if self._server is None else int(self._server.server_address[1])
        self._stop = threading.Event()

    def run(self, reader: Any = None) -> None:
        """Samples until ``stop()``: the token counter every 100 ms, the slow sources every second."""
        if reader is not None:
            reader.refresh_slow()
            self.reader = reader
        n = 0
        while not self._stop.wait(TOKEN_SAMPLE_S):
            self.reader.sample_token()
            n += 1
            if n % SLOW_EVERY == 0:
                try:
                    self.reader.refresh_slow()
                except Exception:  # a source's surprise must not stop the exporter
                    log.exception("refreshing the node's slow sources failed")

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self.reader is not None:
            self.reader.close()


class _LazyCollector:
    """The node collector once the exporter has its reader; nothing before."""

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter
        self._collector: Any = None

    def collect(self) -> Any:
        reader = self.exporter.reader
        if reader is None:
            return []
        if self._collector is None:
            from pycorosync.monitoring.collector import NodeCollector

            self._collector = NodeCollector(reader.read)
        return self._collector.collect()

    def describe(self) -> Any:
        return []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pycorosync.monitoring.exporter")
    ap.parse_known_args(argv)  # --config/--nodeid/... are in $PYCOROSYNC_NODE too
    import os

    from pycorosync.engine.runtime.node import NodeInfo, setup_child

    setup_child()
    node = NodeInfo.from_env()
    from pycorosync.engine.config import ConfigError, load
    from pycorosync.engine.supervisor.child import notify_ready

    try:
        config = load(node.config)
    except (ConfigError, OSError) as exc:
        log.error("exporter: cannot read %s: %s", node.config, exc)
        return 1
    text = os.environ.get(ADDRESS_ENV) or str(config.get("monitoring.prometheus") or "off")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if text == "off":
        log.info("exporter: monitoring.prometheus is off; nothing to serve")
        notify_ready()
        stop.wait()
        return 0
    try:
        address, port = parse_address(text)
        exporter = Exporter(address, port)
    except (OSError, ValueError) as exc:
        log.error("exporter: cannot serve %s: %s", text, exc)
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: exporter.stop())
    if stop.is_set():
        exporter.close()
        return 0
    log.info("exporter of node %d serving http://%s/metrics", node.nodeid, text)
    notify_ready()
    # below the data path from here on: on a busy machine the node's own processes come first
    with contextlib.suppress(OSError):
        os.nice(NICE)
    try:
        from pycorosync.monitoring.sources import NodeReader, NodeSpec

        exporter.run(NodeReader(NodeSpec.from_node_info(node, config)))
    finally:
        exporter.close()
    return 0

if __name__ == "__main__":
    sys.exit(main())
