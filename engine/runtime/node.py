"""A node's processes from its config: the service table, the node plan for the supervisor, and what a
child reads back from ``PYCOROSYNC_NODE`` (PROTOCOL.md §1).

    plan, resources = build_node(config_path, config, nodeid, run_dir, keys)   # in the supervisor
    node = NodeInfo.from_env()                                                  # in a child

Children start in dependency order: transport (and the exporter, which depends on nothing) -> totem ->
the services present in this build, all together (they need totem, not each other). A service module
that is not part of the build is skipped with a debug log; every node of a cluster must run the same
build (sync waits for every member's barrier of every service).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycorosync.engine.runtime.layout import NodeLayout

_log = logging.getLogger("MAIN")

NODE_ENV = "PYCOROSYNC_NODE"
#: an inherited read-write descriptor of the node segment (children map it rather than look the name up)
SEGMENT_FD_ENV = "PYCOROSYNC_NODE_SEGMENT_FD"
#: comma-separated names from ``TEST_SERVICES`` to run as well (tests only; never set in production)
TEST_SERVICES_ENV = "PYCOROSYNC_TEST_SERVICES"
#: "1": each service waits for the previous one to be ready (the start before services started together);
#: the baseline of bench/node_timings.py, never set in production
SERIAL_START_ENV = "PYCOROSYNC_SERIAL_START"
DEFAULT_RING_CAPACITY = 4 << 20
#: a child not ready by then is hung; the services start together, so on a busy 2-core machine each one
#: takes several times its 0.6 s alone (the bound is for hangs, not for speed)
READY_TIMEOUT_S = 60.0
#: children outside the data path: they do not keep the realtime scheduling they inherit (``system.sched_rr``)
OFF_DATA_PATH = frozenset({"exporter"})
#: rings of a service that must pass a 16 MiB message as one record (records are at most half a ring)
LARGE_RING_CAPACITY = 64 << 20


@dataclass(frozen=True)
class ServiceEntry:
    """One service of the node: corosync's service id, the module run as its process, and whether it has
    rings to totem (cluster traffic) and takes part in sync (PROTOCOL.md §4)."""

    name: str
    service_id: int
    module: str
    rings: bool = True
    sync: bool = True
    ring_capacity: int | None = None


SERVICES: tuple[ServiceEntry, ...] = (
    # cmap's sync carries the ring seq and each member's totem.config_version (runtime.members.*)
    ServiceEntry("cmap", 0, "pycorosync.services.cmap.service"),
    ServiceEntry("cfg", 1, "pycorosync.services.cfg.server", rings=True, sync=False),
    ServiceEntry("cpg", 2, "pycorosync.services.cpg.server", ring_capacity=LARGE_RING_CAPACITY),
    # quorum (3) also serves votequorum (5): one process, one socket quorum.sock, votequorum's cluster
    # messages travel as service 3's and its sync is quorum's
    ServiceEntry("quorum", 3, "pycorosync.services.quorum.server"),
)

#: the transport process of each ``totem.transport`` (same rings, doorbells and readiness protocol)
TRANSPORT_MODULES: dict[str, str] = {
    "udpu": "pycorosync.engine.runtime.transport_proc",
    "udp": "pycorosync.engine.runtime.transport_proc",
    "knet": "pycorosync.engine.runtime.transport_proc",
    "iba": "pycorosync.transports.iba.proc",
}

TEST_SERVICES: tuple[ServiceEntry, ...] = (
    ServiceEntry("testecho", 200, "pycorosync.engine.runtime.testservice", ring_capacity=LARGE_RING_CAPACITY),
)


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def service_table(test_services: Sequence[str] = ()) -> tuple[ServiceEntry, ...]:
    """The services of this build (plus the named test services), in service id order."""
    wanted = [e for e in TEST_SERVICES if e.name in test_services]
    unknown = set(test_services) - {e.name for e in TEST_SERVICES}
    if unknown:
        raise ValueError(f"unknown test service(s): {', '.join(sorted(unknown))}")
    found = []
    for entry in (*SERVICES, *wanted):
        if _available(entry.module):
            found.append(entry)
        else:
            _log.debug("service '%s' (%s) is not part of this build; the node runs without it", entry.name,
                       entry.module)
    return tuple(sorted(found, key=lambda e: e.service_id))


def entry_by_name(name: str) -> ServiceEntry:
    for entry in (*SERVICES, *TEST_SERVICES):
        if entry.name == name:
            return entry
    raise KeyError(f"no service named '{name}'")


def ring_services(entries: Sequence[ServiceEntry]) -> list[str]:
    """Names of the services that have rings to totem, in id order (the layout's service list)."""
    return [e.name for e in sorted(entries, key=lambda e: e.service_id) if e.rings]


def node_layout(services: Sequence[str], ring_capacity: int) -> NodeLayout:
    """The layout every process of a node computes from the same service list and capacity."""
    caps = {}
    for name in services:
        cap = entry_by_name(name).ring_capacity
        if cap is not None:
            caps[name] = cap
    return NodeLayout.compute(services, ring_capacity, caps)


@dataclass(frozen=True)
class NodeInfo:
    """What a child of the node learns from ``PYCOROSYNC_NODE``."""

    config: str
    nodeid: int
    cluster: str
    run_dir: str
    segment: str
    stats: str
    services: tuple[str, ...]
    bells: Mapping[str, int]
    ring_capacity: int
    ready_fd: int | None = None
    segment_fd: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> NodeInfo:
        """Parses ``PYCOROSYNC_NODE``; ValueError naming what is missing when run outside a node."""
        env = environ if environ is not None else os.environ
        raw = env.get(NODE_ENV)
        if not raw:
            raise ValueError(f"${NODE_ENV} is not set: this process is started by 'pycorosync daemon'")
        try:
            d = json.loads(raw)
            return cls(
                config=str(d["config"]), nodeid=int(d["nodeid"]), cluster=str(d["cluster"]),
                run_dir=str(d["run_dir"]), segment=str(d["segment"]), stats=str(d.get("stats", "")),
                services=tuple(str(s) for s in d["services"]),
                bells={str(k): int(v) for k, v in d["bells"].items()},
                ring_capacity=int(d.get("ring_capacity", DEFAULT_RING_CAPACITY)),
                ready_fd=None if d.get("ready_fd") is None else int(d["ready_fd"]),
                segment_fd=int(env[SEGMENT_FD_ENV]) if env.get(SEGMENT_FD_ENV) else None,
                extra={k: v for k, v in d.items() if k not in cls.__dataclass_fields__},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"${NODE_ENV} is malformed: {exc!r}") from None

    def layout(self) -> NodeLayout:
        return node_layout(self.services, self.ring_capacity)

    def attach(self, reset: Sequence[str] = ()) -> Any:
        """This node's ``NodeRings`` (through the inherited descriptor when there is one)."""
        return self.layout().attach(self.segment, reset, fd=self.segment_fd)


class NodeHandles:
    """What the supervisor keeps open for a node's lifetime: its ``NodeResources`` (doorbells) and the
    descriptor of the node segment every child inherits; ``close()`` at node stop."""

    def __init__(self, resources: Any, segment_fd: int) -> None:
        self.resources = resources
        self.segment_fd = segment_fd

    def close(self) -> None:
        self.resources.close()
        if self.segment_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.segment_fd)
            self.segment_fd = -1


