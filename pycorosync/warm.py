"""``pycorosync warm-cache``: compile every jitted entry point into the keyed numba cache.

Every package module that uses ``@njit`` defines ``warm() -> None``, which calls each of its
jitted entry points once with small arguments. They are found by reading the sources, so a new
kernel module needs no registration here.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time

from pycorosync import jitcache


def jit_modules() -> list[str]:
    """Dotted names of the package modules that define numba kernels (and so a warm() function)."""
    names = []
    for folder in jitcache._source_dirs():
        prefix = "pycorosync" if folder.name == "pycorosync" else f"pycorosync.{folder.name}"
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            text = path.read_text(errors="replace")
            if "@njit" not in text or "\ndef warm(" not in text:
                continue
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            names.append(".".join([prefix, *parts]))
    return names


def warm_all(verbose: bool = False, mark: bool = True) -> float:
    """Compiles (or loads) every kernel; returns the seconds it took. ``mark``: record the cache as warm."""
    t0 = time.monotonic()
    for name in jit_modules():
        t1 = time.monotonic()
        mod = importlib.import_module(name)
        mod.warm()
        if verbose:
            print(f"warm-cache: {name} {time.monotonic() - t1:.2f}s")
    if mark:
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
