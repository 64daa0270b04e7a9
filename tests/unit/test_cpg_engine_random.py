"""Random scripts of joins, leaves, deaths, messages, crashes, restarts, partitions and merges on the
simulated cluster of test_cpg_engine: after every completed sync, every node of a ring holds the same
groups with the same members in the same order, equal to the processes that node's owners really have,
and every joined handle's last confchg lists exactly that membership."""

from __future__ import annotations

import random

import pytest

from pycorosync.ipc.errors import CsErrorCode
from pycorosync.services.cpg.engine import ConfchgEvent, CpdState
from tests.unit.test_cpg_engine import SimCluster

NODES = (1, 2, 3, 4)
GROUPS = (b"a", b"b", b"c")


def _check(sim: SimCluster, last_confchg: dict[tuple[int, int], ConfchgEvent], seed: int) -> None:
    for node in sim.nodes.values():
        if not node.alive:
            continue
        comp = [n for n in sim.component[node.nodeid] if sim.nodes[n].alive]
        views = sim.views(comp)
        assert all(v == views[0] for v in views), f"seed {seed}: views differ in ring {comp}: {views}"
        truth: dict[bytes, set[tuple[int, int]]] = {}
        for n in comp:
            for cpd in sim.nodes[n].engine.cpds.values():
                if cpd.state in (CpdState.JOIN_COMPLETED, CpdState.LEAVE_STARTED):
                    truth.setdefault(cpd.group, set()).add((n, cpd.pid))
        got = {g: set(m) for g, m in views[0].items()}
        assert got == truth, f"seed {seed}: ring {comp} believes {got}, processes are {truth}"
        for conn, cpd in node.engine.cpds.items():
            if cpd.state == CpdState.JOIN_COMPLETED:
                event = last_confchg[(node.nodeid, conn)]
                assert event.group == cpd.group
                assert [(a.nodeid, a.pid) for a in event.members] == list(views[0][cpd.group]), f"seed {seed}"


@pytest.mark.parametrize("seed", range(40))
def test_random_membership_scripts_keep_one_view_per_ring(seed: int) -> None:
    rng = random.Random(seed)
    SimCluster._trans_base = {}
    sim = SimCluster(NODES)
    pids = iter(range(1000, 100000))
    last_confchg: dict[tuple[int, int], ConfchgEvent] = {}

    def collect() -> None:
        for node in sim.nodes.values():
            for conn, events in list(node.events.items()):
                for e in events:
                    if isinstance(e, ConfchgEvent):
                        last_confchg[(node.nodeid, conn)] = e
                events.clear()

    for _step in range(60):
        alive = [n for n in NODES if sim.nodes[n].alive]
        action = rng.random()
        if action < 0.45 and alive:
            n = rng.choice(alive)
            eng = sim.nodes[n].engine
            choice = rng.random()
            conns = list(eng.cpds)
            if choice < 0.5 or not conns:
                conn = sim.connect(n, next(pids))
                assert eng.lib_join(conn, rng.choice(GROUPS)) in (CsErrorCode.CS_OK, CsErrorCode.CS_ERR_TRY_AGAIN)
            elif choice < 0.7:
                conn = rng.choice(conns)
                eng.lib_leave(conn, eng.cpds[conn].group)
            elif choice < 0.9:
                eng.lib_exit(rng.choice(conns))
            else:
                conn = rng.choice(conns)
                eng.lib_mcast(conn, 2, b"m")
            if rng.random() < 0.6:
                sim.pump()
        elif action < 0.55 and len(alive) > 1:
            victim = rng.choice(alive)
            sim.crash(victim)
            survivors = [n for n in alive if n != victim]
            sim.form([survivors])
        elif action < 0.65 and len(alive) < len(NODES):
            dead = [n for n in NODES if not sim.nodes[n].alive]
            n = rng.choice(dead)
            sim.restart(n)
            sim.form([[n]])
        else:
            rng.shuffle(alive)
            cut = rng.randrange(0, len(alive))
            parts = [sorted(alive[:cut]), sorted(alive[cut:])]
            parts = [part for part in parts if part]
            if rng.random() < 0.3 and len(parts) == 1:
                # a round cut short by another change before it completes
                sim.form(parts, complete=False)
                for n in parts[0]:
                    sim.nodes[n].engine.sync_process()
                if rng.random() < 0.5:
                    sim.pump()
                for n in parts[0]:
                    sim.nodes[n].engine.sync_abort()
            sim.form(parts)
        collect()
        if not any(sim.nodes[n].engine.sync_running for n in NODES if sim.nodes[n].alive):
            sim.pump()
            collect()
            _check(sim, last_confchg, seed)