def plain_keys(keys: Mapping[str, object]) -> dict[str, object]:
    """Config keys with their type tags dropped (``(ValueType, value)`` -> value)."""
    return {k: (v[1] if isinstance(v, tuple) and len(v) == 2 else v) for k, v in keys.items()}


def build_node(
    config_path: Path,
    nodeid: int,
    run_dir: Path,
    keys: Mapping[str, object],
    *,
    test_services: Sequence[str] | None = None,
    ring_capacity: int = DEFAULT_RING_CAPACITY,
) -> tuple[Any, Any]:
    """The supervisor's ``NodePlan`` for this node and its ``NodeHandles`` (doorbells, segment fd: close after).

    ``keys`` are the config's flat keys (plain values). Raises ValueError for an unsupported transport.
    """
    from pycorosync.engine.supervisor.node import NodePlan
    from pycorosync.engine.supervisor.plan import DEFAULT_POLICY
    from pycorosync.engine.supervisor.process import READY_FD_PLACEHOLDER, ChildSpec, RestartRule, python_module_argv
    from pycorosync.engine.supervisor.resources import NodeResources
    from pycorosync.engine.supervisor.shm import node_prefix

    transport = str(keys.get("totem.transport") or "udpu")
    if transport not in TRANSPORT_MODULES:
        raise ValueError(f"totem.transport '{transport}' is not supported by this build (udpu, udp, knet, iba)")
    if test_services is None:
        test_services = [s for s in os.environ.get(TEST_SERVICES_ENV, "").split(",") if s]
    services = service_table(test_services)
    cluster = str(keys.get("totem.cluster_name") or "cluster")
    prefix = node_prefix(cluster, nodeid)
    rows: list[tuple[str, str, RestartRule, tuple[str, ...]]] = [
        ("transport", TRANSPORT_MODULES[transport], RestartRule.IN_PLACE, ()),
        ("totem", "pycorosync.engine.runtime.totem_proc", RestartRule.NODE, ("transport",)),
    ]
    # services need totem, not each other: they start together once totem is ready
    rows += [(e.name, e.module, RestartRule.REJOIN, ("totem",)) for e in services]
    if os.environ.get(SERIAL_START_ENV) == "1":
        rows = [(n, m, r, d if i < 3 else (rows[i - 1][0],)) for i, (n, m, r, d) in enumerate(rows)]
    if keys.get("monitoring.prometheus") not in (None, "", "off") and _available("pycorosync.monitoring.exporter"):
        rows.append(("exporter", "pycorosync.monitoring.exporter", RestartRule.IN_PLACE, ()))
    with_rings = ring_services(services)
    layout = node_layout(with_rings, ring_capacity)
    resources = NodeResources.create(
        config=config_path.resolve(), nodeid=nodeid, cluster=cluster, run_dir=run_dir, shm_prefix=prefix,
        services=with_rings, processes=[r[0] for r in rows], ring_capacity=ring_capacity,
    )
    # a placeholder now, the segment once create_segments made it: the same fd number in every child
    segment_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    handles = NodeHandles(resources, segment_fd)
    env = {**resources.env(), SEGMENT_FD_ENV: str(segment_fd)}
    pass_fds = (*resources.pass_fds, segment_fd)
    specs = []
    for name, module, rule, deps in rows:
        argv = python_module_argv(
            module, "--config", str(config_path.resolve()), "--run-dir", str(run_dir), "--nodeid", str(nodeid),
            "--ready-fd", READY_FD_PLACEHOLDER,
        )
        specs.append(ChildSpec(name, argv, env=dict(env), restart=rule, depends_on=deps,
                               pass_fds=pass_fds, stop_timeout_s=5.0, ready_timeout_s=READY_TIMEOUT_S,
                               reload_signal=signal.SIGHUP, realtime=name not in OFF_DATA_PATH, fork=True))

    def create_segments() -> None:
        # the stats table (PROTOCOL.md §1), a slot per process named now; the supervisor does not record
        # each child's pid in its slot yet, so every slot shows the supervisor's (readers skip pid 0 only)
        from pycorosync.ipc.stats import StatsTable

        table = StatsTable.create(resources.stats_name, n_slots=len(rows) + 2)
        for slot, row in enumerate(rows):
            table.set_slot(slot, row[0], os.getpid())
        table.close()
        name = resources.segment_name
        for attempt in range(3):
            layout.create(name).close()
            try:
                fd = os.open(f"/dev/shm/{name.lstrip('/')}", os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                # someone removed the name between its creation and here (a careless sweep of /dev/shm):
                # make it again; once the fd is held, children no longer need the name
                _log.warning("node segment %s vanished right after its creation (attempt %d)", name, attempt + 1)
                continue
            try:
                os.dup2(fd, segment_fd, inheritable=False)
            finally:
                os.close(fd)
            return
        raise OSError(f"node segment {name} keeps vanishing right after its creation")

    # psutil samples every 5 s: one sample per child costs ~1 ms of the supervisor (an idle node stays quiet)
    plan = NodePlan(tuple(specs), shm_prefix=prefix, restart_policy=DEFAULT_POLICY, create_segments=create_segments,
                    sample_interval_s=5.0)
    return plan, handles


def setup_child() -> None:
    """What every node process does first: logging from the supervisor's config keys, death with the
    supervisor, the node's shared numba cache."""
    import logging as _logging
    import sys

    from pycorosync import jitcache
    from pycorosync.engine.supervisor import child, logsetup

    try:
        logsetup.configure_from_env()
    except ValueError:
        _logging.basicConfig(level=_logging.INFO, format="%(asctime)s [%(name)s] %(message)s", stream=sys.stderr)
    if child.child_name() is not None:
        child.die_with_supervisor()
    jitcache.configure()
