"""SamSupervisor in this process, around real children: resource limits, a garbled command stream, decisions."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator

import pytest

from pycorosync.engine.supervisor.node import ChildSample
from pycorosync.engine.supervisor.policy import RestartPolicy
from pycorosync.services.sam import protocol as sp
from pycorosync.services.sam.resources import ResourceLimits
from pycorosync.services.sam.settings import SamSettings
from pycorosync.services.sam.supervisor import SamSupervisor


class BusySampler:
    """A sampler that reports ``cpu_percent`` for every child (a spinning child, on any machine load)."""

    def __init__(self, cpu_percent: float) -> None:
        self.cpu_percent = cpu_percent

    def sample(self, name: str, pid: int) -> ChildSample:
        return ChildSample(name, pid, self.cpu_percent, 10 << 20, 1, time.monotonic())

    def forget(self) -> None:
        pass


@pytest.fixture
def supervisors() -> Iterator[list[SamSupervisor]]:
    made: list[SamSupervisor] = []
    yield made
    for sup in made:
        sup.close()  # kills and reaps any child still alive


def make(made: list[SamSupervisor], raw: bool = True, **kw: object) -> SamSupervisor:
    sup = SamSupervisor(SamSettings(**kw), raw_heartbeats=raw, forward_stderr_fd=None)  # type: ignore[arg-type]
    made.append(sup)
    return sup


def test_a_cpu_sample_over_the_limit_is_a_failed_health_check_and_the_child_is_restarted(
    supervisors: list[SamSupervisor],
) -> None:
    sup = make(supervisors, limits=ResourceLimits(max_cpu_percent=50), sample_period_ms=50, kill_grace_ms=2000)
    sup._sampler = BusySampler(99.0)  # type: ignore[assignment]
    sup.next_instance()
    child = sup.spawn(["sleep", "60"])
    started = time.monotonic()
    end = sup.run_instance()
    assert end.restart and end.exit_code == 128 + signal.SIGTERM
    assert child.exit_status is not None and child.exit_status.signal == signal.SIGTERM
    assert time.monotonic() - started < 2.0
    assert sup.budget.total_restarts == 1


def test_a_cpu_sample_under_the_limit_changes_nothing(supervisors: list[SamSupervisor]) -> None:
    sup = make(supervisors, limits=ResourceLimits(max_cpu_percent=50), sample_period_ms=20)
    sup._sampler = BusySampler(10.0)  # type: ignore[assignment]
    sup.next_instance()
    child = sup.spawn(["sleep", "60"])
    sup.loop.run_until(lambda: False, 0.3)
    assert child.alive and sup.last_sample is not None and sup.last_sample.cpu_percent == 10.0


def test_garbage_on_the_command_pipe_is_counted_and_the_commands_around_it_still_work(
    supervisors: list[SamSupervisor],
) -> None:
    sup = make(supervisors, raw=False, restart_policy=RestartPolicy(3, 60, 0, 0))
    sup.next_instance()
    frames = b"\xff\xee" + sp.encode(sp.Command.START) + b"\x99" + sp.encode(sp.Command.DATA_STORE, b"kept")
    code = f"import os, time; os.write(int(os.environ['SAM_HC_FD']), {frames!r}); time.sleep(60)"
    child = sup.spawn([sys.executable, "-c", code])
    sup.loop.run_until(lambda: sup.malformed == 3 and sup.data == b"kept", 10)
    assert sup.malformed == 3 and sup.data == b"kept"
    child.send_signal(signal.SIGKILL)
    end = sup.run_instance()
    assert end.restart and sup.data == b"kept"  # the supervisor is unharmed and keeps supervising
