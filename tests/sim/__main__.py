"""``python -m tests.sim``: run seeded simulations and check the EVS guarantees.

    python -m tests.sim --seeds 1000 --faults all --json
    python -m tests.sim --seed 17 --nodes 4 --faults loss,crash     # replay one seed

Without --nodes each seed picks its own node count (2..6). Exit status 1 on any violation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from tests.sim.checker import distribution
from tests.sim.faults import FAULT_KINDS, parse_faults
from tests.sim.runner import PROFILES, RunPlan, run


def nodes_for_seed(seed: int) -> int:
    """The node count a seed uses when none is given: 2..6, spread over seeds."""
    return 2 + seed % 5


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=None, help="number of seeds to run (from --seed, default 0)")
    p.add_argument("--seed", type=int, default=None, help="first (or only) seed")
    p.add_argument("--nodes", type=int, default=None, help="cluster size 1..16 (default: per seed, 2..6)")
    p.add_argument("--faults", default="all", help="comma list of " + ",".join([*FAULT_KINDS, "all", "none"]))
    p.add_argument("--duration-ms", type=int, default=None, help="virtual length of the fault phase")
    p.add_argument("--profile", default="full", choices=sorted(PROFILES), help="phase lengths and client traffic")
    p.add_argument("--core", default="real", choices=("real", "standin"), help="core under test")
    p.add_argument("--json", action="store_true", help="print one JSON summary line")
    p.add_argument("--verbose", "-v", action="store_true", help="one line per seed")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        faults = parse_faults(args.faults)
    except ValueError as exc:
        print(f"python -m tests.sim: {exc}", file=sys.stderr)
        return 2
    if args.nodes is not None and not 1 <= args.nodes <= 16:
        print("python -m tests.sim: --nodes must be 1..16", file=sys.stderr)
        return 2
    first = args.seed if args.seed is not None else 0
    count = args.seeds if args.seeds is not None else 1
    t0 = time.monotonic()
    failed = 0
    violations = 0
    delivered = 0
    detect: list[float] = []
    for seed in range(first, first + count):
        plan = RunPlan(seed=seed, nodes=args.nodes or nodes_for_seed(seed), faults=faults,
                       duration_ms=args.duration_ms, profile=args.profile, core=args.core)
        result = run(plan)
        delivered += result.record.stats.delivered
        detect.extend(result.detect_ms)
        if not result.ok:
            failed += 1
            violations += len(result.violations)
            print(result.report(), file=sys.stderr if args.json else sys.stdout)
        elif args.verbose:
            st = result.record.stats
            print(f"seed {seed}: ok ({plan.nodes} nodes, {st.accepted} accepted, {st.delivered} delivered, "
                  f"{st.queue_full} QueueFull)")
    wall = time.monotonic() - t0
    summary = {"seeds": count, "violations": violations, "failed_seeds": failed, "sim_msgs_delivered": delivered,
               "wall_s": round(wall, 2), "seeds_per_s": round(count / wall, 2), "detect_ms": distribution(detect)}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{count} seed(s), {failed} with violations, {delivered} deliveries, {wall:.1f} s "
              f"({count / wall:.1f} seeds/s); crash detection ms {distribution(detect)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
