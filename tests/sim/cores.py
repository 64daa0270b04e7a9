"""Core factories for the simulator: the real Totem core with short simulation timers."""

from __future__ import annotations

from typing import Any

SIM_TOKEN_MS = 200


def sim_totem_config(node_count: int, token_ms: int = SIM_TOKEN_MS, **overrides: Any) -> Any:
    """Corosync's derived timers for a short token (no per-node coefficient, so the token stays token_ms)."""
    from pycorosync.engine.totem.config import TotemConfig

    return TotemConfig.defaults_for(token=token_ms, node_count=node_count, token_coefficient=0, **overrides)


def real_core_factory(node_count: int, token_ms: int = SIM_TOKEN_MS, **overrides: Any):  # type: ignore[no-untyped-def]
    """A CoreFactory for ``pycorosync.engine.totem.core.TotemCore`` with one shared sim config."""
    from pycorosync.engine.totem.core import TotemCore

    config = sim_totem_config(node_count, token_ms, **overrides)

    def make(node_id: int, nodelist: list[int], seed: int, ring_seq: int, incarnation: int) -> Any:
        core = TotemCore(config, node_id, nodelist, seed=seed, ring_seq=ring_seq, incarnation=incarnation)
        # as the totem process runs it on about half the nodes (whole frames as DeliverFrame), the core's
        # own way on the others: both must keep every guarantee, in one cluster
        core.frame_delivery = seed % 2 == 0
        return core

    make.config = config  # type: ignore[attr-defined]
    return make


def is_token_frame(data: bytes) -> bool:
    """An ORF token of the real wire format (magic 0xC5, type byte 0): what token-loss faults drop."""
    return len(data) > 2 and data[0] == 0xC5 and data[2] == 0


def make_factory(kind: str, node_count: int, **kwargs: Any):  # type: ignore[no-untyped-def]
    """'real' (the Totem core) or 'standin' (the test sequencer)."""
    if kind == "real":
        return real_core_factory(node_count, **kwargs)
    if kind == "standin":
        from tests.sim.standin import standin_factory

        return standin_factory(**kwargs)
    raise ValueError(f"unknown core kind {kind!r} (real, standin)")
