"""The node's CPU scheduling: corosync's ``system.sched_rr`` and ``system.priority`` (corosync.conf(5)).

With ``sched_rr: yes`` (the default) the supervisor asks for round-robin realtime scheduling at the
highest priority (``SCHED_RR`` 99) before it starts the node's processes, which inherit it: transport,
Totem and the service engines then run as soon as a frame, a token or a request wakes them, ahead of
ordinary processes, as corosync's one process does. When that is refused (not root, no RT budget) it
logs corosync's warning and falls back to the highest nice priority (-20), which needs the same rights,
so an unprivileged node ends up with a warning or two and its default scheduling. With ``sched_rr: no``,
``priority`` (a nice level -20..19, ``max`` = -20, ``min`` = 19) is set if given.

Without realtime scheduling the node's processes run ``SCHED_BATCH`` (pycorosync's ``system.sched_batch``,
default ``yes``; it needs no rights): the same share of the CPU as ``SCHED_OTHER`` at the same nice level,
but a process woken by a doorbell does not preempt the one that rang it. Every message crosses several
processes of a node (client, cpg, totem, transport); with wake-up preemption each ring of a doorbell on a
busy machine hands the CPU over at once, so each process wakes for a record or two. Without it the
ringing process finishes its batch first and the woken one finds a batch when it runs: on a 2-vCPU machine
with 3 nodes and their clients, ``bench/cpg.py`` measured 2 to 4 times fewer CPU microseconds per 64-byte
message. A wake-up then waits at most for the running process's time slice (milliseconds, against token
timeouts of a second or more); on an idle CPU it runs at once as before.

Children that are not part of the data path (the Prometheus exporter) are put back to ordinary
scheduling right after they start (``drop_realtime``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

_log = logging.getLogger("pycorosync.main")

NICE_MAX_PRIORITY = -20
NICE_MIN_PRIORITY = 19


@dataclass(frozen=True)
class Scheduling:
    """What the config asks for."""

    sched_rr: bool = True
    priority: int | None = None  # a nice level, or None: leave it
    batch: bool = True  # SCHED_BATCH when not realtime (``system.sched_batch``)

    @classmethod
    def from_keys(cls, keys: Mapping[str, object]) -> Scheduling:
        """From the node's config keys (``system.sched_rr``, ``system.priority``: corosync's defaults;
        ``system.sched_batch``: pycorosync's, default yes)."""
        sched_rr = str(keys.get("system.sched_rr", "yes")).lower() != "no"
        batch = str(keys.get("system.sched_batch", "yes")).lower() != "no"
        return cls(sched_rr, nice_level(keys.get("system.priority")), batch)


def nice_level(value: object) -> int | None:
    """``system.priority`` as a nice level: ``max`` -20, ``min`` 19, a number as is; None when unset."""
    if value is None or value == "":
        return None
    if value == "max":
        return NICE_MAX_PRIORITY
    if value == "min":
        return NICE_MIN_PRIORITY
    level = int(str(value))
    if not NICE_MAX_PRIORITY <= level <= NICE_MIN_PRIORITY:
        raise ValueError(f"system.priority {value!r} is not max, min or a nice level -20..19")
    return level


def apply(scheduling: Scheduling) -> str:
    """Sets this process's scheduling (its children inherit it); returns what is in force, for the log."""
    nice = scheduling.priority
    if scheduling.sched_rr:
        rr_priority = os.sched_get_priority_max(os.SCHED_RR)
        try:
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(rr_priority))
            return f"SCHED_RR at priority {rr_priority}"
        except OSError as exc:
            _log.warning("Could not set SCHED_RR at priority %d: %s (%d)", rr_priority, exc.strerror, exc.errno)
            nice = NICE_MAX_PRIORITY
    if nice is not None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError as exc:
            _log.warning("Could not set priority %d: %s (%d)", nice, exc.strerror, exc.errno)
    policy = "SCHED_OTHER"
    if scheduling.batch:
        try:  # keeps the nice level; an ordinary process may ask for it
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
            policy = "SCHED_BATCH"
        except OSError as exc:
            _log.warning("Could not set SCHED_BATCH: %s (%d)", exc.strerror, exc.errno)
    return f"{policy} at nice {os.getpriority(os.PRIO_PROCESS, 0)}"


def drop_realtime(pid: int) -> None:
    """Puts a child that inherited realtime scheduling back to SCHED_OTHER (nothing if it has none)."""
    try:
        if os.sched_getscheduler(pid) in (os.SCHED_RR, os.SCHED_FIFO):
            os.sched_setscheduler(pid, os.SCHED_OTHER, os.sched_param(0))
    except OSError as exc:  # it died already, or we may not: it keeps what it has
        _log.debug("could not put pid %d back to SCHED_OTHER: %s", pid, exc)
