"""The totem process's reload watch: a reload that ended re-reads the config file; cmap lost and back
means one quiet re-read; a file that does not load changes nothing."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pycorosync.engine.runtime.totem_reload import TOTEM_RELOAD_FLAG, ConfigReloadWatch

S = 1_000_000_000
CONF = """totem {{
    version: 2
    cluster_name: w
    token: {token}
}}
nodelist {{
    node {{
        ring0_addr: 127.0.0.1
        nodeid: 1
    }}
}}
"""


class FakeClient:
    """Stands for the cmap client: events queued by the test run from ``dispatch``."""

    def __init__(self, watch: ConfigReloadWatch) -> None:
        self.watch = watch
        self.events: list[Any] = []
        self.alive = True
        self.closed = False

    def fileno(self) -> int:
        return 99

    def dispatch(self) -> int:
        for event in self.events:
            self.watch._on_event(event)
        ran, self.events = len(self.events), []
        return ran

    def service_alive(self) -> bool:
        return self.alive

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def setup(tmp_path: Path) -> tuple[ConfigReloadWatch, list[tuple[int, bool]], list[FakeClient], Path]:
    conf = tmp_path / "corosync.conf"
    conf.write_text(CONF.format(token=1000))
    seen: list[tuple[int, bool]] = []
    clients: list[FakeClient] = []

    def on_reload(keys: Mapping[str, object], catch_up: bool) -> None:
        seen.append((int(keys["runtime.config.totem.token"]), catch_up))  # type: ignore[call-overload]

    def factory() -> FakeClient:
        if len(clients) == 1 and not clients[0].closed:
            raise AssertionError("connected twice")
        client = FakeClient(watch)
        clients.append(client)
        return client

    watch = ConfigReloadWatch(str(tmp_path), str(conf), 1, on_reload, client_factory=factory)
    return watch, seen, clients, conf


def flag(value: int) -> SimpleNamespace:
    return SimpleNamespace(key=TOTEM_RELOAD_FLAG, new_value=value)


def test_the_end_of_a_reload_rereads_the_file_with_the_start_up_derivation(setup: Any) -> None:
    watch, seen, clients, conf = setup
    watch.tick(0)
    assert watch.fileno() == 99 and seen == [(1000, True)]  # the re-read after connecting is a catch-up
    conf.write_text(CONF.format(token=2500))
    clients[0].events = [flag(1)]
    watch.on_readable()
    assert seen == [(1000, True)]  # still in progress
    clients[0].events = [flag(0)]
    watch.on_readable()
    assert seen == [(1000, True), (2500, False)]


def test_a_lost_cmap_is_reconnected_after_a_second_and_the_file_read_again(setup: Any) -> None:
    watch, seen, clients, conf = setup
    watch.tick(0)
    clients[0].alive = False
    watch.on_readable()
    assert clients[0].closed and watch.fileno() == -1
    conf.write_text(CONF.format(token=3000))
    watch.tick(S // 2)  # too early: one try per second
    assert len(clients) == 1
    watch.tick(2 * S)
    assert len(clients) == 2 and seen[-1] == (3000, True)


def test_a_file_that_does_not_load_changes_nothing(setup: Any) -> None:
    watch, seen, clients, conf = setup
    watch.tick(0)
    conf.write_text("totem { this is not a config")
    clients[0].events = [flag(0)]
    watch.on_readable()
    assert seen == [(1000, True)] and watch.fileno() == 99
