"""Safety of votequorum under arbitrary splits, merges, failures and restarts (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from pycorosync.services.quorum.settings import QuorumSettings
from pycorosync.services.quorum.simcluster import SimCluster

NODES = 5
PARTITIONS = 3

event = st.one_of(
    st.tuples(st.just("move"), st.integers(0, PARTITIONS - 1), st.sets(st.integers(1, NODES), min_size=1)),
    st.tuples(st.just("join"), st.integers(0, PARTITIONS - 1), st.integers(0, PARTITIONS - 1)),
    st.tuples(st.just("down"), st.integers(1, NODES), st.just(0)),
    st.tuples(st.just("up"), st.integers(1, NODES), st.integers(0, PARTITIONS - 1)),
    st.tuples(st.just("sleep"), st.integers(0, 20000), st.just(0)),
)


def apply(sim: SimCluster, step: tuple[str, object, object]) -> None:
    kind, a, b = step
    if kind == "move":
        assert isinstance(a, int) and isinstance(b, set)
        sim.move(a, [nodeid for nodeid in sorted(b) if nodeid in sim.nodes])
        sim.update_all()
    elif kind == "join":
        assert isinstance(a, int) and isinstance(b, int)
        sim.join(a, b)
        sim.update_all()
    elif kind == "down" and a in sim.nodes:
        assert isinstance(a, int)
        sim.down(a)
    elif kind == "up" and a not in sim.nodes:
        assert isinstance(a, int) and isinstance(b, int)
        sim.up(a, b)
    elif kind == "sleep":
        assert isinstance(a, int)
        sim.advance(a)


def quorate_partitions(sim: SimCluster) -> set[int]:
    return {status.partition for status in sim.status() if status.quorate}


@settings(max_examples=150, deadline=None)
@given(st.lists(event, max_size=25), st.booleans())
def test_at_most_one_partition_is_quorate_without_two_node_or_last_man_standing(
    steps: list[tuple[str, object, object]], wait_for_all: bool
) -> None:
    sim = SimCluster(lambda nodeid: QuorumSettings.build(NODES, node_count=NODES, wait_for_all=wait_for_all))
    for nodeid in range(1, NODES + 1):
        sim.up(nodeid)
    for step in steps:
        apply(sim, step)
        assert len(quorate_partitions(sim)) <= 1, sim.status()


@settings(max_examples=100, deadline=None)
@given(st.lists(event, max_size=25))
def test_members_of_one_partition_agree_on_quorum(steps: list[tuple[str, object, object]]) -> None:
    sim = SimCluster(lambda nodeid: QuorumSettings.build(NODES, node_count=NODES, wait_for_all=True))
    for nodeid in range(1, NODES + 1):
        sim.up(nodeid)
    for step in steps:
        apply(sim, step)
        states: dict[int, set[bool]] = {}
        for status in sim.status():
            states.setdefault(status.partition, set()).add(status.quorate)
        assert all(len(values) == 1 for values in states.values()), sim.status()
