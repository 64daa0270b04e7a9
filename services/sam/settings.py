"""What a SAM supervisor enforces (``SamSettings``) and how one child instance ended (``InstanceEnd``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pycorosync.engine.supervisor.policy import RestartPolicy
from pycorosync.engine.supervisor.process import ExitStatus
from pycorosync.ipc.errors import CS_ERR_INVALID_PARAM, CsError
from pycorosync.services.sam import protocol as sp
from pycorosync.services.sam.resources import ResourceLimits

DEFAULT_GRACE_MS = 5000  # warn signal -> SIGKILL when there is no health-check interval to borrow


def default_restart_policy() -> RestartPolicy:
    """5 restarts within 60 s, each at once (corosync restarts without delay)."""
    return RestartPolicy(max_restarts=5, window_s=60.0, backoff_initial_s=0.0, backoff_max_s=0.0)


@dataclass(frozen=True)
class SamSettings:
    """What one SAM supervisor enforces.

    ``interval_ms``: health-check period (0 = none). ``recovery_policy``: corosync's value (QUIT or
    RESTART, with the QUORUM and CMAP flags). ``kill_grace_ms``: warn signal to SIGKILL (None = the
    interval, or 5 s). ``sample_period_ms``: psutil sampling and cmap resource keys.
    """

    interval_ms: int = 0
    recovery_policy: int = sp.SAM_RECOVERY_POLICY_RESTART
    restart_policy: RestartPolicy = field(default_factory=default_restart_policy)
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    kill_grace_ms: int | None = None
    sample_period_ms: int = 1000
    name: str = "sam-child"

    def __post_init__(self) -> None:
        if self.interval_ms < 0:
            raise CsError(CS_ERR_INVALID_PARAM, f"SAM time interval must be >= 0 ms, got {self.interval_ms}")
        if not sp.valid_policy(self.recovery_policy):
            raise CsError(CS_ERR_INVALID_PARAM, f"SAM recovery policy {self.recovery_policy:#x} is not valid")

    @property
    def quorum(self) -> bool:
        return bool(self.recovery_policy & sp.SAM_RECOVERY_POLICY_QUORUM)

    @property
    def cmap(self) -> bool:
        return bool(self.recovery_policy & sp.SAM_RECOVERY_POLICY_CMAP)

    @property
    def grace_s(self) -> float:
        ms = self.kill_grace_ms if self.kill_grace_ms is not None else (self.interval_ms or DEFAULT_GRACE_MS)
        return ms / 1000.0


@dataclass(frozen=True)
class InstanceEnd:
    """How one child instance ended and what comes next.

    ``restart``: start a new instance after ``delay_s``. Otherwise the supervisor exits with
    ``exit_code``; ``failed`` means it gives up after a failure (cmap state ``failed``, keys left).
    """

    restart: bool
    exit_code: int
    reason: str
    failed: bool = False
    delay_s: float = 0.0


def exit_code_of(status: ExitStatus) -> int:
    """The child's exit status, or 128 + N when signal N killed it (the shell's convention)."""
    return status.returncode if status.returncode >= 0 else 128 - status.returncode
