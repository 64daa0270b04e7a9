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
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("MON")

ADDRESS_ENV = "PYCOROSYNC_PROMETHEUS"
TOKEN_SAMPLE_S = 0.1
SLOW_EVERY = 10  # token samples per slow refresh (1 s)
NICE = 10
BIND_RETRY_S = 5.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def parse_address(text: str) -> tuple[str, int]:
    """``ADDRESS:PORT`` (``[::1]:9405`` for IPv6) -> (address, port); ValueError says what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"monitoring.prometheus must be ADDRESS:PORT (e.g. 127.0.0.1:9405), got {text!r}")
    return host.strip("[]"), int(port)


class Exporter:
    """An HTTP server answering ``GET /metrics`` from a reader, and the sampling tick (``run`` until ``stop``).

    The server answers from the moment it is made; until it has its reader a scrape is empty (so the
    process can say it is ready before it pays for numpy and the segment mappings). The text is
    written by ``collector.exposition`` (prometheus_client's generic writer costs several times more)."""

    def __init__(self, address: str, port: int, reader: Any = None) -> None:
        self.reader = reader
        self._last_collect_s: float | None = None
        self._lock = threading.Lock()
        self._server = _server_class(address)((address, port), _MetricsHandler)
        self._server.exporter = self  # type: ignore[attr-defined]
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.5,), daemon=True, name="http")
        self._thread.start()
        self._stop = threading.Event()

    def render(self) -> bytes:
        """One scrape's body (empty before the reader exists)."""
        reader = self.reader
        if reader is None:
            return b""
        from pycorosync.monitoring.collector import exposition

        with self._lock:  # one collection at a time; its duration is reported by the next one
            t0 = time.perf_counter()
            text = exposition(reader.read(), self._last_collect_s)
            self._last_collect_s = time.perf_counter() - t0
        return text.encode()

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
        self._server.shutdown()
        self._server.server_close()
        if self.reader is not None:
            self.reader.close()


class _MetricsHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] not in ("/metrics", "/"):
            self.send_error(404, "only /metrics is served here")
            return
        try:
            body = self.server.exporter.render()  # type: ignore[attr-defined]
        except Exception:  # a broken source must not kill the server; Prometheus sees the 500
            log.exception("collecting the node's metrics failed")
            self.send_error(500, "collection failed (see the exporter's log)")
            return
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape would drown the node's log


class _Server4(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server4):
    address_family = socket.AF_INET6


def _server_class(address: str) -> type[ThreadingHTTPServer]:
    return _Server6 if ":" in address else _Server4


def _bind(address: str, port: int, stop: threading.Event, notify_ready: Any) -> Exporter | None:
    """The exporter on ``address:port``; while the port is taken (or the address absent) it retries every
    ``BIND_RETRY_S`` having told the supervisor it is ready: the node runs on without its metrics. None
    once stopped."""
    logged = False
    while not stop.is_set():
        try:
            return Exporter(address, port)
        except OSError as exc:
            if not logged:
                logged = True
                log.error("exporter: cannot listen on %s port %d: %s; retrying every %g s", address, port,
                          exc.strerror or exc, BIND_RETRY_S)
                notify_ready()
            stop.wait(BIND_RETRY_S)
    return None


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
    except ValueError as exc:
        log.error("exporter: %s; not serving", exc)
        notify_ready()  # a monitoring mistake must not stop the node (the supervisor would give up on it)
        stop.wait()
        return 0
    exporter = _bind(address, port, stop, notify_ready)
    if exporter is None:
        return 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: exporter.stop())
    if stop.is_set():
        exporter.close()
        return 0
    log.info("exporter of node %d serving http://%s/metrics", node.nodeid, text)
    notify_ready()  # no-op if _bind already said it while retrying
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
    from pycorosync.engine.supervisor.child import exit_process

    exit_process(main())
