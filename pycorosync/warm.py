"""``pycorosync warm-cache``: compile every jitted entry point into the keyed numba cache.

Each module listed in JIT_MODULES defines ``warm() -> None`` that calls every one of its
``@njit(cache=True)`` entry points once with small arguments.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time

from pycorosync import jitcache

JIT_MODULES: list[str] = [
    # modules holding numba kernels; each must define warm()
]


def warm_all(verbose: bool = False) -> float:
    """Compiles (or loads) every kernel; returns the seconds it took."""
    t0 = time.monotonic()
    for name in JIT_MODULES:
        t1 = time.monotonic()
        mod = importlib.import_module(name)
        mod.warm()
        if verbose:
            print(f"warm-cache: {name} {time.monotonic() - t1:.2f}s")
    jitcache.mark_warm()
    return time.monotonic() - t0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("warm-cache", help="compile every numba kernel into the cache (run once after install)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    took = warm_all(verbose=args.verbose)
    print(f"numba cache warm in {os.environ['NUMBA_CACHE_DIR']} ({took:.1f}s)")
    return 0
